"""Audio in and out: anything soundfile reads, mixed to mono, resampled, checked.

Every failure raises :class:`AudioError` with the file name and what is wrong,
so long runs can skip and report a bad clip instead of dying.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import soundfile as sf

log = logging.getLogger(__name__)
# A float file peaking above this (6 dB over full scale) is reported: probably not normalised.
FLOAT_PEAK_WARNING = 2.0


class AudioError(ValueError):
    """An audio file that cannot be used (missing, unreadable, empty, NaN...)."""


def load_audio(path: str | Path, sample_rate_hz: int = 16000) -> np.ndarray:
    """Read ``path``, mix to mono and resample to ``sample_rate_hz``.

    Returns:
        float32 waveform of shape (samples,), nominally in [-1, 1].
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        with sf.SoundFile(str(path)) as audio:
            native_rate, announced, container, subtype = audio.samplerate, audio.frames, audio.format, audio.subtype
            data = audio.read(dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise AudioError(f"{path}: unreadable audio ({err})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    declared = _declared_frames(path, announced, container, data.shape[0])
    if data.shape[0] < declared:
        raise AudioError(f"{path}: truncated audio ({data.shape[0]} of the {declared} frames its header announces)")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    peak = float(np.max(np.abs(data)))
    if subtype in ("FLOAT", "DOUBLE") and peak > FLOAT_PEAK_WARNING:
        log.warning("%s: float samples reach %.3g, far outside [-1, 1] (not normalised?); used as they are",
                    path, peak)
    waveform = data.mean(axis=1)  # mix to mono
    if native_rate != sample_rate_hz:
        waveform = resample(waveform, native_rate, sample_rate_hz)
    return np.ascontiguousarray(waveform, dtype=np.float32)


def _declared_frames(path: Path, announced: int, container: str, read: int) -> int:
    """Frames the file's header announces. libsndfile shortens a cut-off WAV's count to what
    the file holds, so for WAV the RIFF ``data`` chunk's own size is read too; an MP3's
    length is an estimate (no truncation test)."""
    if container == "MPEG":
        return read
    if container in ("WAV", "WAVEX"):
        from sedweak_runtime.detector import declared_wav_frames

        return max(announced, declared_wav_frames(path) or 0)
    return announced


def resample(waveform: np.ndarray, rate_in_hz: int, rate_out_hz: int) -> np.ndarray:
    """High-quality resampling (soxr, via librosa)."""
    import librosa

    return librosa.resample(waveform, orig_sr=rate_in_hz, target_sr=rate_out_hz, res_type="soxr_hq")


def fit_length(waveform: np.ndarray, num_samples: int) -> np.ndarray:
    """Zero-pad or truncate the last axis to ``num_samples`` (the papers pad short clips)."""
    current = waveform.shape[-1]
    if current >= num_samples:
        return waveform[..., :num_samples]
    pad = [(0, 0)] * (waveform.ndim - 1) + [(0, num_samples - current)]
    return np.pad(waveform, pad)


def write_wav(path: str | Path, waveform: np.ndarray, sample_rate_hz: int) -> Path:
    """Write 16-bit PCM WAV atomically (temporary file + rename)."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from sedweak.io_utils import default_file_mode

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".wav")
    os.fchmod(fd, default_file_mode())
    os.close(fd)
    try:
        sf.write(tmp, np.clip(waveform, -1.0, 1.0), sample_rate_hz, subtype="PCM_16")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
