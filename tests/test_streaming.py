"""Plain-op GRU, chunked / streaming CRNN (sedweak.export.gru, sedweak.export.graph) and the streaming export.

Measured on the tiny random CRNNs below: plain-op GRU vs keras.layers.GRU 3e-7; chunked
offline vs Keras 9e-8; forward-only streaming vs offline 1.2e-7 (Keras) / 1e-6 (TFLite
float32); a bidirectional model streamed in 20-frame chunks differs by 4e-2 (the backward
state restarts at every chunk), which is why only forward-only models stream exactly.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from sedweak.models.saving import ModelInfo
from sedweak.config import FeatureConfig, PostprocessConfig

# the runtime package folder (runpy runs its __main__ as a device would, without installing)
RUNTIME_PATH = Path(__file__).resolve().parents[1] / "export" / "sedweak_runtime"


def _runtime():
    import sedweak_runtime

    return sedweak_runtime


def _randomize(model, seed: int = 0):
    """Weights far from init (BN statistics included) so that mistakes show."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if "moving_variance" in w.path:
            w.assign(rng.uniform(0.5, 2.0, w.shape))
        elif "moving_mean" in w.path:
            w.assign(rng.normal(-40.0 if "input_norm" in w.path else 0.0, 5.0, w.shape))
        elif "gamma" not in w.path:
            w.assign(rng.normal(0.0, 0.3, w.shape))
    return model


def _tiny(bidirectional: bool):
    from sedweak.models.crnn import build_crnn
    from sedweak.config import get_preset
    from sedweak.models.crnn import forward_crnn

    config = dataclasses.replace(get_preset("fast"), conv_filters=(4, 4, 4), rnn_units=(6, 5))
    model = build_crnn(config, 3) if bidirectional else forward_crnn(config, 3)
    return _randomize(model), ModelInfo(("a", "b", "c"), FeatureConfig(), PostprocessConfig(), 4, 2.0)


def _features(frames: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(-40.0, 12.0, (frames, 64)).astype(np.float32)


@pytest.mark.parametrize("go_backwards", [False, True])
def test_plain_op_gru_equals_keras_gru(go_backwards):
    import keras

    from sedweak.export.gru import chunked_gru, gru_weights

    gru = keras.layers.GRU(8, return_sequences=True, go_backwards=go_backwards)
    x = np.random.default_rng(0).normal(size=(2, 23, 5)).astype(np.float32)
    gru.build(x.shape)
    for w in gru.weights:
        w.assign(np.random.default_rng(1).normal(0, 0.5, w.shape))
    expected = np.asarray(gru(x))[:, ::-1] if go_backwards else np.asarray(gru(x))
    for chunk in (1, 5, 23, 100):   # 23 = 4 chunks of 5 + one of 3
        out, state = chunked_gru(x, gru_weights(gru), chunk, reverse=go_backwards)
        assert np.abs(np.asarray(out) - expected).max() < 1e-5
        np.testing.assert_allclose(np.asarray(state), expected[:, 0 if go_backwards else -1], atol=1e-5)


def test_gru_weights_refuses_reset_before():
    import keras

    from sedweak.export.gru import gru_weights

    gru = keras.layers.GRU(4, reset_after=False)
    gru.build((1, 3, 2))
    with pytest.raises(ValueError, match="reset_after"):
        gru_weights(gru)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_chunked_offline_equals_the_keras_model(bidirectional):
    from sedweak.export.graph import offline_strong

    model, _ = _tiny(bidirectional)
    logmel = _features(203)[np.newaxis]           # not a multiple of the pooling
    expected = np.asarray(model.predict_on_batch(logmel)["strong"])
    assert np.abs(np.asarray(offline_strong(model, logmel, 7)) - expected).max() < 1e-5


def test_streaming_is_exact_for_forward_models_only():
    from sedweak.export.graph import context_frames, stream_logmel

    logmel = _features(203)
    model, _ = _tiny(bidirectional=False)
    assert context_frames(model) == 8              # 1 + 2 + 4 frames of reach, rounded to the pooling
    offline = np.asarray(model.predict_on_batch(logmel[np.newaxis])["strong"])[0]
    streamed = stream_logmel(model, logmel, 20)
    assert streamed.shape == offline.shape == (50, 3)
    assert np.abs(streamed - offline).max() < 1e-5
    bi, _ = _tiny(bidirectional=True)
    offline = np.asarray(bi.predict_on_batch(logmel[np.newaxis])["strong"])[0]
    assert np.abs(stream_logmel(bi, logmel, 20) - offline).max() > 1e-3   # backward state reset per chunk
    with pytest.raises(ValueError, match="multiples of the time pooling"):
        stream_logmel(model, logmel, 10)


def test_backward_lookahead_closes_the_gap_of_bidirectional_streaming():
    from sedweak.export.graph import stream_logmel

    logmel = _features(203)
    model, _ = _tiny(bidirectional=True)
    offline = np.asarray(model.predict_on_batch(logmel[np.newaxis])["strong"])[0]
    errors = [np.abs(stream_logmel(model, logmel, 20, lookahead=a) - offline).max() for a in (0, 40, 200)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-5   # 200 frames: the whole future


def test_streaming_front_end_equals_the_offline_one():
    rt = _runtime()
    config = FeatureConfig()
    spec = {k: getattr(config, k) for k in ("sample_rate_hz", "window_samples", "hop_samples", "n_fft",
                                            "n_mels", "mel_min_hz", "mel_max_hz", "amin_power")}
    wave = np.random.default_rng(3).normal(0, 0.1, 16_123).astype(np.float32)
    front, pieces, start = rt.StreamingLogMel(spec), [], 0
    for size in (1, 100, 159, 161, 512, 3000, 12_190):
        pieces.append(front.push(wave[start:start + size]))
        start += size
    pieces.append(front.flush())
    assert np.abs(np.concatenate(pieces) - rt.logmel(wave, spec)).max() < 1e-5


def test_streaming_export_runs_on_device_as_offline(tmp_path):
    from sedweak.export import tflite_ops
    from sedweak.export.streaming import export_streaming
    from sedweak.features import logmel_librosa

    model, info = _tiny(bidirectional=False)
    path = export_streaming(model, info, tmp_path / "s.tflite", chunk_frames=20)
    ops = tflite_ops(path)
    assert "WHILE" not in ops and not any(name.startswith("CUSTOM") for name in ops)
    wave = 0.1 * np.random.default_rng(4).standard_normal(33_000).astype(np.float32)
    offline = np.asarray(model.predict_on_batch(logmel_librosa(wave, info.features)[np.newaxis])["strong"])[0]
    detector = _runtime().Detector(path)
    pieces = [wave[i:i + 1234] for i in range(0, len(wave), 1234)]
    streamed = np.concatenate(list(detector.stream(pieces)))
    assert streamed.shape == offline.shape == (51, 3)
    assert np.abs(streamed - offline).max() < 1e-3         # measured 1e-6
    assert np.abs(detector.frame_probabilities(wave) - streamed).max() < 1e-6


@pytest.mark.parametrize("full_integer", [False, True])
def test_streaming_int8_is_builtin_and_close(tmp_path, full_integer):
    from sedweak.export import tflite_ops
    from sedweak.export.streaming import export_streaming

    model, info = _tiny(bidirectional=False)
    path = export_streaming(model, info, tmp_path / "q.tflite", 20, "int8",
                            calibration=[_features(200, seed) for seed in range(3)], full_integer=full_integer)
    ops = tflite_ops(path)
    assert "WHILE" not in ops and "FULLY_CONNECTED" in ops
    assert ("QUANTIZE" in ops) != full_integer       # float I/O quantizes inside the graph
    meta = _runtime().json.loads(path.with_name(path.name + ".json").read_text())
    tensors = meta["streaming"]["tensors"]
    assert (tensors["inputs"]["logmel"]["dtype"] == "int8") == full_integer == (tensors["outputs"]["strong"]["scale"] > 0)
    assert meta["streaming"]["exact"] and meta["input"]["shape"] == [1, 36, 64]
    logmel = _features(160, seed=9)
    offline = np.asarray(model.predict_on_batch(logmel[np.newaxis])["strong"])[0]
    streamed = _runtime().Detector(path).streaming.push(logmel, final=True)
    assert np.abs(streamed - offline).max() < 0.1


def test_int8_needs_calibration_and_the_while_graph_refuses_int8(tmp_path):
    from sedweak.export import export_tflite
    from sedweak.export.streaming import export_streaming

    model, info = _tiny(bidirectional=False)
    for mode in ("int8", "int16x8"):
        with pytest.raises(ValueError, match="calibration"):
            export_streaming(model, info, tmp_path / "q.tflite", 20, mode)
    with pytest.raises(ValueError, match="export_staged"):
        export_tflite(model, info, tmp_path / "o.tflite", "int8")


def _saved_tiny_and_calibration_audio(tmp_path, bidirectional: bool):
    """A saved tiny model (.keras) and a folder of 2 noise WAVs to calibrate int8 on."""
    import soundfile as sf

    from sedweak.models.saving import save_model

    model, info = _tiny(bidirectional)
    model_path = save_model(model, tmp_path / "tiny.keras", info)
    audio = tmp_path / "calib"
    audio.mkdir()
    for seed in range(2):
        sf.write(audio / f"{seed}.wav", np.random.default_rng(seed).normal(0, 0.1, 32_000).astype(np.float32), 16000)
    return model_path, audio


def test_cli_streaming_int8_export(tmp_path):
    from click.testing import CliRunner

    from sedweak.cli import main

    model_path, audio = _saved_tiny_and_calibration_audio(tmp_path, bidirectional=False)
    out = tmp_path / "s8.tflite"
    result = CliRunner().invoke(main, ["export", str(model_path), "--streaming", "--mode", "int8", "--full-integer",
                                       "--calibration", str(audio), "--out", str(out), "--check"])
    assert result.exit_code == 0, result.output
    assert "int8 full-integer, streaming (20-frame chunks)" in result.output and "FULLY_CONNECTED" in result.output
    assert _runtime().json.loads((tmp_path / "s8.tflite.json").read_text())["streaming"]["exact"] is True
    bad = CliRunner().invoke(main, ["export", str(model_path), "--mode", "int8", "--out", str(tmp_path / "x.tflite")])
    assert bad.exit_code != 0 and "pass --calibration AUDIO_DIR" in bad.output


def test_bidirectional_streaming_export_with_lookahead_matches_keras_stream(tmp_path):
    from sedweak.export.streaming import export_streaming
    from sedweak.export.graph import stream_logmel

    model, info = _tiny(bidirectional=True)
    path = export_streaming(model, info, tmp_path / "bi.tflite", 20, lookahead=40)
    logmel = _features(130, seed=5)
    device = _runtime().Detector(path).streaming.push(logmel, final=True)
    assert np.abs(device - stream_logmel(model, logmel, 20, lookahead=40)).max() < 1e-5
    meta = _runtime().json.loads(path.with_name(path.name + ".json").read_text())
    assert not meta["streaming"]["exact"] and meta["streaming"]["lookahead_frames"] == 40


def test_streaming_int16x8_is_closer_to_float_than_int8(tmp_path):
    from sedweak.export.streaming import export_streaming

    model, info = _tiny(bidirectional=False)
    calibration = [_features(200, seed) for seed in range(3)]
    logmel = _features(160, seed=9)
    offline = np.asarray(model.predict_on_batch(logmel[np.newaxis])["strong"])[0]
    errors = {}
    for mode in ("int8", "int16x8"):
        path = export_streaming(model, info, tmp_path / f"{mode}.tflite", 20, mode, calibration)
        errors[mode] = np.abs(_runtime().Detector(path).streaming.push(logmel, final=True) - offline).max()
    assert errors["int16x8"] < errors["int8"] < 0.05, errors   # measured 0.016 vs 0.023 (int8 weights in both)


def test_bidirectional_int8_stream_has_no_reverse_and_stays_close(tmp_path):
    from sedweak.export import requantizing_copies, tflite_ops
    from sedweak.export.streaming import export_streaming
    from sedweak.export.graph import stream_logmel

    model, info = _tiny(bidirectional=True)
    path = export_streaming(model, info, tmp_path / "bi8.tflite", 20, "int8",
                            calibration=[_features(200, seed) for seed in range(3)], lookahead=20)
    assert "REVERSE_V2" not in tflite_ops(path) and requantizing_copies(path) == []
    logmel = _features(160, seed=5)
    expected = stream_logmel(model, logmel, 20, lookahead=20)
    assert np.abs(_runtime().Detector(path).streaming.push(logmel, final=True) - expected).max() < 0.15


def test_int8_export_refuses_a_data_movement_op_with_two_quantizations(tmp_path):
    """TF 2.21's quantizer gives REVERSE_V2 between two differently ranged tensors its own
    output scale while the kernel copies raw int8 values: the export must refuse that."""
    import tensorflow as tf

    from sedweak.export import ExportError, convert_saved_model, requantizing_copies

    class Probe(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((1, 8, 4), tf.float32)])
        def serve(self, x):
            small, large = 0.1 * tf.reduce_sum(x, -1, keepdims=True), 5.0 * x
            return {"y": tf.stack([large, tf.reverse(small * tf.ones_like(x), [1])])}

    tf.saved_model.save(Probe(), str(tmp_path / "sm"), signatures={"serve": Probe().serve})
    rng = np.random.default_rng(0)
    representative = lambda: ([rng.normal(size=(1, 8, 4)).astype(np.float32)] for _ in range(20))
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "sm"), signature_keys=["serve"])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    found = requantizing_copies(converter.convert())
    assert found and found[0].startswith("REVERSE_V2"), "TF now keeps one scale across REVERSE_V2: update export/README"
    with pytest.raises(ExportError, match="data-movement ops"):
        convert_saved_model(tmp_path / "sm", "int8", representative)


def test_streaming_with_embedding_keeps_a_running_mean_equal_to_the_offline_embedding(tmp_path):
    """A forward-only model streamed in pieces: the running embedding equals the Keras
    embedding of the whole input (measured 1.5e-7); a new stream starts it afresh."""
    from sedweak.export.streaming import export_streaming
    from sedweak.features import logmel_librosa

    model, info = _tiny(bidirectional=False)
    path = export_streaming(model, info, tmp_path / "e.tflite", chunk_frames=20, with_embedding=True)
    meta = _runtime().read_sidecar(path)
    assert meta["embedding"]["finish"] == "mean_then_l2" and meta["outputs"][-1]["shape"] == [1, 5, 64]
    detector = _runtime().Detector(path)
    waves = [0.1 * np.random.default_rng(seed).standard_normal(n).astype(np.float32) for seed, n in ((4, 33_000),
                                                                                                     (5, 9_000))]
    for wave in waves:                   # the second stream must not carry the first one's frames
        offline = model.predict_on_batch(logmel_librosa(wave, info.features)[np.newaxis])
        list(detector.stream(wave[i:i + 1234] for i in range(0, len(wave), 1234)))
        got = detector.stream_embedding()
        assert got.shape == (64,) and abs(float(np.linalg.norm(got)) - 1.0) < 1e-6
        assert np.abs(got - np.asarray(offline["embedding"])[0]).max() < 1e-5
    probabilities, embedding = detector.stitched_outputs([waves[1]])
    assert np.abs(embedding - got).max() < 1e-6 and probabilities.shape == (14, 3)


def test_with_embedding_refuses_a_model_without_one_naming_it(tmp_path):
    """--with-embedding on a model without an 'embedding' output (or, for the loop-free
    graphs, without the CRNN's embedding head) is an ExportSettingsError naming the model,
    raised before any calibration."""
    import keras

    from sedweak.config import ExportConfig
    from sedweak.errors import ExportSettingsError
    from sedweak.export import export_model, export_tflite
    from sedweak.export.staged import export_staged

    model, info = _tiny(bidirectional=False)
    bare = keras.Model(model.input, {k: model.output[k] for k in ("strong", "weak")}, name="bare_crnn")
    with pytest.raises(ExportSettingsError, match=r"bare_crnn.*no 'embedding' output \(outputs: strong, weak\)"):
        export_tflite(bare, info, tmp_path / "a.tflite", with_embedding=True)
    for graph in ("staged", "streaming"):
        settings = ExportConfig(mode="int8", graph=graph, calibration=str(tmp_path / "nowhere"), with_embedding=True)
        with pytest.raises(ExportSettingsError, match="runs/bare.keras: --with-embedding"):
            export_model(bare, info, tmp_path / "b.tflite", settings, source="runs/bare.keras")
    other = keras.Model(model.input, {**{k: model.output[k] for k in ("strong", "weak")},
                                      "embedding": keras.layers.Dense(4, name="other_head")(model.output["weak"])},
                        name="other_crnn")
    with pytest.raises(ExportSettingsError, match="other_crnn.*CRNN's embedding head.*export it whole-clip"):
        export_staged(other, info, tmp_path / "c.tflite", "float32", with_embedding=True)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="with_embedding must be true or false"):
        ExportConfig(with_embedding="yes")
