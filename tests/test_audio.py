"""Audio I/O: mono mix, resampling, errors that name the file, padding, atomic WAV writes."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from sedweak.audio import AudioError, fit_length, load_audio, write_wav


def _tone(freq_hz: float, rate_hz: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate_hz))) / rate_hz
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def test_stereo_is_mixed_to_mono_by_mean(tmp_path):
    left = np.linspace(-0.5, 0.5, 1600, dtype=np.float32)
    right = np.full(1600, 0.25, np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    mono = load_audio(path, 16000)
    assert mono.shape == (1600,) and mono.dtype == np.float32
    np.testing.assert_allclose(mono, (left + right) / 2, atol=1e-7)


def test_resample_44k1_to_16k_keeps_tone_frequency_and_length(tmp_path):
    path = tmp_path / "tone44.wav"
    sf.write(path, _tone(1000.0, 44100, 1.0), 44100, subtype="FLOAT")
    out = load_audio(path, 16000)
    assert out.shape == (16000,)  # 1 s stays 1 s
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    peak_hz = np.argmax(spectrum) * 16000 / len(out)  # 1 Hz bins
    assert peak_hz == pytest.approx(1000.0, abs=1.0)
    # Level kept too (soxr is a proper band-limited resampler): RMS of a 0.5 sine ~ 0.354.
    assert np.sqrt(np.mean(out[1000:-1000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_same_rate_is_read_unchanged(tmp_path):
    x = _tone(440.0, 16000, 0.1)
    path = tmp_path / "t.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path, 16000), x)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match=r"nothere\.wav: audio file not found"):
        load_audio(tmp_path / "nothere.wav")


def test_corrupt_bytes(tmp_path):
    path = tmp_path / "x.wav"
    path.write_bytes(b"this is not a RIFF file" * 50)
    with pytest.raises(AudioError, match=r"x\.wav: unreadable audio"):
        load_audio(path)


def test_empty_file_zero_samples(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), 16000, subtype="PCM_16")
    assert sf.info(str(path)).frames == 0
    with pytest.raises(AudioError, match=r"empty\.wav: empty audio"):
        load_audio(path)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "zero.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match=r"zero\.wav"):
        load_audio(path)


def test_nan_samples(tmp_path):
    x = _tone(440.0, 16000, 0.1)
    x[100] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: audio contains NaN"):
        load_audio(path)


def test_fit_length_pads_with_zeros_and_truncates():
    x = np.arange(1, 6, dtype=np.float32)
    np.testing.assert_array_equal(fit_length(x, 8), [1, 2, 3, 4, 5, 0, 0, 0])
    np.testing.assert_array_equal(fit_length(x, 3), [1, 2, 3])
    np.testing.assert_array_equal(fit_length(x, 5), x)
    batch = np.ones((2, 4), np.float32)
    assert fit_length(batch, 6).tolist() == [[1, 1, 1, 1, 0, 0]] * 2  # last axis only
    assert fit_length(batch, 2).shape == (2, 2)


def test_write_wav_round_trip_16_bit_and_atomic(tmp_path):
    x = _tone(440.0, 16000, 0.25, amplitude=0.9)
    x[:3] = [1.5, -1.5, 0.0]  # out of range: clipped, not wrapped
    path = write_wav(tmp_path / "sub" / "out.wav", x, 16000)
    assert path == tmp_path / "sub" / "out.wav"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["out.wav"]  # no temp files left
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    back = load_audio(path, 16000)
    expected = np.clip(x, -1.0, 1.0)
    np.testing.assert_allclose(back, expected, atol=1.0 / 32768 + 1e-7)
    assert back[0] == pytest.approx(32767 / 32768) and back[1] == -1.0


def test_write_wav_overwrites_in_place(tmp_path):
    path = tmp_path / "o.wav"
    write_wav(path, np.zeros(100, np.float32), 8000)
    write_wav(path, np.full(50, 0.5, np.float32), 8000)
    assert sf.info(str(path)).frames == 50
    assert [p.name for p in tmp_path.iterdir()] == ["o.wav"]
