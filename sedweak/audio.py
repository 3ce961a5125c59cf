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
    path = _existing(path)
    try:
        with sf.SoundFile(str(path)) as audio:
            native_rate, header = audio.samplerate, _Header(audio)
            data = audio.read(dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise AudioError(f"{path}: unreadable audio ({err})") from None
    _check_samples(path, data, header)
    _check_length(path, data.shape[0], header)
    waveform = data.mean(axis=1)  # mix to mono
    if native_rate != sample_rate_hz:
        waveform = resample(waveform, native_rate, sample_rate_hz)
    return np.ascontiguousarray(waveform, dtype=np.float32)


# Seconds of audio per block of :func:`audio_blocks` (about 2 MB of float32 at 16 kHz).
BLOCK_SECONDS = 30.0


def audio_blocks(path: str | Path, sample_rate_hz: int = 16000,
                 block_seconds: float | None = None) -> Iterator[np.ndarray]:
    """:func:`load_audio` in blocks read from disk as they are consumed, so memory does
    not grow with the file's length: mono float32 blocks of about ``block_seconds``
    (default :data:`BLOCK_SECONDS`) at ``sample_rate_hz`` (resampled as a stream by
    soxr: the same numbers as one call).

    The same checks and :class:`AudioError`; a truncated or empty file is known only at
    its end, so that error comes after the blocks read before it.
    """
    import soxr

    path = _existing(path)
    try:
        audio = sf.SoundFile(str(path))
    except Exception as err:
        raise AudioError(f"{path}: unreadable audio ({err})") from None
    with audio:
        native_rate, header = audio.samplerate, _Header(audio)
        stream = (soxr.ResampleStream(native_rate, sample_rate_hz, 1, dtype="float32", quality="HQ")
                  if native_rate != sample_rate_hz else None)
        block = max(1, int(round((block_seconds or BLOCK_SECONDS) * native_rate)))
        total, warned = 0, False
        while True:
            try:
                data = audio.read(block, dtype="float32", always_2d=True)
            except Exception as err:
                raise AudioError(f"{path}: unreadable audio at sample {total} ({err})") from None
            total += data.shape[0]
            last = data.shape[0] < block
            if data.shape[0]:
                warned = _check_samples(path, data, header, warned)
            if last:
                _check_length(path, total, header)
            mono = data.mean(axis=1)
            if stream is not None:
                mono = stream.resample_chunk(mono, last=last)
            if len(mono):
                yield np.ascontiguousarray(mono, dtype=np.float32)
            if last:
                return


class _Header:
    """What a file's header says: frames announced, container, sample type."""

    def __init__(self, audio: sf.SoundFile):
        self.frames, self.container, self.subtype = audio.frames, audio.format, audio.subtype


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    return path


def _check_samples(path: Path, data: np.ndarray, header: _Header, warned: bool = False) -> bool:
    """NaN / inf is an error; float samples far outside [-1, 1] are reported once. Returns
    whether the warning has been given."""
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    peak = float(np.max(np.abs(data))) if data.size else 0.0
    if not warned and header.subtype in ("FLOAT", "DOUBLE") and peak > FLOAT_PEAK_WARNING:
        log.warning("%s: float samples reach %.3g, far outside [-1, 1] (not normalised?); used as they are",
                    path, peak)
        return True
    return warned


def _check_length(path: Path, read: int, header: _Header) -> None:
    if read == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    declared = _declared_frames(path, header.frames, header.container, read)
    if read < declared:
        raise AudioError(f"{path}: truncated audio ({read} of the {declared} frames its header announces)")


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
