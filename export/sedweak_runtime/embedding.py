"""Clip embeddings of files exported ``sedweak export --with-embedding``.

The sidecar's ``embedding`` section says which output carries the embedding and how to
finish it (``finish``):

``final``         the output is the model's L2-normalised embedding of the window (1, E)
                  (whole-clip files);
``mean_then_l2``  the output holds per-frame projections ``Dense(x_t)`` (1, frames, E) (staged
                  and streaming files): their mean over a clip's frames, L2-normalised, is the
                  model's embedding of that clip (Dense is affine: the mean of ``W x_t + b`` is
                  ``W mean(x) + b``).

A file longer than one window gets the mean of its windows' embeddings, re-normalised
(as ``sedweak embed``); a stream gets the mean of all its frames' projections,
L2-normalised (the model's embedding of the whole stream as one clip).
"""

from __future__ import annotations

import numpy as np

FINISHES = ("final", "mean_then_l2")
EPSILON = 1e-12   # on the squared norm, as sedweak.models.layers.L2Normalize: a zero vector stays zero


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """(..., E) -> float32 rows of unit length (as the model's ``L2Normalize`` layer)."""
    vectors = np.asarray(vectors, np.float64)
    norms = np.sqrt(np.maximum(np.sum(vectors * vectors, axis=-1, keepdims=True), EPSILON))
    return (vectors / norms).astype(np.float32)


def window_embedding(output: np.ndarray, finish: str) -> np.ndarray:
    """One window's embedding output (float, batch 1) -> its clip embedding (1, E) float32:
    ``final`` outputs (1, E) are the model's own; ``mean_then_l2`` outputs (1, frames, E) are
    averaged over the frames, then L2-normalised."""
    output = np.asarray(output, np.float32)
    if finish == "final":
        return output
    if finish == "mean_then_l2":
        return l2_normalize(output.mean(axis=1, dtype=np.float64))
    raise ValueError(f"embedding finish {finish!r}: this runtime knows {FINISHES}")


class RunningMean:
    """The mean of vectors that arrive in pieces (window embeddings, or per-frame projections of
    a stream), L2-normalised on demand; constant memory (a float64 sum and a count)."""

    def __init__(self, dim: int):
        self.dim = int(dim)
        self.reset()

    def reset(self) -> None:
        self._sum, self.count = np.zeros(self.dim, np.float64), 0

    def add(self, vectors: np.ndarray) -> None:
        """(n, E) more vectors (n may be 0)."""
        vectors = np.asarray(vectors, np.float64).reshape(-1, self.dim)
        self._sum += vectors.sum(axis=0)
        self.count += len(vectors)

    def result(self) -> np.ndarray:
        """(E,) float32, unit length: the L2-normalised mean. ValueError before any vector."""
        if self.count == 0:
            raise ValueError("no frames yet: the embedding of an empty input is undefined")
        return l2_normalize(self._sum / self.count)
