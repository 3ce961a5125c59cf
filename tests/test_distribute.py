"""train.strategy / train.mixed_precision: config, TF_CONFIG checks, float32 outputs, and
MirroredStrategy over 2 logical CPU devices against single-device training.

The 2-device comparison runs this file as a script in a fresh interpreter: logical devices
must be configured before TensorFlow initialises, which pytest's process did long ago.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sedweak.config import ConfigError, load_config
from sedweak.training.distribute import (
    DistributeError,
    check_strategy,
    dtype_policy,
    keep_float32,
    make_strategy,
    read_tf_config,
)

TWO_WORKERS = {"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 1}}
# Per-step losses and weights after STEPS Adam steps. Same maths, other summation order
# (two half-batch sums all-reduced vs one sum): float32 rounding, ~1e-7 relative per op,
# grows through the steps; 1e-5 leaves room for that and catches a wrong gradient scale
# (2x) or replicas that train on different weights (both give > 1e-3).
STEPS = 3
TOLERANCE = 1e-5


def test_config_takes_the_strategy_keys_and_rejects_unknown_strategies():
    config = load_config(None, ["train.strategy=mirrored", "train.devices=['/gpu:0', '/gpu:1']",
                                "train.mixed_precision=true"])
    assert (config.train.strategy, config.train.devices, config.train.mixed_precision) == (
        "mirrored", ("/gpu:0", "/gpu:1"), True)
    assert load_config().train.strategy == "default" and not load_config().train.mixed_precision
    with pytest.raises(ConfigError, match="train.strategy must be one of"):
        load_config(None, ["train.strategy=horovod"])


def test_strategies_name_the_backend_they_need():
    check_strategy("default", "jax")
    check_strategy("mirrored", "tensorflow")
    with pytest.raises(DistributeError, match="needs KERAS_BACKEND=tensorflow.*data_parallel"):
        check_strategy("mirrored", "jax")
    with pytest.raises(DistributeError, match="needs KERAS_BACKEND=tensorflow"):
        check_strategy("multiworker", "torch")
    with pytest.raises(DistributeError, match="needs KERAS_BACKEND=jax"):
        make_strategy("data_parallel")  # this process runs TensorFlow


@pytest.mark.parametrize("tf_config, message", [
    (None, "needs the TF_CONFIG environment variable"),
    ("{cluster: ", "not valid JSON"),
    (json.dumps({"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}), "non-empty list"),
    (json.dumps({"cluster": {"worker": ["host0"]}, "task": {"type": "worker", "index": 0}}), "'host:port'"),
    (json.dumps({"cluster": {"worker": ["h:1"]}, "task": {"type": "chief", "index": 0}}), "task.type"),
    (json.dumps({"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 2}}),
     r"task.index must be an integer in \[0, 2\)"),
])
def test_tf_config_problems_are_explained(tf_config, message):
    environ = {} if tf_config is None else {"TF_CONFIG": tf_config}
    with pytest.raises(DistributeError, match=message):
        read_tf_config(environ)


def test_a_valid_tf_config_is_returned_and_multiworker_checks_it_first(monkeypatch):
    assert read_tf_config({"TF_CONFIG": json.dumps(TWO_WORKERS)}) == TWO_WORKERS
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(DistributeError, match="TF_CONFIG"):
        make_strategy("multiworker")


def test_mixed_precision_keeps_input_norm_and_outputs_float32():
    import keras

    from sedweak.models.crnn import build_crnn

    config = load_config(None, ["model.conv_filters=[4]", "model.conv_pool_freq=[8]", "model.conv_pool_time=[1]",
                                "model.rnn_units=[4]", "model.embedding_dim=4"])
    with dtype_policy(True) as policy:
        model = build_crnn(config.model, 3, n_mels=16, num_frames=20)
    assert policy == "mixed_bfloat16"  # no GPU here
    assert keras.config.dtype_policy().name == "float32"  # restored for everything else
    assert sorted(keep_float32(model)) == ["embedding", "embedding_dense", "input_norm", "strong", "weak"]
    assert model.get_layer("conv_block_0").conv.compute_dtype == "bfloat16"
    outputs = model.predict_on_batch(np.random.default_rng(0).normal(size=(2, 20, 16)).astype("float32"))
    assert {k: str(v.dtype) for k, v in outputs.items()} == {"strong": "float32", "weak": "float32",
                                                             "embedding": "float32"}
    with dtype_policy(False) as policy:
        assert policy == "float32"


def _run_script(*args: str, env: dict | None = None) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow   # the default suite keeps test_mirrored_splits_each_batch_over_the_replicas
def test_mirrored_over_two_cpu_devices_matches_single_device_training():
    """Each global batch of 4 is [a, b, a, b]: each replica gets [a, b], so its (unsynchronised)
    BatchNorm statistics equal the global batch's and the maths is the single-device maths."""
    result = _run_script("compare", "repeated_halves")
    assert result["replicas"] == 2 and result["devices"] == 2
    assert result["max_loss_rel_diff"] < TOLERANCE, result
    assert result["max_weight_diff"] < TOLERANCE, result
    assert result["weights_moved"] > 100 * TOLERANCE  # the comparison is not of untrained weights


def test_mirrored_splits_each_batch_over_the_replicas():
    """With 4 different clips per batch each replica normalises its own 2 clips: the result
    must differ from single-device training -- it would not if each replica saw all 4."""
    result = _run_script("compare", "distinct")
    assert result["replicas"] == 2
    assert result["max_weight_diff"] > 100 * TOLERANCE, result


@pytest.mark.slow   # 45 s; the default suite trains under JAX in tests/test_backends.py
def test_jax_data_parallel_over_two_cpu_devices_matches_single_device_training():
    """keras.distribution.DataParallel shards each batch but computes one SPMD program:
    BatchNorm sees the global batch, so even distinct clips give single-device numbers."""
    import importlib.util
    import os

    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (pip install -e .[test] brings it)")
    result = _run_script("compare", "distinct", env={
        **os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert result["replicas"] == 2 and result["devices"] == 2
    assert result["max_loss_rel_diff"] < TOLERANCE and result["max_weight_diff"] < TOLERANCE, result


# ----------------------------------------------------------------------------- subprocess side


def _clips(kind: str, clips: int = 12, frames: int = 100, n_mels: int = 64, classes: int = 3):
    rng = np.random.default_rng(0)
    features = rng.normal(-40.0, 12.0, size=(clips, frames, n_mels)).astype("float32")
    strong = (rng.random((clips, frames // 2, classes)) < 0.3).astype("float32")
    if kind == "repeated_halves":  # rows [a, b, a, b] in every batch of 4
        for start in range(0, clips, 4):
            features[start + 2:start + 4] = features[start:start + 2]
            strong[start + 2:start + 4] = strong[start:start + 2]
    return features, strong, strong.max(axis=1)


def _train(strategy: str, kind: str, workdir: Path):
    """(per-step losses, final trainable weights, initial weights, replicas) of STEPS steps."""
    import keras

    from sedweak.models.saving import ModelInfo
    from sedweak.training.batches import ClipBatches
    from sedweak.training.distribute import replicas, training_scope
    from sedweak.training import model_for_run, model_info, seed_everything

    config = load_config(None, ["model.conv_filters=[4, 4]", "model.conv_pool_freq=[8, 8]",
                                "model.conv_pool_time=[2, 1]", "model.rnn_units=[4]", "model.embedding_dim=4",
                                "model.dropout_rate=0.0", "data.clip_seconds=1.0", "train.batch_size=4",
                                f"train.strategy={strategy}", "train.learning_rate_schedule=constant"])
    features, strong, weak = _clips(kind)
    info: ModelInfo = model_info(config, ("a", "b", "c"))
    losses: list[float] = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: losses.append(logs["loss"]))
    seed_everything(0)
    devices = ("/cpu:0", "/cpu:1") if strategy == "mirrored" else ()  # data_parallel: every JAX device
    with training_scope(strategy, devices) as placement:
        model, _ = model_for_run(config, info, workdir / strategy / kind, resume=False, steps_per_epoch=STEPS)
        initial = [np.array(w) for w in model.trainable_weights]
        model.fit(ClipBatches(features, strong, weak, 4, info.time_pooling), epochs=1, steps_per_epoch=STEPS,
                  callbacks=[record], shuffle=False, verbose=0)  # Keras would reorder batches
    return np.array(losses), [np.array(w) for w in model.trainable_weights], initial, replicas(placement)


def _compare(kind: str) -> dict:
    """Single-device vs 2-replica training: mirrored under TensorFlow, data_parallel under JAX."""
    import tempfile

    import keras

    if keras.backend.backend() == "jax":
        import jax

        strategy, devices = "data_parallel", len(jax.devices())
    else:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy, devices = "mirrored", len(tf.config.list_logical_devices("CPU"))
    with tempfile.TemporaryDirectory() as tmp:
        one_loss, one_weights, initial, _ = _train("default", kind, Path(tmp))
        two_loss, two_weights, _, replicas = _train(strategy, kind, Path(tmp))
    return {"replicas": replicas, "devices": devices,
            "losses_single": one_loss.tolist(), "losses_mirrored": two_loss.tolist(),
            "max_loss_rel_diff": float(np.max(np.abs(one_loss - two_loss) / np.abs(one_loss))),
            "max_weight_diff": float(max(np.max(np.abs(a - b)) for a, b in zip(one_weights, two_weights))),
            "weights_moved": float(max(np.max(np.abs(a - b)) for a, b in zip(one_weights, initial)))}


if __name__ == "__main__":
    if sys.argv[1] == "compare":
        print(json.dumps(_compare(sys.argv[2])))
