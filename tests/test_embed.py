"""``sedweak embed``: vectors per file and per window, their times, the HDF5 file, bad input."""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from sedweak.cli import main
from sedweak.config import FeatureConfig, ModelConfig, PostprocessConfig
from sedweak.embeddings.extract import (
    EmbeddingFileError,
    EmbeddingModelError,
    embed_files,
    read_embeddings,
)
from sedweak.features import logmel_file
from sedweak.models.crnn import build_crnn
from sedweak.models.saving import ModelInfo, save_model

RATE = 16000
INFO = ModelInfo(("a", "b"), FeatureConfig(), PostprocessConfig(), 4, 1.0)   # 100-frame windows


def tone(path, seconds, hz=440.0):
    t = np.arange(int(seconds * RATE)) / RATE
    sf.write(path, (0.3 * np.sin(2 * np.pi * hz * t) * (1 + (t > seconds / 2))).astype(np.float32), RATE)
    return path


@pytest.fixture
def crnn(tmp_path):
    keras.utils.set_random_seed(0)
    config = ModelConfig(conv_filters=(4, 4), conv_pool_freq=(4, 4), conv_pool_time=(2, 2), rnn_units=(4,),
                         embedding_dim=8)
    model = build_crnn(config, 2, 64, INFO.clip_frames)
    return model, save_model(model, tmp_path / "m.keras", INFO)


@pytest.fixture
def audio(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    tone(folder / "long.wav", 2.5)
    tone(folder / "short.wav", 0.5, 880.0)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00not audio")
    return folder


def windows_at(logmel, starts):
    floor = 10 * np.log10(INFO.features.amin_power)
    out = np.full((len(starts), 100, 64), floor, np.float32)
    for i, s in enumerate(starts):
        out[i, :len(logmel[s:s + 100])] = logmel[s:s + 100]
    return out


def unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_one_vector_per_file_is_the_mean_of_predicts_windows(crnn, audio):
    """2.5 s = 250 frames: windows of 100 on predict's grid (hop 48 = half a window on the
    4-frame model grid) start at 0, 48, 96, 144 and 152 (the last ends at 252 >= 250); the
    0.5 s file is one window padded with the silence floor."""
    model, _ = crnn
    items = [(audio / "long.wav", "long.wav"), (audio / "short.wav", "short.wav"), (audio / "broken.wav", "broken.wav")]
    embeddings, failed = embed_files(model, INFO, items)
    assert embeddings.files == ("long.wav", "short.wav") and embeddings.hop_seconds == 0.0
    assert [p for p, _ in failed] == [str(audio / "broken.wav")]
    np.testing.assert_allclose(embeddings.start_seconds, [0, 0])
    np.testing.assert_allclose(embeddings.end_seconds, [2.5, 0.5])
    np.testing.assert_allclose(np.linalg.norm(embeddings.vectors, axis=1), 1.0, atol=1e-6)
    long = logmel_file(audio / "long.wav", INFO.features)
    assert long.shape[0] == 250
    by_hand = model.predict_on_batch(windows_at(long, [0, 48, 96, 144, 152]))["embedding"]
    np.testing.assert_allclose(embeddings.vectors[0], unit(np.asarray(by_hand).mean(axis=0)), atol=1e-5)
    short = model.predict_on_batch(windows_at(logmel_file(audio / "short.wav", INFO.features), [0]))["embedding"]
    np.testing.assert_allclose(embeddings.vectors[1], unit(np.asarray(short)[0]), atol=1e-5)


def test_hop_gives_one_vector_per_window_with_its_times(crnn, audio):
    model, _ = crnn
    embeddings, _ = embed_files(model, INFO, [(audio / "long.wav", "long.wav")], hop_seconds=1.0)
    assert embeddings.files == ("long.wav",) * 3
    np.testing.assert_allclose(embeddings.start_seconds, [0.0, 1.0, 2.0])
    np.testing.assert_allclose(embeddings.end_seconds, [1.0, 2.0, 2.5])
    logmel = logmel_file(audio / "long.wav", INFO.features)
    by_hand = np.asarray(model.predict_on_batch(windows_at(logmel, [0, 100, 200]))["embedding"])
    np.testing.assert_allclose(embeddings.vectors, unit(by_hand), atol=1e-5)


def test_cli_writes_reads_back_and_reports_skipped_files(crnn, audio, tmp_path):
    _, path = crnn
    out = tmp_path / "emb.h5"
    result = CliRunner().invoke(main, ["embed", str(path), str(audio), "--out", str(out), "--hop", "0.5"])
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "broken.wav" in result.output
    embeddings = read_embeddings(out)
    assert embeddings.files == ("long.wav",) * 5 + ("short.wav",)
    assert embeddings.hop_seconds == 0.5 and embeddings.window_seconds == 1.0 and embeddings.model == str(path)
    strict = CliRunner().invoke(main, ["embed", str(path), str(audio), "--out", str(tmp_path / "s.h5"), "--strict"])
    assert strict.exit_code == 1 and "--strict: 1 of 3 files skipped" in strict.output
    assert (tmp_path / "s.h5").is_file()


def test_bad_input_is_named(crnn, tmp_path):
    model, path = crnn
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["embed", str(path), str(empty), "--out", str(tmp_path / "e.h5")])
    assert result.exit_code == 1 and "no audio files" in result.output
    tone(empty / "x.wav", 1.0)
    result = CliRunner().invoke(main, ["embed", str(path), str(empty), "--out", str(tmp_path / "e.h5"), "--hop", "0"])
    assert result.exit_code != 0 and "--hop" in result.output
    # a model whose outputs hold no embedding
    inputs = keras.Input((100, 64))
    pooled = keras.layers.GlobalAveragePooling1D()(inputs)
    headless = keras.Model(inputs, {"strong": keras.layers.Reshape((1, 2))(keras.layers.Dense(2)(pooled)),
                                    "weak": keras.layers.Dense(2, name="weak")(pooled)})
    headless_path = save_model(headless, tmp_path / "headless.keras", INFO)
    result = CliRunner().invoke(main, ["embed", str(headless_path), str(empty), "--out", str(tmp_path / "e.h5")])
    assert result.exit_code == 1 and "has no 'embedding' output" in result.output
    with pytest.raises(EmbeddingModelError, match="no 'embedding' output"):
        embed_files(headless, INFO, [(empty / "x.wav", "x.wav")])


def test_reading_a_bad_embeddings_file_names_it(tmp_path):
    with pytest.raises(EmbeddingFileError, match="not found"):
        read_embeddings(tmp_path / "none.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(EmbeddingFileError, match="text.h5: not a readable HDF5"):
        read_embeddings(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5.create_dataset("embeddings", data=np.zeros((2, 3)))
    with pytest.raises(EmbeddingFileError, match="other.h5: not a sedweak embeddings file .*file"):
        read_embeddings(tmp_path / "other.h5")
