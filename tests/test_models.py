"""CRNN, its layers and the masked loss: shapes, golden values, config/save round trips, one
training run on a fixed batch."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from sedweak.models.saving import ModelInfo, load_model, save_model, sidecar_path
from sedweak.config import FeatureConfig, ModelConfig, PostprocessConfig
from sedweak.losses import MASKED, MaskedBinaryCrossentropy, strong_weak_losses
from sedweak.models.crnn import OUTPUT_KEYS, build_crnn
from sedweak.models.layers import ConvBlock, L2Normalize, WeakPooling
from sedweak.config import PRESETS, get_preset

TINY = ModelConfig(preset="tiny", conv_filters=(4, 4, 4), conv_pool_freq=(4, 4, 4),
                   conv_pool_time=(2, 2, 1), dropout_rate=0.0, rnn_units=(4,), embedding_dim=8)


def _count(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


# ----------------------------------------------------------------------------- CRNN


@pytest.mark.parametrize("preset, frames_out", [("fast", 250), ("adavanne", 1000), ("adavanne_edge", 250)])
def test_preset_output_shapes(preset, frames_out):
    config = get_preset(preset)
    model = build_crnn(config, num_classes=5, n_mels=64, num_frames=1000)
    x = np.random.default_rng(0).normal(-40, 10, (2, 1000, 64)).astype(np.float32)
    out = model.predict_on_batch(x)
    assert tuple(sorted(out)) == tuple(sorted(OUTPUT_KEYS))
    assert out["strong"].shape == (2, frames_out, 5)
    assert out["weak"].shape == (2, 5)
    assert out["embedding"].shape == (2, config.embedding_dim)
    assert 1000 // config.time_pooling == frames_out
    for key in ("strong", "weak"):
        assert np.all((out[key] >= 0) & (out[key] <= 1))
    np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=1), 1.0, atol=1e-5)


def test_adavanne_weight_count_is_pinned():
    model = build_crnn(get_preset("adavanne"), num_classes=17, n_mels=64, num_frames=1000)
    without_embedding = [w for w in model.trainable_weights if not w.path.startswith("embedding_dense")]
    assert _count(without_embedding) == 226001
    # embedding head: 2 * 64 GRU features -> 64
    assert _count(model.trainable_weights) - 226001 == 128 * 64 + 64
    edge = build_crnn(get_preset("adavanne_edge"), num_classes=17, n_mels=64, num_frames=1000)
    assert _count(edge.trainable_weights) == _count(model.trainable_weights)    # time pooling has no weights


def test_any_length_model_and_errors():
    model = build_crnn(TINY, num_classes=3, n_mels=64)  # num_frames=None
    for frames in (40, 72):
        assert model.predict_on_batch(np.zeros((1, frames, 64), np.float32))["strong"].shape == (1, frames // 4, 3)
    with pytest.raises(ValueError, match="num_classes"):
        build_crnn(TINY, num_classes=0)
    with pytest.raises(ValueError, match="pools 16 mel bands to nothing"):
        build_crnn(TINY, num_classes=2, n_mels=16)
    assert set(PRESETS) >= {"fast", "adavanne", "adavanne_edge"}
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("nope")


# ----------------------------------------------------------------------------- layers


def _probs():
    # (batch=1, frames=4, classes=3)
    return np.array([[[0.2, 1.0, 0.0],
                      [0.4, 0.0, 0.0],
                      [0.6, 0.0, 0.0],
                      [0.8, 0.0, 0.0]]], np.float32)


@pytest.mark.parametrize("mode, expected", [
    ("max", [0.8, 1.0, 0.0]),
    ("mean", [0.5, 0.25, 0.0]),
    # sum p^2 / sum p: (0.04 + 0.16 + 0.36 + 0.64) / 2.0 = 0.6; 1 / 1 = 1; 0 / eps = 0
    ("linear_softmax", [0.6, 1.0, 0.0]),
])
def test_weak_pooling_golden(mode, expected):
    features = np.ones((1, 4, 5), np.float32)
    out = WeakPooling(mode, 3)([_probs(), features])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), [expected], atol=1e-6)


def test_weak_pooling_attention_with_equal_logits_is_mean():
    layer = WeakPooling("attention", 3)
    features = np.random.default_rng(0).normal(size=(1, 4, 5)).astype(np.float32)
    layer([_probs(), features])  # build
    kernel, bias = layer.attention.get_weights()
    layer.attention.set_weights([np.zeros_like(kernel), np.zeros_like(bias)])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer([_probs(), features])),
                               [[0.5, 0.25, 0.0]], atol=1e-6)
    # A logit that favours frame 3 of class 0 pulls the clip probability towards 0.8.
    k = np.zeros_like(kernel)
    k[0, 0] = 50.0
    feats = np.zeros((1, 4, 5), np.float32)
    feats[0, 3, 0] = 1.0
    layer.attention.set_weights([k, np.zeros_like(bias)])
    assert keras.ops.convert_to_numpy(layer([_probs(), feats]))[0, 0] == pytest.approx(0.8, abs=1e-5)


def test_weak_pooling_rejects_unknown_mode():
    with pytest.raises(ValueError, match="pooling mode"):
        WeakPooling("median", 2)


def test_l2_normalize_golden():
    out = keras.ops.convert_to_numpy(L2Normalize()(np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], atol=1e-6)


def _round_trip(layer, inputs):
    """from_config(get_config()) gives the same config and, with copied weights, the same output."""
    out = keras.ops.convert_to_numpy(layer(inputs))
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone_out = clone(inputs)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(inputs)), out, atol=1e-6)
    assert clone_out.shape == out.shape
    return clone


@pytest.mark.parametrize("activation", ["relu", "glu"])
def test_conv_block_config_round_trip_and_shape(activation):
    layer = ConvBlock(3, kernel_size=3, pool_time=2, pool_freq=4, activation=activation,
                      dropout_rate=0.1, name="cb")
    x = np.random.default_rng(0).normal(size=(2, 8, 16, 1)).astype(np.float32)
    clone = _round_trip(layer, x)
    assert layer(x).shape == (2, 4, 4, 3)
    assert layer.compute_output_shape((2, 8, 16, 1)) == (2, 4, 4, 3)
    # GLU needs twice the conv filters: half linear, half gate.
    assert clone.conv.filters == (6 if activation == "glu" else 3)
    config = layer.get_config()
    assert {k: config[k] for k in ("filters", "kernel_size", "pool_time", "pool_freq", "activation",
                                   "dropout_rate")} == dict(filters=3, kernel_size=3, pool_time=2,
                                                            pool_freq=4, activation=activation, dropout_rate=0.1)


def test_conv_block_rejects_unknown_activation():
    with pytest.raises(ValueError, match=r"activation must be one of \('relu', 'glu'\), got 'tanh'"):
        ConvBlock(4, activation="tanh")


@pytest.mark.parametrize("mode", ["max", "mean", "linear_softmax", "attention"])
def test_weak_pooling_config_round_trip(mode):
    features = np.random.default_rng(1).normal(size=(2, 4, 5)).astype(np.float32)
    probs = np.random.default_rng(2).random((2, 4, 3)).astype(np.float32)
    clone = _round_trip(WeakPooling(mode, 3), [probs, features])
    assert clone.mode == mode and clone.num_classes == 3


def test_l2_normalize_config_round_trip():
    clone = _round_trip(L2Normalize(epsilon=1e-6), np.ones((2, 3), np.float32))
    assert clone.epsilon == 1e-6


# ----------------------------------------------------------------------------- save / load


def _info(classes=("cat", "dog", "speech")):
    return ModelInfo(tuple(classes), FeatureConfig(), PostprocessConfig(threshold=0.4), 4, 0.4)


def test_save_and_load_keras_with_sidecar(tmp_path):
    config = ModelConfig(**{**TINY.__dict__, "conv_activation": "glu", "weak_pooling": "attention"})
    model = build_crnn(config, num_classes=3, n_mels=64, num_frames=40)
    x = np.random.default_rng(0).normal(-40, 10, (2, 40, 64)).astype(np.float32)
    expected = model.predict_on_batch(x)
    path = save_model(model, tmp_path / "m" / "model.keras", _info())
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.json", "model.keras"]
    loaded, info = load_model(path)
    assert info == _info()
    assert info.classes == ("cat", "dog", "speech") and info.clip_frames == 40
    assert info.model_frames_per_second == 25.0
    out = loaded.predict_on_batch(x)
    for key in OUTPUT_KEYS:
        np.testing.assert_allclose(out[key], expected[key], atol=1e-6)
    with pytest.raises(ValueError, match="end in .keras"):
        save_model(model, tmp_path / "model.h5", _info())
    sidecar_path(path).unlink()
    with pytest.raises(FileNotFoundError, match="sidecar not found"):
        load_model(path)


# ----------------------------------------------------------------------------- loss


def _per_example(loss, y_true, y_pred):
    return keras.ops.convert_to_numpy(loss.call(np.asarray(y_true, np.float32), np.asarray(y_pred, np.float32)))


def test_masked_bce_golden():
    loss = MaskedBinaryCrossentropy()
    y_true = [[1.0, 0.0, MASKED], [1.0, 1.0, 0.0]]
    y_pred = [[0.9, 0.2, 0.5], [0.5, 0.5, 0.5]]
    expected = [(-np.log(0.9) - np.log(0.8)) / 2, np.log(2.0)]
    np.testing.assert_allclose(_per_example(loss, y_true, y_pred), expected, rtol=1e-5)
    # Keras reduction: mean over the batch.
    assert float(loss(np.array(y_true, np.float32), np.array(y_pred, np.float32))) == pytest.approx(
        np.mean(expected), rel=1e-5)


def test_masked_entries_contribute_nothing():
    loss = MaskedBinaryCrossentropy()
    rng = np.random.default_rng(0)
    y_true = (rng.random((2, 6, 3)) > 0.5).astype(np.float32)
    y_true[0, 2:5, :] = MASKED
    y_true[1, :, 1] = MASKED
    y_pred = rng.uniform(0.05, 0.95, (2, 6, 3)).astype(np.float32)
    other = y_pred.copy()
    other[y_true == MASKED] = rng.uniform(0.01, 0.99, int((y_true == MASKED).sum()))
    np.testing.assert_allclose(_per_example(loss, y_true, y_pred), _per_example(loss, y_true, other), rtol=1e-6)
    # And equals plain BCE over the valid entries only.
    valid = y_true >= 0
    bce = -(y_true * np.log(y_pred) + (1 - y_true) * np.log(1 - y_pred))
    expected = [bce[i][valid[i]].mean() for i in range(2)]
    np.testing.assert_allclose(_per_example(loss, y_true, y_pred), expected, rtol=1e-5)


def test_all_masked_example_is_zero():
    loss = MaskedBinaryCrossentropy()
    out = _per_example(loss, np.full((2, 4, 3), MASKED), np.full((2, 4, 3), 0.3))
    np.testing.assert_array_equal(out, [0.0, 0.0])
    assert np.isfinite(out).all()


def test_masked_bce_config_round_trip():
    loss = MaskedBinaryCrossentropy(epsilon=1e-5, name="x")
    clone = MaskedBinaryCrossentropy.from_config(loss.get_config())
    assert clone.epsilon == 1e-5 and clone.name == "x"


# ----------------------------------------------------------------------------- training


def test_training_steps_reduce_loss_on_fixed_batch():
    keras.utils.set_random_seed(0)
    model = build_crnn(TINY, num_classes=2, n_mels=64, num_frames=32)
    losses, weights = strong_weak_losses(1.0, 1.0)  # as sedweak.training.compile_model
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=losses, loss_weights=weights, jit_compile=False)
    rng = np.random.default_rng(0)
    x = rng.normal(-50, 5, (4, 32, 64)).astype(np.float32)
    strong = np.zeros((4, 8, 2), np.float32)
    strong[0, 2:6, 0] = 1
    strong[1, :, 1] = 1
    strong[2, 4:, 0] = 1
    strong[3] = MASKED  # a weakly labelled clip, DESED way
    x[:, :, :32] += np.repeat(strong[:, :, 0], 4, axis=1)[:, :, None] * 20  # learnable cue
    weak = np.array([[1, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = {"strong": strong, "weak": weak}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Gradients do not exist for variables")
        first = model.train_on_batch(x, y, return_dict=True)["loss"]
        for _ in range(20):
            last = model.train_on_batch(x, y, return_dict=True)["loss"]
    assert np.isfinite(last)
    assert last < 0.8 * first, (first, last)


@pytest.mark.parametrize("mining, class_weighting, weights", [("random", "none", (0.0, 1.0)),
                                                              ("semihard", "inverse_frequency", (1.0,)),
                                                              pytest.param("hard", "none", (1.0,),
                                                                           marks=pytest.mark.slow)])
def test_the_embedding_head_trains_jointly_when_weighted(mining, class_weighting, weights):
    """loss.embedding_weight > 0: the batches carry the weak tags as the embedding target,
    the triplet loss is logged and the embedding head's weights move (at weight 0 they do not:
    nothing else reaches them)."""
    import keras

    from sedweak.config import load_config
    from sedweak.training.batches import ClipBatches
    from sedweak.training.sampling import class_weights
    from sedweak.training.trainer import compile_model

    rng = np.random.default_rng(0)
    features = rng.normal(-40, 10, (8, 16, 64)).astype("float32")
    weak = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1]] * 2, np.float32)
    strong = np.repeat(weak[:, None, :], 4, axis=1)
    moved = {}
    for weight in weights:
        config = load_config(None, ["model.conv_filters=[4, 4]", "model.conv_pool_freq=[4, 4]",
                                    "model.conv_pool_time=[2, 2]", "model.rnn_units=[4]", "model.embedding_dim=8",
                                    f"loss.embedding_weight={weight}", f"loss.embedding_mining={mining}"])
        keras.utils.set_random_seed(0)
        model = build_crnn(config.model, 3, 64, 16)
        compile_model(model, config, 2)
        weights = class_weights(weak, class_weighting) if class_weighting != "none" else None
        batches = ClipBatches(features, strong, weak, 4, time_pooling=4, class_weights=weights,
                              embedding_targets=weight > 0)
        before = np.array(model.get_layer("embedding_dense").kernel)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # weight 0: "Gradients do not exist" for the head
            history = model.fit(batches, epochs=1, verbose=0).history
        moved[weight] = float(np.abs(np.array(model.get_layer("embedding_dense").kernel) - before).max())
        assert ("embedding_loss" in history) == (weight > 0)
    assert moved[1.0] > 0.0 and moved.get(0.0, 0.0) == 0.0
