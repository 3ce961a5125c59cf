"""Audio of any length through a fixed-window model, in memory that does not grow with it.

The model takes windows of the training clip (``clip_frames`` feature frames). A long
input is cut into windows with ~50 % overlap on the model-frame grid; the strong outputs
of overlapping windows are averaged frame by frame and the clip-level output is the
maximum over the windows. :class:`WindowStitcher` does this on rows that arrive in
pieces (log-mel frames, or hop-sized rows of samples for a waveform-input model): it
runs each window as soon as its rows are in and keeps only the rows and sums of the
windows still open, so reading a 30-minute file costs what a few windows cost; only the
output track itself, ``4 * classes`` bytes per model frame, grows with the input.

Both ``sedweak.inference`` (Keras) and :class:`sedweak_runtime.Detector` (LiteRT) use it,
so the two cut and stitch alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

# (windows (n, window_rows, ...)) -> (strong (n, model_frames, classes), weak (n, classes) or None)
RunWindows = Callable[[np.ndarray], tuple[np.ndarray, "np.ndarray | None"]]


def window_starts(num_frames: int, window_frames: int, hop_frames: int) -> list[int]:
    """Window start frames covering ``num_frames``; the last window ends at the end."""
    if num_frames <= window_frames:
        return [0]
    return list(range(0, num_frames - window_frames, hop_frames)) + [num_frames - window_frames]


@dataclass(frozen=True)
class WindowGrid:
    """Where the windows of an input of ``frames`` feature frames start.

    ``covered``: the feature frames behind one window's model frames; ``hop``: half of it,
    on the model-frame grid (every start is a multiple of ``time_pooling``, so overlapping
    outputs add up frame by frame).
    """

    window_frames: int
    time_pooling: int = 1

    @property
    def covered(self) -> int:
        return (self.window_frames // self.time_pooling) * self.time_pooling

    @property
    def hop(self) -> int:
        return max(self.time_pooling, (self.covered // 2) // self.time_pooling * self.time_pooling)

    def out_frames(self, frames: int) -> int:
        """Model frames of the stitched track before trimming (at least one window's)."""
        return max(-(-frames // self.time_pooling), self.covered // self.time_pooling)

    def starts(self, frames: int) -> list[int]:
        return window_starts(self.out_frames(frames) * self.time_pooling, self.covered, self.hop)


class WindowStitcher:
    """Rows in (any pieces), the stitched strong track and clip-level output out.

    Args:
        grid: the window grid.
        run_windows: runs a batch of windows, see :data:`RunWindows`.
        pad_row: the value of rows past the end (the log-mel silence floor, or 0 for samples).
        window_rows: rows one window reads (default ``grid.window_frames``; a waveform
            window of ``clip_samples`` reads ``ceil(clip_samples / hop_samples)`` rows).
        batch_size: windows per ``run_windows`` call.

    Call :meth:`push` with the rows in order, then :meth:`finish` once. A window runs
    when its rows are in and the input is known to reach past it (so it belongs to the
    start list of the whole input, :meth:`WindowGrid.starts`).
    """

    def __init__(self, grid: WindowGrid, run_windows: RunWindows, pad_row: float = 0.0,
                 window_rows: int | None = None, batch_size: int = 8):
        self.grid, self.run_windows, self.pad_row = grid, run_windows, float(pad_row)
        self.window_rows = grid.window_frames if window_rows is None else int(window_rows)
        self.batch_size = batch_size
        self._rows: np.ndarray | None = None   # buffered rows, the first one is row self._origin
        self._origin = 0
        self._seen = 0                          # rows pushed so far
        self._last = -1                         # the last window start run (-1: none yet)
        self._sums: np.ndarray | None = None    # (model frames, classes) from self._origin // pool
        self._counts: np.ndarray | None = None
        self._done: list[np.ndarray] = []       # final model frames, in order
        self.weak: np.ndarray | None = None

    def push(self, rows: np.ndarray) -> None:
        """The next rows, shape ``(n, ...)`` (a row: one feature frame, or ``hop`` samples)."""
        rows = np.asarray(rows, np.float32)
        if len(rows) == 0:
            return
        self._rows = rows if self._rows is None else np.concatenate([self._rows, rows])
        self._seen += len(rows)
        ready = []
        start = self._last + self.grid.hop if self._last >= 0 else 0
        # A start s is in the final list iff the whole input has more than s + covered frames.
        while self._seen >= max(start + self.grid.window_frames + 1, start + self.window_rows):
            ready.append(start)
            start += self.grid.hop
        self._run(ready)

    def finish(self, frames: int, tail: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """End of input: ``frames`` feature frames in all, ``tail`` rows that hold the last
        partial frame's samples (waveform rows). Returns (strong ``(max(1, frames // pool),
        classes)`` float32, weak ``(classes,)`` or None)."""
        if tail is not None and len(tail):
            self._rows = np.asarray(tail, np.float32) if self._rows is None else np.concatenate(
                [self._rows, np.asarray(tail, np.float32)])
        if self._rows is None:
            raise ValueError("no input rows")
        remaining = [s for s in self.grid.starts(frames) if s > self._last]
        needed = max(remaining) + self.window_rows - self._origin if remaining else 0
        if needed > len(self._rows):
            pad = np.full((needed - len(self._rows),) + self._rows.shape[1:], self.pad_row, np.float32)
            self._rows = np.concatenate([self._rows, pad])
        self._run(remaining, final=True)
        track = np.concatenate(self._done) if self._done else np.zeros((0, 0), np.float32)
        return track[:max(1, frames // self.grid.time_pooling)], self.weak

    def _run(self, starts: Sequence[int], final: bool = False) -> None:
        pool = self.grid.time_pooling
        for b in range(0, len(starts), self.batch_size):
            chunk = starts[b:b + self.batch_size]
            windows = np.stack([self._rows[s - self._origin:s - self._origin + self.window_rows] for s in chunk])
            strong, weak = self.run_windows(windows)
            strong = np.asarray(strong, np.float64)
            if weak is not None:
                top = np.asarray(weak, np.float32).max(axis=0)
                self.weak = top if self.weak is None else np.maximum(self.weak, top)
            end = max(chunk) // pool + strong.shape[1] - self._origin // pool
            self._grow(end, strong.shape[2])
            for s, probs in zip(chunk, strong):
                at = (s - self._origin) // pool
                self._sums[at:at + len(probs)] += probs
                self._counts[at:at + len(probs)] += 1
        if starts:
            self._last = max(starts)
        self._release(final)

    def _grow(self, frames: int, classes: int) -> None:
        if self._sums is None:
            self._sums, self._counts = np.zeros((0, classes)), np.zeros((0, 1))
        if frames > len(self._sums):
            extra = frames - len(self._sums)
            self._sums = np.concatenate([self._sums, np.zeros((extra, classes))])
            self._counts = np.concatenate([self._counts, np.zeros((extra, 1))])

    def _release(self, final: bool) -> None:
        """Hand over the model frames no later window touches; drop the rows behind them.

        Every later window starts after the last one run (the input's last window, aligned
        to its end, may start less than a hop after it), so everything before
        ``last + pool`` is final."""
        if self._sums is None:
            return
        pool = self.grid.time_pooling
        keep_from = len(self._sums) if final else max(0, (self._last + pool - self._origin) // pool)
        keep_from = min(keep_from, len(self._sums))
        if keep_from:
            self._done.append((self._sums[:keep_from] / np.maximum(self._counts[:keep_from], 1)).astype(np.float32))
            self._sums, self._counts = self._sums[keep_from:], self._counts[keep_from:]
            self._origin += keep_from * pool
            self._rows = self._rows[keep_from * pool:]
