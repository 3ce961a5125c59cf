"""Mean teacher: the EMA update, the consistency loss and its ramp, unlabelled clips in the
batches, saving and unwrapping, and the config rules around it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from sedweak.config import ConfigError, load_config
from sedweak.losses import MASKED

TINY = ["model.conv_filters=[4, 4]", "model.conv_pool_freq=[4, 4]", "model.conv_pool_time=[2, 2]",
        "model.rnn_units=[4]", "model.embedding_dim=8", "model.dropout_rate=0.0"]


def tiny_wrapped(ema_decay=0.9, consistency_weight=2.0, rampup_epochs=0.0):
    """A compiled MeanTeacher around a 2-block CRNN on (8 frames x 64 mels), 3 classes."""
    import keras

    from sedweak.models.crnn import build_crnn
    from sedweak.models.mean_teacher import wrap
    from sedweak.training.trainer import compile_model

    config = load_config(None, TINY + [f"train.mean_teacher.ema_decay={ema_decay}",
                                       f"train.mean_teacher.consistency_weight={consistency_weight}",
                                       f"train.mean_teacher.rampup_epochs={rampup_epochs}",
                                       "train.learning_rate_schedule=constant", "train.learning_rate=0.05"])
    keras.utils.set_random_seed(0)
    model = wrap(build_crnn(config.model, 3, 64, 8), config.train.mean_teacher, steps_per_epoch=4)
    compile_model(model, config, 4)
    return model


def batch(seed=0, masked_from=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(-40, 10, (4, 8, 64)).astype("float32")
    y = {"strong": (rng.random((4, 2, 3)) > 0.5).astype("float32"), "weak": (rng.random((4, 3)) > 0.5).astype("float32")}
    if masked_from is not None:
        y["strong"][masked_from:] = MASKED
        y["weak"][masked_from:] = MASKED
    return x, y


def test_consistency_ramp_values():
    """exp(-5 (1 - t)^2): exp(-5) at the start, exp(-1.25) half way, 1 from the end on."""
    from sedweak.models.mean_teacher import consistency_ramp

    values = [float(consistency_ramp(step, 10)) for step in (0, 5, 10, 30)]
    assert values == pytest.approx([math.exp(-5), math.exp(-1.25), 1.0, 1.0], rel=1e-6)
    assert float(consistency_ramp(3, 0)) == 1.0


def ema_check() -> float:
    """Largest gap between the teacher after 3 steps and the EMA worked out by hand:
    decay a_k = min(0.9, 1 - 1 / (k + 1)) at step k = 0, 1, 2 is 0, 1/2, 2/3, applied to the
    student's weights from before each step's update:
    t1 = s0; t2 = s0 / 2 + s1 / 2; t3 = 2/3 t2 + 1/3 s2."""
    model = tiny_wrapped(ema_decay=0.9)
    students = []
    for step in range(3):
        students.append([np.array(w) for w in model.student.get_weights()])
        x, y = batch(step, masked_from=2)
        model.train_on_batch(x, y)
    s0, s1, s2 = students
    expected = [2 / 3 * (a / 2 + b / 2) + c / 3 for a, b, c in zip(s0, s1, s2)]
    got = model.teacher.get_weights()
    assert float(np.asarray(model.step)) == 3.0
    assert any(float(np.abs(a - b).max()) > 1e-3 for a, b in zip(s2, s0))  # the student did move
    return max(float(np.abs(np.asarray(g, np.float64) - e).max()) for g, e in zip(got, expected))


def test_teacher_is_the_hand_computed_moving_average():
    assert ema_check() <= 1e-6


@pytest.mark.slow   # a JAX subprocess (~30 s); JAX training itself runs in tests/test_backends.py
@pytest.mark.skipif(__import__("importlib").util.find_spec("jax") is None, reason="jax not installed")
def test_teacher_is_the_moving_average_under_jax_too():
    """Under JAX the EMA is state returned by the compiled step (no callback could see it)."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["backend"] == "jax" and report["gap"] <= 1e-6


def test_loss_is_supervised_plus_weighted_consistency():
    """Training loss = compiled masked BCE + 2.0 * ramp * (MSE(strong) + MSE(weak)) between
    the student's outputs and the teacher's; at inference the consistency term is absent."""
    model = tiny_wrapped(consistency_weight=2.0, rampup_epochs=0.0)
    x, y = batch(1, masked_from=2)
    student = {k: np.asarray(v) for k, v in model.student(x, training=False).items()}
    teacher = {k: np.asarray(v) for k, v in model.teacher(x, training=False).items()}
    # make the two differ: nudge the teacher's strong head
    model.teacher.get_layer("strong").bias.assign(np.full((3,), 0.5, "float32"))
    teacher = {k: np.asarray(v) for k, v in model.teacher(x, training=False).items()}
    supervised = float(model.compute_loss(x, y, student, training=False))
    total = float(model.compute_loss(x, y, student, training=True))
    mse = sum(float(np.mean((student[k] - teacher[k]) ** 2)) for k in ("strong", "weak"))
    assert mse > 1e-4
    assert total == pytest.approx(supervised + 2.0 * mse, rel=1e-5)


def test_fully_unlabelled_clips_train_by_consistency_only():
    """A batch whose targets are all MASKED has zero supervised loss, yet the student moves."""
    model = tiny_wrapped(rampup_epochs=0.0)
    x, y = batch(2, masked_from=0)
    model.teacher.get_layer("strong").bias.assign(np.full((3,), 0.5, "float32"))
    before = [np.array(w) for w in model.student.trainable_weights]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs["strong_loss"] == 0.0 and logs["weak_loss"] == 0.0 and logs["consistency"] > 0
    assert any(float(np.abs(np.asarray(a) - b).max()) > 0 for a, b in zip(model.student.trainable_weights, before))


def test_saved_mean_teacher_loads_frozen_and_unwraps_to_a_plain_crnn(tmp_path):
    import keras

    from sedweak.models.mean_teacher import MeanTeacher, unwrap

    model = tiny_wrapped()
    x, y = batch(3, masked_from=3)
    model.train_on_batch(x, y)
    model.train_on_batch(*batch(4))
    model.save(tmp_path / "mt.keras")
    loaded = keras.saving.load_model(tmp_path / "mt.keras")
    assert isinstance(loaded, MeanTeacher) and float(np.asarray(loaded.step)) == 2.0
    # only the student trains: a deserialized teacher's sublayers stay frozen
    assert len(loaded.trainable_weights) == len(model.student.trainable_weights)
    for name in ("teacher", "student"):
        plain = unwrap(loaded, name)
        assert not isinstance(plain, MeanTeacher) and plain.name == "crnn"
        assert len(plain.trainable_weights) == len(model.student.trainable_weights)
        want = getattr(model, name)(x, training=False)
        got = plain(x, training=False)
        assert max(float(np.abs(np.asarray(got[k]) - np.asarray(want[k])).max()) for k in want) <= 1e-6
    assert np.abs(np.asarray(loaded(x)["strong"]) - np.asarray(model.teacher(x)["strong"])).max() <= 1e-6


def test_unlabelled_clips_join_every_batch_with_masked_targets():
    """Each batch = its labelled clips + unlabelled_per_batch unlabelled ones (drawn without
    replacement, seeded by (seed, epoch, batch)), whose strong and weak targets are MASKED."""
    from sedweak.training.batches import ClipBatches

    features = np.zeros((4, 8, 5), np.float32)
    unlabelled = np.arange(3 * 8 * 5, dtype=np.float32).reshape(3, 8, 5) + 1.0
    strong = np.ones((4, 2, 3), np.float32)
    weak = np.ones((4, 3), np.float32)
    batches = ClipBatches(features, strong, weak, batch_size=2, unlabelled=unlabelled, unlabelled_per_batch=2)
    x, y = batches[1]
    assert x.shape == (4, 8, 5) and not x[:2].any()
    rows = [int(r[0, 0] - 1) // 40 for r in x[2:]]
    assert len(set(rows)) == 2 and all(np.array_equal(x[2 + i], unlabelled[r]) for i, r in enumerate(rows))
    assert (y["strong"][:2] == 1).all() and (y["strong"][2:] == MASKED).all()
    assert (y["weak"][:2] == 1).all() and (y["weak"][2:] == MASKED).all()
    again, _ = batches[1]
    assert np.array_equal(again, x)
    with pytest.raises(ValueError, match="needs unlabelled clips"):
        ClipBatches(features, strong, weak, batch_size=2, unlabelled_per_batch=2)


def test_mixes_of_unlabelled_clips_stay_unlabelled():
    """Mixup and the mix augmentation: a target that is MASKED on either side stays MASKED."""
    from sedweak.training.batches import mixup
    from sedweak.training.targets import unite_targets

    rng = np.random.default_rng(0)
    x = rng.normal(-40, 5, (2, 4, 3)).astype("float32")
    strong = np.stack([np.ones((2, 2)), np.full((2, 2), MASKED)]).astype("float32")
    weak = np.array([[1.0, 0.0], [MASKED, MASKED]], np.float32)
    for seed in range(6):   # the permutation pairs clip 0 with itself or with the unlabelled clip
        _, mixed_strong, mixed_weak = mixup(np.random.default_rng(seed), x, strong, weak, alpha=0.5)
        assert (mixed_weak[1] == MASKED).all() and (mixed_strong[1] == MASKED).all()
        assert (mixed_weak[0] == MASKED).all() or np.allclose(mixed_weak[0], weak[0])
    assert np.array_equal(unite_targets(weak[0], weak[1]), [MASKED, MASKED])


def test_config_rules():
    with pytest.raises(ConfigError, match="mean teacher only"):
        load_config(None, ["data.synth.num_unlabelled_clips=4"])
    with pytest.raises(ConfigError, match="one device"):
        load_config(None, ["train.mean_teacher.enabled=true", "train.strategy=mirrored"])
    with pytest.raises(ConfigError, match="keep must be"):
        load_config(None, ["train.mean_teacher.keep=both"])
    with pytest.raises(ConfigError, match="ema_decay"):
        load_config(None, ["train.mean_teacher.ema_decay=1.0"])
    assert load_config(None, ["train.mean_teacher.enabled=true", "data.synth.num_unlabelled_clips=4"]
                       ).train.mean_teacher.enabled


if __name__ == "__main__":   # the JAX run of test_teacher_is_the_moving_average_under_jax_too
    import keras

    gap = ema_check()
    print(json.dumps({"backend": keras.backend.backend(), "gap": gap}))
