"""Audio files -> events with a ``.tflite`` CRNN exported by ``sedweak export`` and its sidecar."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .events import Event, probabilities_to_events
from .frontend import StreamingLogMel, logmel
from .interpreter import open_interpreter
from .models import StagedModel, StreamingModel
from .sidecar import read_sidecar

STREAM_PIECE_SECONDS = 0.1   # detect_file(stream=True) feeds the audio in pieces of this length


def window_starts(num_frames: int, window_frames: int, hop_frames: int) -> list[int]:
    """Window start frames covering ``num_frames``; the last window ends at the end."""
    if num_frames <= window_frames:
        return [0]
    return list(range(0, num_frames - window_frames, hop_frames)) + [num_frames - window_frames]


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


def read_audio(path: str | Path, sample_rate_hz: int) -> np.ndarray:
    """A mono float32 waveform (channels averaged) of a file already at ``sample_rate_hz``.

    ValueError naming the file when it is unreadable, at another rate (no resampling on the
    device), empty, truncated (fewer frames than its header announces) or holds NaN / inf."""
    import soundfile as sf

    path = Path(path)
    try:
        with sf.SoundFile(str(path)) as audio:
            rate, announced, container = audio.samplerate, audio.frames, audio.format
            data = audio.read(dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises several types; LibsndfileError has the reason alone
        reason = getattr(err, "error_string", None) or str(err)
        raise ValueError(f"{path}: unreadable audio ({' '.join(str(reason).split())})") from None
    if rate != sample_rate_hz:
        raise ValueError(f"{path}: sample rate {rate} Hz, the model needs {sample_rate_hz} Hz "
                         f"(no resampling on the device: convert the file first)")
    if data.shape[0] == 0:
        raise ValueError(f"{path}: empty audio (no samples)")
    # mpg123's length of a VBR MP3 without a Xing header is an estimate: not a truncation test
    declared = announced if container != "MPEG" else data.shape[0]
    if container in ("WAV", "WAVEX"):
        declared = max(declared, declared_wav_frames(path) or 0)
    if data.shape[0] < declared:
        raise ValueError(f"{path}: truncated audio ({data.shape[0]} of the {declared} frames its header announces)")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{path}: NaN or infinite samples")
    return data.mean(axis=1)


class Detector:
    """A .tflite CRNN exported by ``sedweak export`` and its ``.tflite.json`` sidecar.

    Audio of any length is cut into windows of the training clip with ~50 % overlap on
    the model-frame grid; overlapping frame probabilities are averaged, then the
    stitched track is post-processed once (as ``sedweak.inference.predict_logmel``).
    """

    def __init__(self, model_path: str | Path, num_threads: int = 1):
        model_path = Path(model_path)
        self.meta = read_sidecar(model_path)
        self.classes = list(self.meta["classes"])
        self.features = self.meta["features"]
        interpreter = open_interpreter(model_path, num_threads=num_threads)
        self.staged = StagedModel.from_interpreter(interpreter, self.meta) if "staged" in self.meta else None
        self._runner = None if self.staged else interpreter.get_signature_runner(self.meta["signature"])
        self._input = self.meta["input"]
        self.streaming = StreamingModel(self._runner, self.meta) if "streaming" in self.meta else None

    def stream(self, audio_chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Audio pieces (any lengths, model rate) -> yields (frames, classes) probabilities as they
        complete; needs a ``--streaming`` export. Constant memory. A model frame comes out
        ``context_frames`` feature frames + ``n_fft // 2`` samples (the STFT centre padding)
        after its last feature frame, and at most one chunk later (see export/README.md)."""
        if self.streaming is None:
            raise ValueError("stream() needs a model exported with `sedweak export --streaming`")
        front_end = StreamingLogMel(self.features)
        self.streaming.reset()
        for piece in audio_chunks:
            probs = self.streaming.push(front_end.push(np.asarray(piece, np.float32)))
            if len(probs):
                yield probs
        yield self.streaming.push(front_end.flush(), final=True)

    def window_outputs(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """One window of the input shape without batch ((clip_frames, n_mels) dB, or
        (clip_samples,) for a waveform-input file) -> every output with its batch axis:
        {"strong": (1, model_frames, classes), "weak": (1, classes)}. Whole-clip and staged files."""
        if self.streaming is not None:
            raise ValueError("a streaming file has no windows: use stream() or frame_probabilities()")
        window = np.asarray(x, np.float32)[np.newaxis]
        if self.staged is not None:
            return self.staged(window)
        return {k: np.asarray(v) for k, v in self._runner(**{self._input["name"]: window}).items()}

    def _run_window(self, x: np.ndarray) -> np.ndarray:
        """One window of the input shape without batch -> strong (model_frames, classes)."""
        return self.window_outputs(x)["strong"][0]

    def frame_probabilities(self, waveform: np.ndarray) -> np.ndarray:
        """Mono waveform (samples,) at the model rate -> strong (samples // hop // pool, classes)."""
        if self.streaming is not None:   # the whole file through the streaming step (any length)
            return np.concatenate(list(self.stream([waveform])))
        pool, hop_samples = self.meta["time_pooling"], self.features["hop_samples"]
        window = self.meta["clip_frames"]
        covered = (window // pool) * pool
        hop = max(pool, (covered // 2) // pool * pool)
        frames = len(waveform) // hop_samples
        out_frames = max(-(-frames // pool), covered // pool)
        starts = window_starts(out_frames * pool, covered, hop)
        padded_frames = starts[-1] + window
        waveform_input = self._input["kind"] == "waveform"
        if waveform_input:   # windows cut from the waveform on the same frame grid
            source = np.zeros(max(len(waveform), starts[-1] * hop_samples + self.meta["clip_samples"]), np.float32)
            source[:len(waveform)] = waveform
        else:
            source = logmel(waveform, self.features)
            pad = max(0, padded_frames - frames)
            source = np.concatenate([source, np.full((pad, source.shape[1]), self._input["pad_value"], np.float32)])
        total = np.zeros((out_frames, len(self.classes)), np.float64)
        count = np.zeros((out_frames, 1), np.float64)
        for s in starts:
            x = (source[s * hop_samples:s * hop_samples + self.meta["clip_samples"]] if waveform_input
                 else source[s:s + window])
            probs = self._run_window(x)
            total[s // pool:s // pool + len(probs)] += probs
            count[s // pool:s // pool + len(probs)] += 1
        return (total / np.maximum(count, 1)).astype(np.float32)[:max(1, frames // pool)]

    def read_audio(self, path: str | Path) -> np.ndarray:
        """Mono float32 waveform; the file must already be at the model's sample rate (see :func:`read_audio`)."""
        return read_audio(path, self.features["sample_rate_hz"])

    def detect_file(self, path: str | Path, name: str | None = None, stream: bool = False) -> list[Event]:
        """Events of one audio file, sorted by (onset, label); their ``filename`` is ``name``
        (default: the file's name). ``stream``: feed the audio through :meth:`stream` in
        pieces of :data:`STREAM_PIECE_SECONDS`, as a microphone would (streaming exports only)."""
        if stream and self.streaming is None:
            raise ValueError("stream=True needs a model exported with `sedweak export --streaming`")
        waveform = self.read_audio(path)
        if stream:
            step = max(1, int(round(STREAM_PIECE_SECONDS * self.features["sample_rate_hz"])))
            probs = np.concatenate(list(self.stream(waveform[i:i + step] for i in range(0, len(waveform), step))))
        else:
            probs = self.frame_probabilities(waveform)
        return probabilities_to_events(probs, self.meta, Path(path).name if name is None else name)
