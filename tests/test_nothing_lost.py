"""Nothing lost, nothing silent (bad inputs and interrupted runs): each test reproduces a
case that misbehaved on the main branch before these fixes."""

from __future__ import annotations

import dataclasses
import logging
import os
import stat

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from sedweak.models.saving import ModelInfo, save_model
from sedweak.audio import AudioError, load_audio, write_wav
from sedweak.config import FeatureConfig, PostprocessConfig


def _wav(path, seconds: float = 2.0, rate: int = 16_000, seed: int = 0):
    return write_wav(path, 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * rate)), rate)


def test_a_truncated_wav_is_an_error_not_silence(tmp_path):
    full = _wav(tmp_path / "full.wav", 10.0)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[:100])          # read as 28 samples by libsndfile
    with pytest.raises(AudioError, match=r"cut.wav: truncated audio \(\d+ of the 160000 frames"):
        load_audio(cut)
    half = tmp_path / "half.wav"
    half.write_bytes(full.read_bytes()[:160_000])
    with pytest.raises(AudioError, match="half.wav: truncated audio"):
        load_audio(half)
    assert len(load_audio(full)) == 160_000


def test_float_audio_far_outside_full_scale_is_reported(tmp_path, caplog):
    path = tmp_path / "loud.wav"
    sf.write(path, np.full(16_000, 8.0, np.float32), 16_000, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="sedweak.audio"):
        waveform = load_audio(path)
    assert waveform.max() == pytest.approx(8.0)
    assert "loud.wav: float samples reach 8" in caplog.text


def test_atomic_writes_get_the_umask_mode_not_0600(tmp_path):
    from sedweak.io_utils import atomic_write_text

    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "metrics.json", "{}")
        wav = _wav(tmp_path / "a.wav")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and stat.S_IMODE(wav.stat().st_mode) == 0o644


@pytest.fixture
def tiny_model_path(tmp_path):
    from sedweak.models.crnn import build_crnn
    from sedweak.config import get_preset

    model = build_crnn(dataclasses.replace(get_preset("fast"), conv_filters=(4, 4, 4), rnn_units=(6,)), 2)
    return save_model(model, tmp_path / "m.keras", ModelInfo(("a", "b"), FeatureConfig(), PostprocessConfig(), 4, 2.0))


def test_predict_keys_files_by_their_path_under_the_input_folder(tiny_model_path, tmp_path):
    from sedweak.cli import main
    from sedweak.labels import read_strong_tsv

    for sub in ("a", "b"):
        _wav(tmp_path / "coll" / sub / "clip.wav")
    out = tmp_path / "e.tsv"
    result = CliRunner().invoke(main, ["predict", str(tiny_model_path), str(tmp_path / "coll"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "in 2 files" in result.output and set(read_strong_tsv(out)) == {"a/clip.wav", "b/clip.wav"}
    both = CliRunner().invoke(main, ["predict", str(tiny_model_path), str(tmp_path / "coll" / "a"),
                                     str(tmp_path / "coll" / "b"), "--out", str(out)])
    assert both.exit_code != 0 and "would both be reported as 'clip.wav'" in both.output


def test_an_unwritable_out_fails_before_the_work(tiny_model_path, tmp_path, monkeypatch):
    import sedweak.inference as inference
    from sedweak.cli import main

    (tmp_path / "file.tsv").write_text("")
    _wav(tmp_path / "a.wav")
    monkeypatch.setattr(inference, "predict_files", lambda *a, **k: pytest.fail("predicted before checking --out"))
    result = CliRunner().invoke(main, ["predict", str(tiny_model_path), str(tmp_path / "a.wav"),
                                       "--out", str(tmp_path / "file.tsv" / "x.tsv")])
    assert result.exit_code != 0 and "file.tsv is a file" in result.output and "Traceback" not in result.output


def test_score_takes_the_class_list_when_the_reference_lacks_a_class(tmp_path):
    from sedweak.cli import main

    header = "filename\tonset\toffset\tevent_label\n"
    (tmp_path / "ref.tsv").write_text(header + "x.wav\t1.0\t2.0\tBird\n")
    (tmp_path / "est.tsv").write_text(header + "x.wav\t1.0\t2.0\tBird\nx.wav\t3.0\t4.0\tAnimal\n")
    args = ["score", str(tmp_path / "ref.tsv"), str(tmp_path / "est.tsv")]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code != 0 and "--classes" in refused.output
    result = CliRunner().invoke(main, args + ["--classes", "Animal,Bird"])
    assert result.exit_code == 0, result.output and "Animal" in result.output


def test_one_bad_calibration_clip_is_skipped_and_reported(tmp_path, caplog):
    from sedweak.export.calibration import calibration_logmels

    info = ModelInfo(("a", "b"), FeatureConfig(), PostprocessConfig(), 4, 2.0)
    for name in ("a.wav", "c.wav"):
        _wav(tmp_path / name)
    (tmp_path / "b.wav").write_bytes(b"RIFF....WAVEbroken")
    with caplog.at_level(logging.WARNING, logger="sedweak.export.calibration"):
        clips = calibration_logmels(tmp_path, info)
    assert len(clips) == 2 and "skipped calibration clip" in caplog.text and "b.wav" in caplog.text
    (tmp_path / "a.wav").write_bytes(b"x")
    (tmp_path / "c.wav").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="none of its audio files"):
        calibration_logmels(tmp_path, info)


def test_a_tsv_saved_by_excel_with_a_bom_is_read(tmp_path):
    from sedweak.labels import read_strong_tsv

    path = tmp_path / "ref.tsv"
    path.write_bytes("filename\tonset\toffset\tevent_label\nx.wav\t1.0\t2.0\tBird\n".encode("utf-8-sig"))
    assert [e.label for e in read_strong_tsv(path)["x.wav"]] == ["Bird"]


def test_model_files_that_point_the_right_way(tiny_model_path):
    import json

    from sedweak.models.saving import ModelFileError, load_model

    cut = tiny_model_path.with_name("cut.keras")
    cut.write_bytes(tiny_model_path.read_bytes()[:2000])
    cut.with_suffix(".json").write_text(tiny_model_path.with_suffix(".json").read_text())
    with pytest.raises(ModelFileError, match="cut.keras: not a valid .keras archive"):
        load_model(cut)
    side = json.loads(tiny_model_path.with_suffix(".json").read_text())
    side["classes"] = ["a", "b", "c"]
    tiny_model_path.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(ModelFileError, match="lists 3 classes, the model in m.keras has 2 outputs"):
        load_model(tiny_model_path)


def test_int16x8_outside_streaming_says_why(tiny_model_path, tmp_path):
    from sedweak.cli import main

    result = CliRunner().invoke(main, ["export", str(tiny_model_path), "--mode", "int16x8", "--out",
                                       str(tmp_path / "x.tflite")])
    assert result.exit_code != 0 and "--streaming files only" in result.output


def test_the_runtime_names_missing_sidecar_keys(tmp_path):
    import json

    from sedweak_runtime import read_sidecar

    (tmp_path / "m.tflite").write_bytes(b"")
    (tmp_path / "m.tflite.json").write_text(json.dumps({"format": "sedweak-tflite-1", "mode": "float32",
                                                        "features": {"n_mels": 64}}))
    with pytest.raises(ValueError, match=r"m.tflite.json: missing keys \['input', 'classes'.*'features.hop_samples'"):
        read_sidecar(tmp_path / "m.tflite")


def test_train_reports_skipped_clips_once(tmp_path, monkeypatch):
    """Data preparation logs each skipped clip as it happens; the CLI then gives one count
    and the file that lists them (it used to repeat every line)."""
    import sedweak.training as training
    from sedweak.cli import main
    from sedweak.evaluation import METRIC_KEYS

    failures = (("train/a.wav", "truncated audio"), ("train/b.wav", "empty audio"))
    monkeypatch.setattr(training, "run", lambda config, workdir, resume=False: training.RunResult(
        tmp_path, tmp_path / "model.keras", {k: 0.5 for k in METRIC_KEYS}, 1, failures))
    (tmp_path / "r.yaml").write_text("train:\n  epochs: 1\n")
    result = CliRunner().invoke(main, ["train", str(tmp_path / "r.yaml"), "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    assert "truncated audio" not in result.output
    assert result.output.count("2 clip(s) skipped, listed in") == 1
