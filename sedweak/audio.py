"""Audio in and out: anything soundfile reads, mixed to mono, resampled, checked.

Every failure raises :class:`AudioError` with the file name and what is wrong,
so long runs can skip and report a bad clip instead of dying.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
from sedweak_runtime.audio import AudioInfo, check_length, file_blocks

from sedweak.errors import UserError

log = logging.getLogger(__name__)
# A float file peaking above this (6 dB over full scale) is reported: probably not normalised.
FLOAT_PEAK_WARNING = 2.0


class AudioError(UserError, ValueError):
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
            info = AudioInfo(audio)
            data = audio.read(dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise AudioError(f"{path}: unreadable audio ({err})") from None
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    check_length(path, data.shape[0], info, AudioError)
    _warn_float_peak(path, data, info)
    waveform = data.mean(axis=1)  # mix to mono
    if info.sample_rate_hz != sample_rate_hz:
        waveform = resample(waveform, info.sample_rate_hz, sample_rate_hz)
    return np.ascontiguousarray(waveform, dtype=np.float32)


# Seconds of audio per block of :func:`audio_blocks` (about 2 MB of float32 at 16 kHz).
BLOCK_SECONDS = 30.0


def audio_blocks(path: str | Path, sample_rate_hz: int = 16000,
                 block_seconds: float | None = None) -> Iterator[np.ndarray]:
    """:func:`load_audio` in blocks read from disk as they are consumed, so memory does
    not grow with the file's length: mono float32 blocks of about ``block_seconds``
    (default :data:`BLOCK_SECONDS`) at ``sample_rate_hz`` (resampled as a stream by
    soxr: the same numbers as one call).

    The same checks and :class:`AudioError` (the block reader is the device runtime's,
    :func:`sedweak_runtime.audio.file_blocks`); a truncated or empty file is known only
    at its end, so that error comes after the blocks read before it.
    """
    import soxr

    info, blocks = file_blocks(path, block_seconds or BLOCK_SECONDS, AudioError)
    stream = (soxr.ResampleStream(info.sample_rate_hz, sample_rate_hz, 1, dtype="float32", quality="HQ")
              if info.sample_rate_hz != sample_rate_hz else None)
    warned = False
    for data in blocks:
        warned = _warn_float_peak(path, data, info, warned)
        mono = data.mean(axis=1)
        if stream is not None:
            mono = stream.resample_chunk(mono)
        if len(mono):
            yield np.ascontiguousarray(mono, dtype=np.float32)
    if stream is not None:
        tail = stream.resample_chunk(np.zeros(0, np.float32), last=True)
        if len(tail):
            yield np.ascontiguousarray(tail, dtype=np.float32)


def _warn_float_peak(path, data: np.ndarray, info: AudioInfo, warned: bool = False) -> bool:
    """Report (once) float samples far outside [-1, 1]; returns whether it has been reported."""
    if warned or info.subtype not in ("FLOAT", "DOUBLE") or not data.size:
        return warned
    peak = float(np.max(np.abs(data)))
    if peak > FLOAT_PEAK_WARNING:
        log.warning("%s: float samples reach %.3g, far outside [-1, 1] (not normalised?); used as they are",
                    path, peak)
        return True
    return False


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
