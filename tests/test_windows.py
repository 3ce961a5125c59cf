"""Window cutting and stitching of long inputs (sedweak_runtime.windows), the one
implementation behind ``sedweak predict`` and ``sedweak-detect``."""

from __future__ import annotations

import numpy as np
import pytest

from sedweak_runtime.windows import WindowGrid, WindowStitcher


def fake_model(pool: int, classes: int = 3):
    """A deterministic window -> (strong, weak): model frame j = mean of its pooled rows,
    one value per class shifted by the class index; weak = max over frames."""
    def run(windows):
        n, rows = windows.shape[:2]
        frames = rows // pool
        flat = windows.reshape(n, rows, -1).mean(axis=2)[:, :frames * pool]
        strong = flat.reshape(n, frames, pool).mean(axis=2)[..., None] + np.arange(classes)
        return strong, strong.max(axis=1)
    return run


def whole_input_reference(rows: np.ndarray, window: int, pool: int, pad: float, run):
    """Every window cut from the whole (padded) input at once: the definition."""
    grid = WindowGrid(window, pool)
    frames = len(rows)
    starts = grid.starts(frames)
    padded = np.concatenate([rows, np.full((max(0, starts[-1] + window - frames),) + rows.shape[1:], pad)])
    strong, weak = run(np.stack([padded[s:s + window] for s in starts]))
    out = grid.out_frames(frames)
    total, count = np.zeros((out, strong.shape[2])), np.zeros((out, 1))
    for s, probs in zip(starts, strong):
        total[s // pool:s // pool + len(probs)] += probs
        count[s // pool:s // pool + len(probs)] += 1
    return (total / np.maximum(count, 1))[:max(1, frames // pool)], weak.max(axis=0)


@pytest.mark.parametrize("pool", [1, 2, 4])
@pytest.mark.parametrize("frames", [1, 7, 40, 41, 99, 100, 101, 250, 1003])
def test_stitching_in_pieces_equals_the_whole_input(pool, frames):
    rng = np.random.default_rng(frames * 10 + pool)
    window = 40
    rows = rng.normal(size=(frames, 5)).astype(np.float32)
    expected_strong, expected_weak = whole_input_reference(rows, window, pool, -100.0, fake_model(pool))
    stitcher = WindowStitcher(WindowGrid(window, pool), fake_model(pool), pad_row=-100.0, batch_size=3)
    at = 0
    while at < frames:
        step = int(rng.integers(1, 60))
        stitcher.push(rows[at:at + step])
        at += step
    strong, weak = stitcher.finish(frames)
    np.testing.assert_allclose(strong, expected_strong, atol=1e-5)
    np.testing.assert_allclose(weak, expected_weak, atol=1e-5)


def test_memory_holds_a_few_windows_whatever_the_length():
    """Buffered rows stay under two windows while 200 windows' worth stream through."""
    window, pool = 40, 2
    stitcher = WindowStitcher(WindowGrid(window, pool), fake_model(pool), pad_row=0.0)
    largest = 0
    for _ in range(400):
        stitcher.push(np.ones((20, 5), np.float32))
        largest = max(largest, len(stitcher._rows), len(stitcher._sums if stitcher._sums is not None else []) * pool)
    strong, _ = stitcher.finish(8000)
    assert largest <= 2 * window + 20
    assert strong.shape == (4000, 3)
    np.testing.assert_allclose(strong[:, 0], 1.0)


def test_finish_without_rows_is_an_error():
    with pytest.raises(ValueError, match="no input rows"):
        WindowStitcher(WindowGrid(40), fake_model(1)).finish(0)
