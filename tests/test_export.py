"""TFLite export (sedweak.export) and the numpy device runtime (export/sedweak_runtime.py).

Measured on the tiny fast-dev-run CRNN (TF 2.21, ai-edge-litert 2.3), max |tflite - keras|
over 3 clips (noise, 440 Hz sine, chirp): float32 log-mel input 2.4e-7 (strong) /
1.2e-7 (weak); float16 6.2e-4 / 2.1e-4; waveform input float32 8.4e-5 / 1.1e-6 (the
in-graph front end vs librosa features). The tiny model's tensors are all < 1024
elements, so dynamic-range leaves them float: ``dynamic`` is also tested on the random
``fast`` preset, where weights become int8 (measured 2.9e-3).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sedweak.config import FeatureConfig, PostprocessConfig, load_config
from sedweak.features import logmel_librosa, mel_matrix

# the runtime package folder (runpy runs its __main__ as a device would, without installing)
RUNTIME_PATH = Path(__file__).resolve().parents[1] / "export" / "sedweak_runtime"
_TRAINED: dict = {}


def _runtime():
    import sedweak_runtime

    return sedweak_runtime


@pytest.fixture
def tiny_model(tiny_recipe, tmp_path_factory):
    """(model path, model, info) of a fast-dev-run tiny CRNN, trained once per session."""
    if "path" not in _TRAINED:
        from sedweak.training import run

        recipe, overrides = tiny_recipe
        result = run(load_config(recipe, overrides + ["train.fast_dev_run=true"]),
                     tmp_path_factory.mktemp("export_run"), verbose=0)
        _TRAINED["path"] = result.model_path
    from sedweak.models.saving import load_model

    return (_TRAINED["path"], *load_model(_TRAINED["path"]))


@pytest.mark.parametrize("mode, bound", [("float32", 1e-4), ("float16", 5e-3), ("dynamic", 5e-3)])
def test_export_modes_are_builtin_and_match_keras(tiny_model, tmp_path, mode, bound):
    from sedweak.export import check_tflite, export_tflite, read_sidecar

    _, model, info = tiny_model
    out = export_tflite(model, info, tmp_path / f"m_{mode}.tflite", mode)
    report = check_tflite(out, info, model, bank_clips=2)
    assert "WHILE" in report.ops and "CONV_2D" in report.ops  # the GRU as a builtin loop
    assert not any(name.startswith("CUSTOM") for name in report.ops)
    assert set(report.max_abs_diff) == {"strong", "weak"}
    assert max(report.max_abs_diff.values()) < bound, report.max_abs_diff
    meta = read_sidecar(out)
    assert meta["classes"] == list(info.classes) and meta["input"]["shape"] == [1, 400, 64]
    assert [o["name"] for o in meta["outputs"]] == ["strong", "weak"] and meta["outputs"][0]["shape"] == [1, 100, 3]
    assert meta["postprocess"]["median_filter_seconds"] == 0.12 and meta["model_frames_per_second"] == 25.0


def test_dynamic_quantizes_weights_of_a_real_size_model(tmp_path):
    from sedweak.models.saving import ModelInfo
    from sedweak.export import buffer_sizes, check_tflite, export_tflite
    from sedweak.models.crnn import build_crnn
    from sedweak.config import get_preset

    info = ModelInfo(("a", "b"), FeatureConfig(), PostprocessConfig(), 4, 2.0)
    model = build_crnn(get_preset("fast"), 2)
    float_file = export_tflite(model, info, tmp_path / "f.tflite", "float32")
    int8_file = export_tflite(model, info, tmp_path / "d.tflite", "dynamic")
    assert any(dtype == "INT8" for _, dtype, _, _ in buffer_sizes(int8_file, top=50))
    assert int8_file.stat().st_size < 0.5 * float_file.stat().st_size
    assert max(check_tflite(int8_file, info, model, bank_clips=2).max_abs_diff.values()) < 2e-2


def test_waveform_input_matches_keras_on_librosa_features(tiny_model, tmp_path):
    from sedweak.export import check_tflite, export_tflite

    _, model, info = tiny_model
    out = export_tflite(model, info, tmp_path / "w.tflite", "float32", waveform_input=True)
    report = check_tflite(out, info, model, bank_clips=2)
    assert {"RFFT2D", "LOG"} <= set(report.ops)
    assert max(report.max_abs_diff.values()) < 1e-3, report.max_abs_diff
    with pytest.raises(ValueError, match="front end"):
        export_tflite(model, info, tmp_path / "x.tflite", "dynamic", waveform_input=True)


@pytest.mark.parametrize("front_end", ["default", "demo"])
def test_runtime_front_end_matches_librosa(front_end, demo_features):
    """The default front end (25 ms / 10 ms, n_fft 512) and the demo's (40 ms / 20 ms, 1024)."""
    rt = _runtime()
    config = FeatureConfig() if front_end == "default" else demo_features
    spec = {k: getattr(config, k) for k in ("sample_rate_hz", "window_samples", "hop_samples", "n_fft",
                                            "n_mels", "mel_min_hz", "mel_max_hz", "amin_power")}
    bank = (16000, config.n_fft, config.n_mels, 0.0, 8000.0)
    assert np.abs(rt.mel_matrix(*bank) - mel_matrix(*bank)).max() < 1e-8
    rng = np.random.default_rng(1)
    t = np.arange(20_077) / 16000
    for clip in (0.1 * rng.standard_normal(t.size), 0.5 * np.sin(2 * np.pi * 440 * t), np.zeros(300)):
        clip = clip.astype(np.float32)
        ours, ref = rt.logmel(clip, spec), logmel_librosa(clip, config)
        assert ours.shape == ref.shape == (clip.size // config.hop_samples, config.n_mels)
        # dB; measured 1.5e-5 (sine), 3.8e-6 (noise); 300 samples are no frame at a 320-sample hop
        assert ours.size == 0 or np.abs(ours - ref).max() < 1e-4


def test_runtime_postprocessing_matches_sedweak():
    from sedweak.postprocessing import median_filter, probabilities_to_events

    rt = _runtime()
    rng = np.random.default_rng(2)
    probs = np.clip(np.cumsum(rng.normal(0, 0.15, (300, 3)), axis=0) * 0.2 + 0.5, 0, 1).astype(np.float32)
    for size in (1, 3, 7):
        np.testing.assert_array_equal(rt.median_filter(probs, size), median_filter(probs, size))
    config = PostprocessConfig(threshold=0.5, class_thresholds=(("b", 0.4),), median_filter_seconds=0.2)
    meta = {"classes": ["a", "b", "c"], "model_frames_per_second": 25.0,
            "postprocess": {"thresholds": [0.5, 0.4, 0.5], "median_filter_seconds": 0.2,
                            "min_duration_seconds": 0.25, "min_gap_seconds": 0.15}}
    ours = [tuple(vars(e).values()) for e in rt.probabilities_to_events(probs, meta, "x.wav")]
    ref = [(e.filename, e.onset_seconds, e.offset_seconds, e.label)
           for e in probabilities_to_events(probs, ["a", "b", "c"], 25.0, "x.wav", config)]
    assert ours == ref and len(ref) > 3


def _long_clip(model_path: Path, out: Path) -> Path:
    """10.5 s from the run's eval soundscapes: several windows, a ragged tail."""
    clips = sorted((model_path.parent / "data" / "audio" / "eval").glob("*.wav"))[:3]
    audio = np.concatenate([sf.read(c, dtype="float32")[0] for c in clips])[:168_000]
    sf.write(out, audio, 16000, subtype="FLOAT")
    return out


def _threshold_in_a_gap(probs: np.ndarray) -> float:
    """A threshold near the median, halfway across the widest gap between probabilities."""
    values = np.unique(probs)
    middle = values[len(values) // 4: 3 * len(values) // 4 + 2]
    gap = int(np.argmax(np.diff(middle)))
    return float((middle[gap] + middle[gap + 1]) / 2)


@pytest.mark.parametrize("staged", [False, True])
def test_runtime_without_tensorflow_gives_the_events_of_sedweak_predict(tiny_model, tmp_path, staged):
    from sedweak.models.saving import load_model
    from sedweak.export import export_tflite
    from sedweak.export.staged import export_staged
    from sedweak.inference import predict_files
    from sedweak.labels import strong_tsv_text

    model_path, model, info = tiny_model
    audio = _long_clip(model_path, tmp_path / "long.wav")
    _, probs, _ = predict_files(model, info, [audio])
    local = tmp_path / "model.keras"  # a copy whose threshold makes events out of an untrained model
    local.write_bytes(model_path.read_bytes())
    sidecar = json.loads(model_path.with_suffix(".json").read_text())
    sidecar["postprocess"]["threshold"] = _threshold_in_a_gap(probs["long.wav"])
    local.with_suffix(".json").write_text(json.dumps(sidecar))
    model, info = load_model(local)
    events, _, _ = predict_files(model, info, [audio])
    assert sum(map(len, events.values())) >= 1
    tflite = (export_staged(model, info, tmp_path / "m.tflite", "float32", steps=7) if staged
              else export_tflite(model, info, tmp_path / "m.tflite", "float32"))
    blocked = ["tensorflow", "keras", "librosa", "scipy", "sedweak"]
    code = (f"import sys, runpy; sys.modules.update(dict.fromkeys({blocked!r})); "
            f"sys.argv = ['rt', {str(tflite)!r}, {str(audio)!r}, '--out', {str(tmp_path / 'edge.tsv')!r}]; "
            f"runpy.run_path({str(RUNTIME_PATH)!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "edge.tsv").read_text() == strong_tsv_text(events)


def test_runtime_refuses_other_sample_rates(tiny_model, tmp_path):
    from sedweak.export import export_tflite

    _, model, info = tiny_model
    detector = _runtime().Detector(export_tflite(model, info, tmp_path / "m.tflite", "float32"))
    sf.write(tmp_path / "a8k.wav", np.zeros(8000, np.float32), 8000)
    with pytest.raises(ValueError, match=r"a8k\.wav: sample rate 8000 Hz, the model needs 16000 Hz"):
        detector.detect_file(tmp_path / "a8k.wav")
    # shorter than one window: padded to 4 s, track cut back to 4000 // 160 // 4 model frames
    assert detector.frame_probabilities(0.1 * np.ones(4000, np.float32)).shape == (6, 3)


def test_cli_export_with_check(tiny_model, tmp_path):
    from click.testing import CliRunner

    from sedweak.cli import main

    model_path, _, _ = tiny_model
    out = tmp_path / "cli.tflite"
    result = CliRunner().invoke(main, ["export", str(model_path), "--mode", "float16", "--out", str(out), "--check"])
    assert result.exit_code == 0, result.output
    assert "builtin ops only" in result.output and "WHILE x2" in result.output and "strong" in result.output
    assert out.is_file() and (tmp_path / "cli.tflite.json").is_file()
    bad = CliRunner().invoke(main, ["export", str(model_path), "--mode", "dynamic", "--waveform-input",
                                    "--out", str(tmp_path / "x.tflite")])
    assert bad.exit_code != 0 and "front end" in bad.output


def test_buffer_sizes_name_the_largest_constants(tiny_model, tmp_path):
    from sedweak.export import buffer_sizes, export_tflite

    _, model, info = tiny_model
    rows = buffer_sizes(export_tflite(model, info, tmp_path / "m.tflite", "float32"))
    assert rows == sorted(rows, key=lambda r: -r[3]) and all(size > 0 for *_, size in rows)
    assert any("conv" in name for name, *_ in rows)


def test_export_of_a_run_folder_uses_its_recipe_export_section(tiny_model, tmp_path):
    """`sedweak export RUN_DIR` reproduces the run's file from the typed `export:` section of
    its config.yaml; CLI flags override; the output defaults to RUN_DIR/model.tflite."""
    import shutil

    import yaml
    from click.testing import CliRunner

    from sedweak.cli import main

    model_path, _, _ = tiny_model
    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.keras", "model.json"):
        shutil.copy(model_path.parent / name, run / name)
    config = yaml.safe_load((model_path.parent / "config.yaml").read_text())
    config["export"] = {"mode": "dynamic", "graph": "staged", "gru_steps": 7, "check": False}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(main, ["export", str(run)])
    assert result.exit_code == 0, result.output
    meta = json.loads((run / "model.tflite.json").read_text())
    assert meta["mode"] == "dynamic" and meta["staged"]["steps"] == 7
    assert "max |tflite - keras|" not in result.output                     # check: false
    override = CliRunner().invoke(main, ["export", str(run), "--gru-steps", "5", "--check", "--out", str(tmp_path / "o.tflite")])
    assert override.exit_code == 0, override.output
    assert json.loads((tmp_path / "o.tflite.json").read_text())["staged"]["steps"] == 5
    assert "max |tflite - keras|" in override.output
    config["export"] = {"mode": "int8", "gru_staps": 3}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    typo = CliRunner().invoke(main, ["export", str(run)])
    assert typo.exit_code != 0 and "gru_staps" in typo.output               # typed: unknown keys are errors


def test_cli_export_with_embedding(tmp_path, monkeypatch):
    """`sedweak export --with-embedding --check`: the file keeps the embedding, the sidecar
    says so, and the report gives its cosine with Keras within the stated tolerance
    (the 5 synthetic check inputs only, to keep this test short)."""
    from click.testing import CliRunner
    from test_streaming import _saved_tiny_and_calibration_audio

    import sedweak.export.checks as checks
    from sedweak.cli import main
    from sedweak.export import EMBEDDING_MIN_COSINE

    monkeypatch.setattr(checks, "bank_waveforms", lambda rate, count: [])

    model_path, _ = _saved_tiny_and_calibration_audio(tmp_path, bidirectional=True)
    out = tmp_path / "e.tflite"
    result = CliRunner().invoke(main, ["export", str(model_path), "--with-embedding", "--out", str(out), "--check"])
    assert result.exit_code == 0, result.output
    assert "log-mel input, with the clip embedding, builtin ops only" in result.output
    line = next(row for row in result.output.splitlines() if row.startswith("min cosine(tflite, keras): embedding"))
    assert float(line.split()[4]) >= EMBEDDING_MIN_COSINE["float32"] and "(tolerance 0.9999)" in line
    meta = json.loads((tmp_path / "e.tflite.json").read_text())
    assert meta["format"] == "sedweak-tflite-2" and meta["embedding"]["output"] == "embedding"
    assert [o["name"] for o in meta["outputs"]] == ["strong", "weak", "embedding"]
