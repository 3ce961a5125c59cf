"""Inference over audio of any length: windowing, stitching, events, file handling.

A fake model whose output for a model frame depends only on that frame's features
(strong probability = sigmoid of the mean of the ``time_pooling`` feature frames it
pools) makes the expected stitched output computable exactly: windows that overlap
agree, so stitching must reproduce the fake model applied to the whole input.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from scipy.special import expit
from sedweak_runtime.windows import window_starts

from sedweak.models.saving import ModelInfo
from sedweak.config import FeatureConfig, PostprocessConfig
from sedweak.inference import audio_files, predict_files, predict_logmel
from sedweak.labels import Event
from sedweak.postprocessing import probabilities_to_events

POOL = 4
CLASSES = ("event", "never")
FLOOR_DB = -100.0


def _info(clip_seconds: float = 1.0) -> ModelInfo:
    return ModelInfo(CLASSES, FeatureConfig(), PostprocessConfig(), POOL, clip_seconds)


def _framewise(logmel: np.ndarray) -> np.ndarray:
    """(frames, mels) -> (frames // POOL, 2): the fake model's maths on the whole input."""
    frames = logmel.shape[-2] // POOL * POOL
    pooled = logmel[..., :frames, :].reshape(*logmel.shape[:-2], frames // POOL, POOL * logmel.shape[-1])
    mean = pooled.mean(axis=-1).astype(np.float64)
    return np.stack([expit(mean), expit(mean - 1000.0)], axis=-1).astype(np.float32)


class FakeModel:
    def __init__(self, window_frames: int):
        self.window_frames = window_frames
        self.calls = []

    def predict_on_batch(self, x):
        assert x.dtype == np.float32 and x.ndim == 3
        assert x.shape[1] == self.window_frames  # always one training clip long
        self.calls.append(x.shape[0])
        return {"strong": _framewise(x), "weak": None}


@pytest.mark.parametrize("num_frames, window, hop, expected", [
    (1000, 1000, 500, [0]),
    (400, 1000, 500, [0]),
    (1001, 1000, 500, [0, 1]),
    (1500, 1000, 500, [0, 500]),
    (2500, 1000, 500, [0, 500, 1000, 1500]),
    (2600, 1000, 500, [0, 500, 1000, 1500, 1600]),
    (248, 100, 48, [0, 48, 96, 144, 148]),
])
def test_window_starts_golden(num_frames, window, hop, expected):
    starts = window_starts(num_frames, window, hop)
    assert starts == expected
    assert starts[-1] + window == max(num_frames, window)  # the last window ends at the end


def _logmel(frames: int, seed: int = 0) -> np.ndarray:
    # Varies inside each pooling block, so a window misaligned with the model frames shows.
    return np.random.default_rng(seed).normal(0.0, 2.0, (frames, 8)).astype(np.float32)


@pytest.mark.parametrize("clip_seconds, num_frames", [
    (10.0, 2500),   # 2.5 x a 10 s clip: hop 500, last window starts at 1500 (a model frame)
    (1.0, 248),     # 2.48 x a 1 s clip: last window starts at 148 (a model frame)
    (1.0, 100),     # exactly one window
    (1.0, 104),     # one model frame more: second window starts at 4
])
def test_stitching_equals_framewise_model(clip_seconds, num_frames):
    info = _info(clip_seconds)
    logmel = _logmel(num_frames)
    model = FakeModel(info.clip_frames)
    probs = predict_logmel(model, logmel, info, batch_size=3)
    assert probs.shape == (num_frames // POOL, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, _framewise(logmel), atol=1e-6)


@pytest.mark.parametrize("clip_seconds, num_frames", [(1.0, 250), (10.0, 2537), (1.0, 101)])  # 2.5 x 1 s, any, +1
def test_stitching_without_seams_for_any_length(clip_seconds, num_frames):
    info = _info(clip_seconds)
    logmel = _logmel(num_frames)
    probs = predict_logmel(FakeModel(info.clip_frames), logmel, info)
    assert probs.shape == (num_frames // POOL, 2)
    np.testing.assert_allclose(probs, _framewise(logmel), atol=1e-6)


def test_batches_of_windows():
    info = _info(1.0)
    model = FakeModel(100)
    predict_logmel(model, _logmel(292), info, batch_size=2)  # starts 0, 48, ..., 192: 5 windows
    assert model.calls == [2, 2, 1]


def test_short_input_is_padded_with_floor_and_cropped():
    info = _info(1.0)
    logmel = _logmel(70)
    seen = []

    class Recorder(FakeModel):
        def predict_on_batch(self, x):
            seen.append(x.copy())
            return super().predict_on_batch(x)

    probs = predict_logmel(Recorder(100), logmel, info)
    assert probs.shape == (70 // POOL, 2)
    np.testing.assert_allclose(probs, _framewise(logmel), atol=1e-6)
    (x,) = seen
    np.testing.assert_array_equal(x[0, :70], logmel)
    assert np.all(x[0, 70:] == pytest.approx(FLOOR_DB))
    # Shorter than one model frame: still one output frame.
    assert predict_logmel(FakeModel(100), _logmel(3), info).shape == (1, 2)


def test_event_across_window_boundary_comes_out_once():
    info = _info(1.0)  # windows [0, 100), [48, 148), [96, 196), ... at hop 48
    logmel = np.full((248, 8), -60.0, np.float32)
    logmel[80:140] = 5.0  # crosses the end of window 0 (100) and the start of window 2 (96)
    probs = predict_logmel(FakeModel(100), logmel, info)
    events = probabilities_to_events(probs, CLASSES, info.model_frames_per_second, "long.wav", info.postprocess)
    assert events == [Event("long.wav", 0.8, 1.4, "event")]


def test_audio_files_expands_folders(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/b.wav", "d/a.WAV", "d/sub/c.flac", "d/notes.txt", "d/sub/x.npy"):
        (tmp_path / name).write_bytes(b"")
    single = tmp_path / "single.ogg"
    out = audio_files([tmp_path / "d", str(single)])
    assert out == [tmp_path / "d" / "a.WAV", tmp_path / "d" / "b.wav", tmp_path / "d" / "sub" / "c.flac", single]
    assert all(isinstance(p, type(single)) for p in out)


def _files(tmp_path):
    t = np.arange(int(1.5 * 16000)) / 16000
    good = tmp_path / "good.wav"
    sf.write(good, (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), 16000, subtype="FLOAT")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio" * 30)
    return good, bad


def test_predict_files_reports_corrupt_file(tmp_path):
    good, bad = _files(tmp_path)
    info = _info(1.0)
    events, probs, failed = predict_files(FakeModel(100), info, [bad, good, tmp_path / "missing.wav"])
    assert set(events) == set(probs) == {"good.wav"}
    assert probs["good.wav"].shape == (150 // POOL, 2)
    assert [p for p, _ in failed] == [str(bad), str(tmp_path / "missing.wav")]
    assert "unreadable audio" in failed[0][1] and "not found" in failed[1][1]
    # The tone is loud in some mel bands only; the fake's class 0 fires when the mean
    # log-mel is > 0 dB, which a -10 dBFS tone never reaches: no events.
    assert events["good.wav"] == []


def test_predict_files_with_tiny_crnn(tmp_path):
    from sedweak.audio import load_audio
    from sedweak.config import ModelConfig
    from sedweak.features import logmel_librosa
    from sedweak.models.crnn import build_crnn

    config = ModelConfig(conv_filters=(4, 4, 4), conv_pool_time=(2, 2, 1), rnn_units=(4,), embedding_dim=4)
    model = build_crnn(config, num_classes=2, n_mels=64, num_frames=None)
    good, bad = _files(tmp_path)
    info = _info(1.0)
    events, probs, failed = predict_files(model, info, [good, bad])
    assert [p for p, _ in failed] == [str(bad)]
    track = probs["good.wav"]
    assert track.shape == (37, 2) and np.all((track >= 0) & (track <= 1))
    # The first model frames come from the first window only.
    logmel = logmel_librosa(load_audio(good), info.features)
    first = model.predict_on_batch(logmel[None, :100])["strong"][0]
    np.testing.assert_allclose(track[:12], np.asarray(first)[:12], atol=1e-5)


def _long_wav(path, seconds: float, rate: int = 16_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    samples = int(seconds * rate)
    tone = 0.3 * np.sin(2 * np.pi * 440.0 * np.arange(samples) / rate) * (np.arange(samples) // rate % 3 == 0)
    sf.write(path, (tone + 0.01 * rng.standard_normal(samples)).astype(np.float32), rate, subtype="PCM_16")
    return path


@pytest.mark.parametrize("rate", [16_000, 22_050])
def test_a_file_streamed_from_disk_equals_the_whole_file_at_once(tmp_path, monkeypatch, rate):
    """predict streams audio blocks (resampled by soxr as a stream) -> log-mel blocks ->
    windows; with blocks of 0.7 s the track equals the one of the whole file in one array."""
    import sedweak.audio
    from sedweak.audio import load_audio
    from sedweak.features import logmel_librosa
    from sedweak.inference import predict_file_outputs, predict_logmel

    path = _long_wav(tmp_path / "long.wav", 12.3, rate)
    info = _info(1.0)
    model = FakeModel(info.clip_frames)
    whole = predict_logmel(model, logmel_librosa(load_audio(path, 16_000), info.features), info)
    monkeypatch.setattr(sedweak.audio, "BLOCK_SECONDS", 0.7)
    streamed, _ = predict_file_outputs(model, path, info)
    assert streamed.shape == whole.shape == (1230 // POOL, 2)
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_memory_of_predict_does_not_grow_with_the_file(tmp_path):
    """Peak traced allocations for a 4-minute file stay within 1.3x those of a 1-minute
    file (holding the file would take 4x): audio blocks, log-mel blocks and a few windows."""
    import tracemalloc

    from sedweak.inference import predict_file_outputs

    info = _info(1.0)
    peaks = []
    for minutes in (1, 4):
        path = _long_wav(tmp_path / f"{minutes}.wav", 60.0 * minutes)
        tracemalloc.start()
        strong, _ = predict_file_outputs(FakeModel(info.clip_frames), path, info)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert strong.shape == (6000 * minutes // POOL, 2)
    assert peaks[1] < 1.3 * peaks[0], peaks
