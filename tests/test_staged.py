"""Staged whole-clip export (sedweak.export.staged) and its device runtime (StagedModel).

Measured on the tiny random CRNNs of test_streaming (2 GRU layers, 7 steps per call, so
the 50 model frames of a 2 s window need a padded last chunk): float32 staged file vs
the Keras model 4.8e-7 (bidirectional) / 1.2e-7 (forward); int8 9.5e-2 / 1.9e-2 on these
random weights (trained models: see export/README.md).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_streaming import _features, _runtime, _saved_tiny_and_calibration_audio, _tiny


def _window(info, seed: int = 3) -> np.ndarray:
    return _features(info.clip_frames, seed)[np.newaxis]


@pytest.mark.parametrize("bidirectional", [True, False])
def test_float_stages_equal_the_keras_model(bidirectional):
    from sedweak.export.staged import keras_staged_model

    model, info = _tiny(bidirectional)
    logmel = _window(info)
    expected = model.predict_on_batch(logmel)
    for steps in (7, 50, 64):        # padded last chunk, one exact chunk, one chunk longer than the clip
        got = keras_staged_model(model, info, steps)(logmel)
        for name in ("strong", "weak"):
            assert got[name].shape == np.asarray(expected[name]).shape
            assert np.abs(got[name] - np.asarray(expected[name])).max() < 1e-5


@pytest.mark.parametrize("bidirectional", [True, False])
def test_staged_float32_file_is_loop_free_and_exact_on_the_device(tmp_path, bidirectional):
    from sedweak.export import read_sidecar, tflite_ops
    from sedweak.export.staged import export_staged, run_staged_file

    model, info = _tiny(bidirectional)
    path = export_staged(model, info, tmp_path / "s.tflite", "float32", steps=7)
    ops = tflite_ops(path)
    assert "WHILE" not in ops and not any(name.startswith("CUSTOM") for name in ops)
    meta = read_sidecar(path)
    assert [layer["bidirectional"] for layer in meta["staged"]["layers"]] == [bidirectional] * 2
    assert sorted(meta["staged"]["tensors"]) == ["conv", "gru_0", "gru_1", "head"]
    logmel = _window(info)
    expected = np.asarray(model.predict_on_batch(logmel)["strong"])
    library = run_staged_file(path, logmel)
    device = _runtime().Detector(path).staged(logmel)
    assert np.abs(library["strong"] - expected).max() < 1e-5            # measured 4.8e-7
    assert np.abs(device["strong"] - library["strong"]).max() < 1e-6
    assert np.abs(device["weak"] - library["weak"]).max() < 1e-6


@pytest.mark.parametrize("full_integer", [False, True])
def test_staged_int8_is_builtin_close_and_the_runtime_agrees(tmp_path, full_integer):
    from sedweak.export import read_sidecar, tflite_ops
    from sedweak.export.staged import export_staged, run_staged_file

    model, info = _tiny(bidirectional=True)
    calibration = [_features(200, seed) for seed in range(4)]
    path = export_staged(model, info, tmp_path / "q.tflite", "int8", 10, calibration, full_integer)
    ops = tflite_ops(path)
    assert "WHILE" not in ops and "CONV_2D" in ops and "QUANTIZE" in ops    # the float weak head: (de)quantized
    assert "REVERSE_V2" not in ops            # the backward direction is fed reversed (see requantizing_copies)
    tensors = read_sidecar(path)["staged"]["tensors"]
    assert (tensors["gru_0"]["inputs"]["state_backward"]["dtype"] == "int8") == full_integer
    assert (tensors["head"]["outputs"]["strong"]["dtype"] == "int8") == full_integer
    assert (tensors["conv"]["inputs"]["logmel"]["dtype"] == "int8") == full_integer
    logmel = _window(info, seed=8)
    expected = np.asarray(model.predict_on_batch(logmel)["strong"])
    library = run_staged_file(path, logmel)["strong"]
    assert np.abs(library - expected).max() < 0.2                      # random weights: measured 0.09
    assert np.abs(_runtime().Detector(path).staged(logmel)["strong"] - library).max() < 1e-6


def test_the_runtime_reads_this_layout_and_refuses_others(tmp_path):
    from sedweak.export import SIDECAR_FORMAT, read_sidecar
    from sedweak.export.staged import STAGED_FORMAT, export_staged

    runtime = _runtime()
    assert (runtime.SIDECAR_FORMAT, runtime.STAGED_FORMAT) == (SIDECAR_FORMAT, STAGED_FORMAT)
    model, info = _tiny(bidirectional=True)
    path = export_staged(model, info, tmp_path / "s.tflite", "float32", steps=7)
    meta = read_sidecar(path)
    assert sorted(meta["staged"]["tensors"]["gru_0"]["inputs"]) == ["state_backward", "state_forward",
                                                                     "x_backward", "x_forward"]   # no mask
    meta["staged"]["format"] = "sedweak-staged-2"
    path.with_name("s.tflite.json").write_text(runtime.json.dumps(meta))
    with pytest.raises(ValueError, match="re-export"):
        runtime.Detector(path)


def test_staged_export_errors(tmp_path):
    from sedweak.export.staged import export_staged

    model, info = _tiny(bidirectional=True)
    with pytest.raises(ValueError, match="calibration"):
        export_staged(model, info, tmp_path / "a.tflite", "int8")
    with pytest.raises(ValueError, match="full-integer"):
        export_staged(model, info, tmp_path / "b.tflite", "float32", full_integer=True)
    with pytest.raises(ValueError, match="steps"):
        export_staged(model, info, tmp_path / "c.tflite", "float32", steps=0)


@pytest.mark.slow   # .ci/run exports the demo model to int8 through the CLI on every run
def test_cli_int8_without_streaming_writes_a_staged_file(tmp_path):
    from click.testing import CliRunner

    from sedweak.cli import main

    model_path, audio = _saved_tiny_and_calibration_audio(tmp_path, bidirectional=True)
    out = tmp_path / "q.tflite"
    args = ["export", str(model_path), "--mode", "int8", "--calibration", str(audio), "--gru-steps", "5", "--out", str(out)]
    # random weights calibrated on two noise files: silence and clipped noise fall far outside
    # the calibrated ranges (measured 0.45): --check refuses the file and writes nothing
    refused = CliRunner().invoke(main, args + ["--check"])
    assert refused.exit_code != 0 and "int8 outputs differ from the Keras model" in refused.output
    assert "tolerance 0.25" in refused.output and sorted(p.name for p in tmp_path.glob("*.tflite*")) == []
    result = CliRunner().invoke(main, args + ["--no-check"])
    assert result.exit_code == 0, result.output
    assert "staged (5 GRU steps per call)" in result.output and "ran on 25 check inputs" in result.output
    assert "max |tflite - keras|" not in result.output
    assert _runtime().json.loads((tmp_path / "q.tflite.json").read_text())["staged"]["steps"] == 5
    both = CliRunner().invoke(main, ["export", str(model_path), "--streaming", "--staged", "--out", str(out)])
    assert both.exit_code != 0 and "choose one" in both.output


@pytest.mark.slow   # test_export_matrix runs int8 waveform-input for every pooling
def test_staged_int8_with_waveform_input_keeps_the_front_end_float(tmp_path):
    from sedweak.export import flatbuffer_tensor_types, read_sidecar
    from sedweak.export.staged import export_staged, run_staged_file
    from sedweak.features import logmel_librosa

    model, info = _tiny(bidirectional=True)
    waves = [0.1 * np.random.default_rng(s).standard_normal(32_000).astype(np.float32) for s in range(3)]
    path = export_staged(model, info, tmp_path / "w8.tflite", "int8", 10, waves, waveform_input=True)
    meta = read_sidecar(path)
    assert meta["input"]["kind"] == "waveform" and meta["input"]["shape"] == [1, 32_000]
    types = flatbuffer_tensor_types(path)
    front = {dtype for name, dtype in types.items() if "logmel_frontend" in name and ("Log" in name or "Tensordot" in name)}
    assert front == {"FLOAT32"}                                                   # mel matmul and log stay float
    assert types["conv_block_0_1/pool_1/MaxPool2d"] == "INT8"                     # the body is int8
    body = export_staged(model, info, tmp_path / "l8.tflite", "int8", 10,
                         [logmel_librosa(w, info.features) for w in waves])      # log-mel input, same clips
    wave = 0.1 * np.random.default_rng(0).standard_normal(32_000).astype(np.float32)
    logmel = logmel_librosa(wave, info.features)[np.newaxis]
    expected = np.asarray(model.predict_on_batch(logmel)["strong"])
    got = run_staged_file(path, wave[np.newaxis])["strong"]
    body_only = run_staged_file(body, logmel)["strong"]
    assert np.abs(got - expected).max() < 0.2          # random weights: measured 0.048, all of it the int8 body's
    assert np.abs(got - body_only).max() < 1e-3        # the float front end adds nothing (measured 0.0)
    assert np.abs(_runtime().Detector(path).staged(wave[np.newaxis])["strong"] - got).max() < 1e-6
    with pytest.raises(ValueError, match="front end float"):
        export_staged(model, info, tmp_path / "x.tflite", "int8", 10, waves, True, waveform_input=True)


def test_staged_dynamic_stores_int8_weights_and_stays_close(tmp_path):

    from sedweak.models.saving import ModelInfo
    from sedweak.config import FeatureConfig, PostprocessConfig
    from sedweak.export import flatbuffer_tensor_types
    from sedweak.export.staged import export_staged, run_staged_file
    from sedweak.models.crnn import build_crnn
    from sedweak.config import get_preset

    model = build_crnn(get_preset("fast"), 3)               # Keras init; tensors > 1024 elements get int8
    info = ModelInfo(("a", "b", "c"), FeatureConfig(), PostprocessConfig(), 4, 2.0)
    path = export_staged(model, info, tmp_path / "d.tflite", "dynamic", steps=10)
    float_path = export_staged(model, info, tmp_path / "f.tflite", "float32", steps=10)
    assert "INT8" in flatbuffer_tensor_types(path).values()
    assert path.stat().st_size < 0.5 * float_path.stat().st_size
    logmel = _window(info, seed=4)
    expected = np.asarray(model.predict_on_batch(logmel)["strong"])
    assert np.abs(run_staged_file(path, logmel)["strong"] - expected).max() < 0.05
    with pytest.raises(ValueError, match="int16x8"):
        export_staged(model, info, tmp_path / "x.tflite", "int16x8", calibration=[logmel[0]])


def test_staged_with_embedding_head_emits_frames_whose_mean_is_the_keras_embedding(tmp_path):
    """The head's per-frame projections, averaged and L2-normalised by the runtime, are the
    model's embedding (float32: measured 1.2e-7); the sidecar records it (format 2)."""
    from sedweak.export import EMBEDDING_SIDECAR_FORMAT, read_sidecar
    from sedweak.export.staged import export_staged, keras_staged_model

    model, info = _tiny(bidirectional=True)
    logmel = _window(info, seed=5)
    expected = np.asarray(model.predict_on_batch(logmel)["embedding"])
    library = keras_staged_model(model, info, 7, with_embedding=True)(logmel)
    assert library["embedding"].shape == (1, 64) and np.abs(library["embedding"] - expected).max() < 1e-5
    path = export_staged(model, info, tmp_path / "e.tflite", "float32", steps=7, with_embedding=True)
    meta = read_sidecar(path)
    assert meta["format"] == EMBEDDING_SIDECAR_FORMAT
    assert meta["embedding"] == {"output": "embedding_frames", "signature": "head", "dim": 64, "finish": "mean_then_l2"}
    assert meta["outputs"][-1] == {"name": "embedding_frames", "shape": [1, 50, 64]}
    assert sorted(meta["staged"]["tensors"]["head"]["outputs"]) == ["embedding_frames", "strong", "weak"]
    device = _runtime().Detector(path).staged(logmel)
    assert np.abs(device["embedding"] - expected).max() < 1e-5 and "embedding_frames" not in device
    assert np.abs(device["strong"] - np.asarray(model.predict_on_batch(logmel)["strong"])).max() < 1e-5
