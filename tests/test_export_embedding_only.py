"""Export of an embedding-only model (one output, ``embedding``: the patch CNN E of a ``task: waa``
run) and the device runtime on its file.

A tiny random :func:`build_patch_embedding` (filters 4-4-4-4, E = 8) saved as a WAA run saves
its E (``save_model`` + ``ModelInfo``, time pooling 1, a 1 s window = 5 patches of 200 ms).
Measured on it (check inputs: silence, extremes, 0.3 s, 65 s, 2 bank clips): cosine with Keras
float32 0.99999994, int8 0.975 (calibrated on 5 synthetic clips).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from sedweak.config import ExportConfig, FeatureConfig, PostprocessConfig

RATE = 16000


@pytest.fixture(scope="module")
def patch_model(tmp_path_factory):
    """(path, model, info): a tiny patch CNN saved and loaded back as ``sedweak export`` loads it."""
    import keras

    from sedweak.embeddings.models import build_patch_embedding
    from sedweak.models.saving import ModelInfo, load_model, save_model

    keras.utils.set_random_seed(0)
    model = build_patch_embedding(n_mels=64, embedding_dim=8, filters=(4, 4, 4, 4))
    info = ModelInfo(("dog", "bell"), FeatureConfig(), PostprocessConfig(), 1, 1.0)
    path = save_model(model, tmp_path_factory.mktemp("waa_run") / "model.keras", info)
    return (path, *load_model(path))


@pytest.fixture(scope="module")
def exported(patch_model, tmp_path_factory):
    """(file, report) of the float32 export through :func:`export_model` (as the CLI runs it)."""
    from sedweak.export import export_model

    path, model, info = patch_model
    out = tmp_path_factory.mktemp("export") / "e.tflite"
    return export_model(model, info, out, ExportConfig(with_embedding=True), source=str(path), bank_clips=2)


def _wav(path, waveform) -> str:
    sf.write(path, np.asarray(waveform, np.float32), RATE)
    return str(path)


def _keras_file_embedding(model, info, waveform) -> np.ndarray:
    """What ``sedweak embed`` gives: the windows' embeddings averaged, re-normalised."""
    from sedweak.embeddings.extract import embed_logmel, embedding_function
    from sedweak.features import logmel_librosa

    return embed_logmel(embedding_function(model), logmel_librosa(waveform, info.features), info)[0][0]


def test_float32_file_outputs_the_embedding_alone_and_matches_keras(exported):
    import sedweak_runtime
    from sedweak_runtime.interpreter import open_interpreter

    out, report = exported
    assert report.graph == "whole_clip" and report.max_abs_diff == {} and report.tolerance is None
    assert report.min_cosine["embedding"] >= 0.9999 and report.cosine_tolerance == 0.9999   # measured 0.99999994
    assert {"CONV_2D", "FULLY_CONNECTED"} <= set(report.ops) and "WHILE" not in report.ops
    assert "digital silence" in report.inputs and "full-scale clipped noise" in report.inputs
    runner = open_interpreter(out).get_signature_runner("serve")
    assert set(runner.get_output_details()) == {"embedding"} and set(runner.get_input_details()) == {"logmel"}
    meta = json.loads(out.with_name("e.tflite.json").read_text())
    assert meta["format"] == "sedweak-tflite-2" and meta["outputs"] == [{"name": "embedding", "shape": [1, 8]}]
    assert meta["embedding"] == {"output": "embedding", "signature": "serve", "dim": 8, "finish": "final"}
    assert meta["input"]["shape"] == [1, 100, 64] and meta["clip_frames"] == 100 == 5 * 20   # whole patches
    assert not sedweak_runtime.has_detection(meta) and sedweak_runtime.has_detection({"outputs": [{"name": "strong"}]})


def test_runtime_gives_keras_mean_of_windows_embedding_and_no_events(patch_model, exported, tmp_path):
    """analyse_file: events [], probabilities None, the embedding as Keras computes it (mean of
    the ~50 %-overlapping windows' embeddings, re-normalised) on a several-window file and
    unit-norm on silence and full-scale clipped noise (measured |diff| <= 6e-5, the runtime's
    numpy log-mel against librosa's, through an untrained model)."""
    import sedweak_runtime

    _, model, info = patch_model
    detector = sedweak_runtime.Detector(exported[0])
    assert not detector.detects and detector.embedding["dim"] == 8
    rng = np.random.default_rng(3)
    t = np.arange(int(2.7 * RATE)) / RATE
    clips = {"tones.wav": 0.3 * np.sin(2 * np.pi * (300 + 200 * t) * t) + 0.02 * rng.standard_normal(t.size),
             "silence.wav": np.zeros(RATE // 2),
             "clipped.wav": np.clip(4.0 * rng.standard_normal(RATE), -1.0, 1.0)}
    for name, waveform in clips.items():
        result = detector.analyse_file(_wav(tmp_path / name, waveform))
        assert result.events == [] and result.probabilities is None
        assert result.embedding.shape == (8,) and result.embedding.dtype == np.float32
        assert abs(np.linalg.norm(result.embedding) - 1.0) < 1e-5, name
        keras_embedding = _keras_file_embedding(model, info, waveform)
        assert np.abs(result.embedding - keras_embedding).max() < 1e-4, name      # front ends: numpy vs librosa
        assert float(result.embedding @ keras_embedding) > 0.99999
    with pytest.raises(ValueError, match="embedding-only file"):
        detector.detect_file(tmp_path / "tones.wav")
    with pytest.raises(ValueError, match="embedding-only file"):
        detector.frame_probabilities(np.zeros(RATE, np.float32))


def test_int8_calibrates_on_whole_patches_and_keeps_a_unit_norm(patch_model, tmp_path):
    """No GRU, no WHILE: int8 calibrates on the whole-clip graph (clips cut to the window, 5
    patches); the final L2 normalisation and the output stay float (measured cosine 0.975)."""
    from sedweak.export import export_model
    from sedweak.export.flatbuffer import flatbuffer_tensor_types

    path, model, info = patch_model
    rng = np.random.default_rng(0)
    t = np.arange(int(1.5 * RATE)) / RATE
    (tmp_path / "cal").mkdir()
    for i, w in enumerate([np.zeros(t.size), 0.1 * rng.standard_normal(t.size), 0.5 * np.sin(2 * np.pi * 440 * t),
                           1e-4 * rng.standard_normal(t.size), np.clip(4 * rng.standard_normal(t.size), -1, 1)]):
        _wav(tmp_path / "cal" / f"{i}.wav", w)
    settings = ExportConfig(mode="int8", with_embedding=True, calibration=str(tmp_path / "cal"))
    out, report = export_model(model, info, tmp_path / "q.tflite", settings, source=str(path), bank_clips=2)
    assert report.graph == "whole_clip" and report.cosine_tolerance == 0.95
    assert report.min_cosine["embedding"] >= 0.95                                   # measured 0.975
    types = flatbuffer_tensor_types(out.read_bytes())
    assert any("conv" in name and dtype == "INT8" for name, dtype in types.items())
    assert [dtype for name, dtype in types.items() if "embedding_1/truediv" in name] == ["FLOAT32"]


@pytest.mark.parametrize("settings, message", [
    (ExportConfig(), "only an embedding output: pass --with-embedding"),
    (ExportConfig(with_embedding=True, graph="staged"), "whole-clip graph.*drop --staged"),
    (ExportConfig(with_embedding=True, graph="streaming"), "whole-clip graph.*drop --streaming"),
    (ExportConfig(with_embedding=True, mode="int16x8"), "int16x8 is not offered"),
    (ExportConfig(with_embedding=True, mode="int8", full_integer=True), "drop --full-integer"),
])
def test_settings_an_embedding_only_model_cannot_take_are_refused_naming_it(patch_model, tmp_path, settings, message):
    from sedweak.errors import ExportSettingsError
    from sedweak.export import export_model, export_tflite

    path, model, info = patch_model
    with pytest.raises(ExportSettingsError, match=message) as caught:
        export_model(model, info, tmp_path / "x.tflite", settings, source=str(path))
    assert str(caught.value).startswith(str(path)) and not list(tmp_path.iterdir())
    with pytest.raises(ExportSettingsError, match="only an embedding output"):
        export_tflite(model, info, tmp_path / "y.tflite", source=str(path))


def test_cli_export_with_embedding_and_its_refusal(patch_model, tmp_path):
    """`sedweak export MODEL.keras --with-embedding` loads a saved patch CNN (its layers
    registered by the command) and writes the embedding-only file; without the flag, a clear error."""
    from click.testing import CliRunner

    from sedweak.cli import main

    path = patch_model[0]
    out = tmp_path / "cli.tflite"
    result = CliRunner().invoke(main, ["export", str(path), "--with-embedding", "--out", str(out), "--no-check"])
    assert result.exit_code == 0, result.output
    assert "float32, whole-clip, log-mel input, the clip embedding alone, builtin ops only" in result.output
    assert json.loads((tmp_path / "cli.tflite.json").read_text())["outputs"][0]["name"] == "embedding"
    refused = CliRunner().invoke(main, ["export", str(path), "--out", str(tmp_path / "no.tflite")])
    assert refused.exit_code != 0 and not (tmp_path / "no.tflite").exists()
    assert "this model has only an embedding output: pass --with-embedding" in refused.output
