"""Audio files -> events (and clip embeddings) with a ``.tflite`` model exported by ``sedweak export``
and its sidecar; an embedding-only file gives clip embeddings alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .audio import read_audio, read_blocks
from .embedding import RunningMean
from .events import Event, probabilities_to_events
from .frontend import StreamingLogMel
from .interpreter import open_interpreter
from .models import StagedModel, StreamingModel
from .sidecar import has_detection, read_sidecar
from .windows import WindowGrid, WindowStitcher

STREAM_PIECE_SECONDS = 0.1   # detect_file(stream=True) feeds the audio in pieces of this length


@dataclass(frozen=True)
class FileResult:
    """What :meth:`Detector.analyse_file` finds in one audio file.

    ``events``: sorted by (onset, label); ``probabilities``: the stitched strong track
    (model frames, classes) float32; ``embedding``: the clip embedding (E,) float32 of unit
    length, for a file exported ``--with-embedding`` (else None): the mean of the windows'
    embeddings, re-normalised (as ``sedweak embed``), or for a streaming file the model's
    embedding of the whole stream. An embedding-only file (``Detector.detects`` False) gives
    no events (``[]``) and no probabilities (None).
    """

    events: list[Event]
    probabilities: np.ndarray | None
    embedding: np.ndarray | None = None


class Detector:
    """A .tflite CRNN exported by ``sedweak export`` and its ``.tflite.json`` sidecar.

    Audio of any length is cut into windows of the training clip with ~50 % overlap on
    the model-frame grid; overlapping frame probabilities are averaged, then the
    stitched track is post-processed once (as ``sedweak.inference.predict_logmel``).
    ``detects``: False for an embedding-only file (its one output the clip embedding): it is
    cut into the same windows, and gives their mean embedding, re-normalised, alone.
    """

    def __init__(self, model_path: str | Path, num_threads: int = 1):
        model_path = Path(model_path)
        self.model_path = model_path
        self.meta = read_sidecar(model_path)
        self.embedding = self.meta.get("embedding")          # the sidecar's section, None: no embedding
        self.detects = has_detection(self.meta)              # False: an embedding-only file
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

    def require_embedding(self) -> None:
        """ValueError naming the model file when it carries no clip embedding."""
        if self.embedding is None:
            raise ValueError(f"{self.model_path}: no clip embedding in this file (exported without "
                             "`sedweak export --with-embedding`)")

    def require_detection(self) -> None:
        """ValueError naming the model file when it gives no events (an embedding-only file)."""
        if not self.detects:
            raise ValueError(f"{self.model_path}: an embedding-only file (no strong / weak outputs): it gives clip "
                             "embeddings, not events; use analyse_file(...).embedding")

    def stream_embedding(self) -> np.ndarray:
        """(E,) unit-norm float32: the embedding of everything :meth:`stream` has consumed so far
        (of the whole stream once it has ended). Streaming files exported ``--with-embedding``."""
        if self.streaming is None:
            raise ValueError("stream_embedding() needs a model exported with `sedweak export --streaming`")
        self.require_embedding()
        return self.streaming.embedding()

    def window_outputs(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """One window of the input shape without batch ((clip_frames, n_mels) dB, or
        (clip_samples,) for a waveform-input file) -> every output with its batch axis:
        {"strong": (1, model_frames, classes), "weak": (1, classes)} and, for a file with an
        embedding, "embedding" (1, E) unit-norm (an embedding-only file: that alone). Whole-clip
        and staged files."""
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
        streaming step over the blocks. ValueError for an embedding-only file."""
        self.require_detection()
        return self.stitched_outputs(blocks)[0]

    def stitched_outputs(self, blocks: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """A waveform given in blocks -> (strong (samples // hop // pool, classes), or None for an
        embedding-only file; the clip embedding (E,) unit-norm, or None for a file without one);
        see :class:`FileResult`."""
        if self.streaming is not None:
            probs = np.concatenate(list(self.stream(blocks)))
            return probs, None if self.embedding is None else self.streaming.embedding()
        windows = None if self.embedding is None else RunningMean(self.embedding["dim"])
        run = lambda w: self._run_windows(w, windows)
        hop = self.features["hop_samples"]
        waveform_input = self._input["kind"] == "waveform"
        grid = WindowGrid(self.meta["clip_frames"], self.meta["time_pooling"])
        if waveform_input:   # rows of hop samples, windows cut on the same frame grid
            clip_samples = self.meta["clip_samples"]
            stitcher = WindowStitcher(grid, lambda w: run(w.reshape(len(w), -1)[:, :clip_samples]),
                                      pad_row=0.0, window_rows=-(-clip_samples // hop), batch_size=1)
        else:
            stitcher = WindowStitcher(grid, run, pad_row=self._input["pad_value"], batch_size=1)
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
        probs = stitcher.finish(samples // hop, tail)[0]
        return probs if self.detects else None, None if windows is None else windows.result()

    def _run_windows(self, windows: np.ndarray, embeddings: RunningMean | None = None):
        """Windows -> (strong, weak) for the stitcher; each window's embedding goes into ``embeddings``.
        An embedding-only file's strong track has no classes (the stitcher still walks the grid)."""
        outputs = [self.window_outputs(x) for x in windows]
        weak = [o["weak"][0] for o in outputs] if all("weak" in o for o in outputs) else None
        if embeddings is not None:
            embeddings.add(np.concatenate([o["embedding"] for o in outputs]))
        if not self.detects:
            return np.zeros((len(outputs), self.meta["clip_frames"] // self.meta["time_pooling"], 0), np.float32), None
        return np.stack([o["strong"][0] for o in outputs]), None if weak is None else np.stack(weak)

    def read_audio(self, path: str | Path) -> np.ndarray:
        """Mono float32 waveform; the file must already be at the model's sample rate (see :func:`read_audio`)."""
        return read_audio(path, self.features["sample_rate_hz"])

    def detect_file(self, path: str | Path, name: str | None = None, stream: bool = False) -> list[Event]:
        """Events of one audio file, sorted by (onset, label); their ``filename`` is ``name``
        (default: the file's name). ``stream``: feed the audio through :meth:`stream` in
        pieces of :data:`STREAM_PIECE_SECONDS`, as a microphone would (streaming exports only).
        ValueError for an embedding-only file."""
        self.require_detection()
        return self.analyse_file(path, name, stream).events

    def analyse_file(self, path: str | Path, name: str | None = None, stream: bool = False) -> FileResult:
        """Events, frame probabilities and (files exported ``--with-embedding``) the clip
        embedding of one audio file: see :class:`FileResult`; arguments as :meth:`detect_file`."""
        if stream and self.streaming is None:
            raise ValueError("stream=True needs a model exported with `sedweak export --streaming`")
        rate = self.features["sample_rate_hz"]
        if stream:   # a microphone's pieces
            step = max(1, int(round(STREAM_PIECE_SECONDS * rate)))
            blocks = read_blocks(path, rate, block_seconds=step / rate)
        else:        # blocks from disk through the window stitcher: flat memory
            blocks = read_blocks(path, rate)
        probs, embedding = self.stitched_outputs(blocks)
        if probs is None:                                    # an embedding-only file
            return FileResult([], None, embedding)
        events = probabilities_to_events(probs, self.meta, Path(path).name if name is None else name)
        return FileResult(events, probs, embedding)
