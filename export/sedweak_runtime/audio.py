"""Reading audio files in blocks, checked: the one reader of the runtime and of ``sedweak``.

:func:`file_blocks` opens a file with soundfile and yields its samples block by block
(``(frames, channels)`` float32), so a file of any length costs one block of memory. It
names the file in every error: unreadable, NaN / inf samples, and -- known only at the
end -- empty or truncated (fewer frames than the header announces; for WAV the RIFF
``data`` chunk's own size is read too, since libsndfile shortens a cut-off file's count to
what it holds). The caller chooses the error type (``sedweak`` raises its ``AudioError``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np

BLOCK_SECONDS = 30.0   # seconds per block (about 2 MB of float32 at 16 kHz)


class AudioInfo:
    """What a file's header says: sample rate, frames announced, container, sample type."""

    def __init__(self, audio):
        self.sample_rate_hz, self.frames = audio.samplerate, audio.frames
        self.container, self.subtype = audio.format, audio.subtype


def file_blocks(path: str | Path, block_seconds: float | None = None, error: Callable[[str], Exception] = ValueError,
                check: Callable[[AudioInfo], None] | None = None) -> tuple[AudioInfo, Iterator[np.ndarray]]:
    """(header, blocks of ``(frames, channels)`` float32 samples of about ``block_seconds``).

    ``check(header)`` runs before any sample is read (e.g. a sample-rate test). The file is
    closed when the blocks are exhausted (or the iterator is dropped)."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: audio file not found")
    try:
        audio = sf.SoundFile(str(path))
    except Exception as err:  # soundfile raises several types; LibsndfileError has the reason alone
        reason = getattr(err, "error_string", None) or str(err)
        raise error(f"{path}: unreadable audio ({' '.join(str(reason).split())})") from None
    info = AudioInfo(audio)
    if check is not None:
        try:
            check(info)
        except BaseException:
            audio.close()
            raise
    block = max(1, int(round((block_seconds or BLOCK_SECONDS) * info.sample_rate_hz)))

    def blocks() -> Iterator[np.ndarray]:
        with audio:
            total = 0
            while True:
                try:
                    data = audio.read(block, dtype="float32", always_2d=True)
                except Exception as err:
                    raise error(f"{path}: unreadable audio at sample {total} ({err})") from None
                total += data.shape[0]
                if not np.all(np.isfinite(data)):
                    raise error(f"{path}: NaN or infinite samples")
                if data.shape[0] < block:
                    check_length(path, total, info, error)
                if data.shape[0]:
                    yield data
                if data.shape[0] < block:
                    return

    return info, blocks()


def check_length(path: Path, read: int, info: AudioInfo, error: Callable[[str], Exception] = ValueError) -> None:
    """``error`` when no frame was read, or fewer than the header announces."""
    if read == 0:
        raise error(f"{path}: empty audio (no samples)")
    # mpg123's length of a VBR MP3 without a Xing header is an estimate: not a truncation test
    declared = info.frames if info.container != "MPEG" else read
    if info.container in ("WAV", "WAVEX"):
        declared = max(declared, declared_wav_frames(path) or 0)
    if read < declared:
        raise error(f"{path}: truncated audio ({read} of the {declared} frames its header announces)")


def declared_wav_frames(path: Path) -> int | None:
    """Frames a RIFF/WAVE file's ``data`` chunk claims (PCM, float, A-law, µ-law), else None.

    libsndfile shortens a truncated WAV's frame count to what the file holds, so a cut-off
    file reads without error; the header's own data size tells."""
    try:
        with open(path, "rb") as f:
            riff = f.read(12)
            if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
                return None
            block_align = None
            while True:
                header = f.read(8)
                if len(header) < 8:
                    return None
                chunk, size = header[:4], int.from_bytes(header[4:], "little")
                if chunk == b"fmt ":
                    fmt = f.read(size)
                    if len(fmt) < 14 or int.from_bytes(fmt[:2], "little") not in (1, 3, 6, 7, 0xFFFE):
                        return None
                    block_align = int.from_bytes(fmt[12:14], "little")
                    f.seek(size & 1, 1)
                elif chunk == b"data":
                    # 0 and 0xFFFFFFFF: written by a streaming writer that never came back to fill it in
                    if not block_align or size in (0, 0xFFFFFFFF):
                        return None
                    return size // block_align
                else:
                    f.seek(size + (size & 1), 1)
    except OSError:
        return None


def read_blocks(path: str | Path, sample_rate_hz: int, block_seconds: float | None = None) -> Iterator[np.ndarray]:
    """The mono float32 waveform (channels averaged) of a file already at ``sample_rate_hz``,
    in blocks read as they are consumed: memory does not grow with the file. ValueError
    naming the file for every problem of :func:`file_blocks`, and for another sample rate
    (no resampling on the device)."""
    def same_rate(info: AudioInfo) -> None:
        if info.sample_rate_hz != sample_rate_hz:
            raise ValueError(f"{path}: sample rate {info.sample_rate_hz} Hz, the model needs {sample_rate_hz} Hz "
                             f"(no resampling on the device: convert the file first)")

    _, blocks = file_blocks(path, block_seconds, ValueError, same_rate)
    for data in blocks:
        yield data.mean(axis=1)


def read_audio(path: str | Path, sample_rate_hz: int) -> np.ndarray:
    """The whole of :func:`read_blocks` as one array (samples,)."""
    return np.concatenate(list(read_blocks(path, sample_rate_hz)))
