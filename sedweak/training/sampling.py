"""Imbalance and multi-label: balanced clip sampling and class weights (NumPy only, seeded).

``weak`` below is a clip label matrix (clips, classes) in {0, 1}.

Balanced sampling (AudioSet / PANNs style). Draws come in rounds; a round visits every
group once, in a shuffled order, and draws one clip from the group. A group is a class
(the clips that contain it: multi-label clips belong to several groups) plus, when the split
has clips without any label, one "no event" group, so the detector still sees silence and
background. Each group deals its clips from a shuffled deck, reshuffled when exhausted: every
clip of a rare class is seen before any is repeated. Label frequencies in the draws approach
uniform; co-occurring labels keep them from being exactly so.

Class weighting. Per-class BCE weights cannot be passed to ``MaskedBinaryCrossentropy``
without changing it, so they are folded into one weight per clip, applied through Keras
``sample_weight`` to the strong and weak losses alike: the mean weight of the clip's positive
classes (1 for a clip without labels), normalised to mean 1 over the split so the learning
rate keeps its meaning. This is an approximation: it scales every class term of a clip,
negatives included, by the weight of its positives. The exact form needs a ``class_weights``
argument in ``MaskedBinaryCrossentropy`` multiplying ``bce`` by a (classes,) vector.
"""

from __future__ import annotations

import numpy as np

from sedweak.errors import DataError

WEIGHTINGS = ("none", "inverse_frequency", "sqrt_inverse")


def class_counts(weak: np.ndarray) -> np.ndarray:
    """(classes,) int: clips containing each class."""
    return (np.asarray(weak) > 0).sum(axis=0).astype(np.int64)


def class_weights(weak: np.ndarray, mode: str) -> np.ndarray:
    """(classes,) float32 per-class weights from label counts n_c.

    ``inverse_frequency``: w_c proportional to 1 / n_c; ``sqrt_inverse``: to 1 / sqrt(n_c);
    ``none``: 1. Scaled so that the positive-weighted mean sum_c n_c w_c / sum_c n_c is 1.
    A class without positives gets weight 0 (it never contributes a positive).
    """
    if mode not in WEIGHTINGS:
        raise ValueError(f"class weighting must be one of {WEIGHTINGS}, got {mode!r}")
    counts = class_counts(weak).astype(np.float64)
    if mode == "none" or counts.sum() == 0:
        return np.ones(len(counts), np.float32)
    raw = np.zeros_like(counts)
    present = counts > 0
    raw[present] = 1.0 / counts[present] if mode == "inverse_frequency" else 1.0 / np.sqrt(counts[present])
    return (raw * counts.sum() / (counts * raw).sum()).astype(np.float32)


def positive_mean_weights(weak: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(clips,) float32: mean class weight of each clip's positives; 1 for a clip without any."""
    positive = np.asarray(weak) > 0
    count = positive.sum(axis=1)
    total = (positive * np.asarray(weights)[None, :]).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), 1.0).astype(np.float32)


def example_weights(weak: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(clips,) float32: :func:`positive_mean_weights` scaled to mean 1 over the clips."""
    per_clip = positive_mean_weights(weak, weights)
    return (per_clip / per_clip.mean()).astype(np.float32) if len(per_clip) else per_clip


def sampling_groups(weak: np.ndarray) -> list[np.ndarray]:
    """Clip indices per non-empty class, then the clips without labels (when there are any)."""
    positive = np.asarray(weak) > 0
    groups = [np.flatnonzero(positive[:, c]) for c in range(positive.shape[1])]
    groups = [g for g in groups if len(g)]
    empty = np.flatnonzero(~positive.any(axis=1))
    return groups + ([empty] if len(empty) else [])


def balanced_order(weak: np.ndarray, num_draws: int, rng: np.random.Generator) -> np.ndarray:
    """(num_draws,) clip indices drawn group round-robin (see the module docstring)."""
    groups = sampling_groups(weak)
    if not groups:
        raise DataError("balanced sampling needs at least one clip")
    decks = [rng.permutation(g) for g in groups]
    positions = [0] * len(groups)
    out = np.empty(num_draws, np.int64)
    round_order: list[int] = []
    for draw in range(num_draws):
        if not round_order:
            round_order = rng.permutation(len(groups)).tolist()
        g = round_order.pop()
        if positions[g] == len(decks[g]):
            decks[g], positions[g] = rng.permutation(groups[g]), 0
        out[draw] = decks[g][positions[g]]
        positions[g] += 1
    return out
