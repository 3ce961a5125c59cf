"""A batch never dies on one clip: `sedweak predict` and `sedweak saliency` report a file
that fails (unreadable audio, or an error while running the model) as `skipped FILE:
reason`, write what succeeded, and exit non-zero only when nothing succeeded or with
--strict."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from click.testing import CliRunner

from sedweak.models.saving import ModelInfo, save_model
from sedweak.audio import write_wav
from sedweak.config import FeatureConfig, PostprocessConfig


@pytest.fixture
def model_and_audio(tmp_path):
    from sedweak.models.crnn import build_crnn
    from sedweak.config import get_preset

    model = build_crnn(dataclasses.replace(get_preset("fast"), conv_filters=(4, 4, 4), rnn_units=(6,)), 2)
    info = ModelInfo(("a", "b"), FeatureConfig(), PostprocessConfig(), 4, 2.0)
    model_path = save_model(model, tmp_path / "m.keras", info)
    audio = tmp_path / "audio"
    rng = np.random.default_rng(0)
    for name in ("good1.wav", "boom.wav", "good2.wav"):
        write_wav(audio / name, 0.1 * rng.standard_normal(24_000).astype(np.float32), 16_000)
    (audio / "corrupt.wav").write_bytes(b"RIFF\x00\x00not audio at all")
    return model_path, audio


def _explode_on_boom(monkeypatch):
    import sedweak.inference as inference

    real = inference.predict_file_outputs

    def predict_file_outputs(model, path, info, batch_size=8):
        if path.name == "boom.wav":
            raise RuntimeError("tflite/kernels/div.cc:262 data[i] != zero_point was not true.")
        return real(model, path, info, batch_size)

    monkeypatch.setattr(inference, "predict_file_outputs", predict_file_outputs)


def test_predict_skips_failing_files_and_writes_the_rest(model_and_audio, tmp_path, monkeypatch):
    from sedweak.cli import main
    from sedweak.labels import read_strong_tsv

    model_path, audio = model_and_audio
    _explode_on_boom(monkeypatch)
    out = tmp_path / "e.tsv"
    result = CliRunner().invoke(main, ["predict", str(model_path), str(audio), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"skipped {audio / 'corrupt.wav'}" in result.output
    assert f"skipped {audio / 'boom.wav'}: RuntimeError: tflite/kernels/div.cc" in result.output
    assert "in 2 files" in result.output and "(2 skipped)" in result.output
    assert set(read_strong_tsv(out)) == {"good1.wav", "good2.wav"}


def test_predict_strict_fails_but_keeps_the_tsv(model_and_audio, tmp_path):
    from sedweak.cli import main

    model_path, audio = model_and_audio
    out = tmp_path / "e.tsv"
    result = CliRunner().invoke(main, ["predict", str(model_path), str(audio), "--out", str(out), "--strict"])
    assert result.exit_code == 1 and "--strict: 1 of 4 files skipped" in result.output
    assert out.is_file()


def test_predict_fails_when_nothing_succeeds(model_and_audio, tmp_path):
    from sedweak.cli import main

    model_path, audio = model_and_audio
    result = CliRunner().invoke(main, ["predict", str(model_path), str(audio / "corrupt.wav"),
                                       "--out", str(tmp_path / "e.tsv")])
    assert result.exit_code == 1 and "no file could be processed" in result.output
    assert not (tmp_path / "e.tsv").exists()
