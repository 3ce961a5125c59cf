"""Audio files -> events with a ``.tflite`` CRNN exported by ``sedweak export`` and its sidecar."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .audio import read_audio, read_blocks
from .events import Event, probabilities_to_events
from .frontend import StreamingLogMel
from .interpreter import open_interpreter
from .models import StagedModel, StreamingModel
from .sidecar import read_sidecar
from .windows import WindowGrid, WindowStitcher

STREAM_PIECE_SECONDS = 0.1   # detect_file(stream=True) feeds the audio in pieces of this length


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

    def frame_probabilities(self, waveform: np.ndarray) -> np.ndarray:
        """Mono waveform (samples,) at the model rate -> strong (samples // hop // pool, classes)."""
        return self.stitched_probabilities([waveform])

    def stitched_probabilities(self, blocks: Iterable[np.ndarray]) -> np.ndarray:
        """A waveform given in blocks -> strong (samples // hop // pool, classes), holding only
        a few windows at a time (:mod:`sedweak_runtime.windows`); a streaming file runs its
        streaming step over the blocks."""
        if self.streaming is not None:
            return np.concatenate(list(self.stream(blocks)))
        hop = self.features["hop_samples"]
        waveform_input = self._input["kind"] == "waveform"
        grid = WindowGrid(self.meta["clip_frames"], self.meta["time_pooling"])
        if waveform_input:   # rows of hop samples, windows cut on the same frame grid
            clip_samples = self.meta["clip_samples"]
            stitcher = WindowStitcher(grid, lambda w: self._run_windows(w.reshape(len(w), -1)[:, :clip_samples]),
                                      pad_row=0.0, window_rows=-(-clip_samples // hop), batch_size=1)
        else:
            stitcher = WindowStitcher(grid, self._run_windows, pad_row=self._input["pad_value"], batch_size=1)
        front_end, rest, samples = StreamingLogMel(self.features), np.zeros(0, np.float32), 0
        for block in blocks:
            block = np.asarray(block, np.float32)
            samples += len(block)
            if waveform_input:
                rest = np.concatenate([rest, block])
                whole = len(rest) // hop * hop
                stitcher.push(rest[:whole].reshape(-1, hop))
                rest = rest[whole:]
            else:
                stitcher.push(front_end.push(block))
        if samples == 0:
            raise ValueError("no samples")
        if waveform_input:
            tail = np.pad(rest, (0, hop - len(rest)))[None] if len(rest) else None
        else:
            stitcher.push(front_end.flush())
            tail = None
        return stitcher.finish(samples // hop, tail)[0]

    def _run_windows(self, windows: np.ndarray):
        outputs = [self.window_outputs(x) for x in windows]
        weak = [o["weak"][0] for o in outputs] if all("weak" in o for o in outputs) else None
        return np.stack([o["strong"][0] for o in outputs]), None if weak is None else np.stack(weak)

    def read_audio(self, path: str | Path) -> np.ndarray:
        """Mono float32 waveform; the file must already be at the model's sample rate (see :func:`read_audio`)."""
        return read_audio(path, self.features["sample_rate_hz"])

    def detect_file(self, path: str | Path, name: str | None = None, stream: bool = False) -> list[Event]:
        """Events of one audio file, sorted by (onset, label); their ``filename`` is ``name``
        (default: the file's name). ``stream``: feed the audio through :meth:`stream` in
        pieces of :data:`STREAM_PIECE_SECONDS`, as a microphone would (streaming exports only)."""
        if stream and self.streaming is None:
            raise ValueError("stream=True needs a model exported with `sedweak export --streaming`")
        rate = self.features["sample_rate_hz"]
        if stream:   # a microphone's pieces
            step = max(1, int(round(STREAM_PIECE_SECONDS * rate)))
            blocks = read_blocks(path, rate, block_seconds=step / rate)
            probs = np.concatenate(list(self.stream(blocks)))
        else:        # blocks from disk through the window stitcher: flat memory
            probs = self.stitched_probabilities(read_blocks(path, rate))
        return probabilities_to_events(probs, self.meta, Path(path).name if name is None else name)
