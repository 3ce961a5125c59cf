"""Per-class decision thresholds tuned on a validation split (F1-optimal).

For each threshold of a grid, the whole post-processing chain of
:func:`sedweak.postprocessing.probabilities_to_events` (median filter, threshold, gap
filling, minimum duration) turns the frame probabilities into events, and sed_eval scores
them once for every class at that threshold. Event- and segment-based class-wise F1 of
one class depend only on that class's events, so each class takes the grid threshold with
its best F1 (ties: the one nearest the default threshold). Grid search with the real
post-processing, rather than sed_scores_eval's threshold sweep of raw frame scores, because
the minimum duration and gap filling change which threshold is best.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from sedweak.config import EvalConfig, PostprocessConfig
from sedweak.labels import Event

TUNE_CRITERIA = ("event_f1", "segment_f1")
DEFAULT_GRID = tuple(round(0.1 * k, 2) for k in range(1, 10))   # 0.1 ... 0.9


def tune_thresholds(probabilities: Mapping[str, np.ndarray], reference: Mapping[str, Sequence[Event]],
                    classes: Sequence[str], frames_per_second: float, postprocess: PostprocessConfig,
                    evaluation: EvalConfig = EvalConfig(), criterion: str = "event_f1",
                    grid: Sequence[float] = DEFAULT_GRID) -> tuple[dict[str, float], dict[str, dict[float, float]]]:
    """F1-optimal threshold per class on a strongly labelled split.

    Args:
        probabilities: ``{filename: (frames, classes)}`` frame probabilities.
        reference: ``{filename: [Event, ...]}`` (every file of ``probabilities``).
        classes, frames_per_second: as the probabilities' columns and rate.
        postprocess: the chain whose thresholds are tuned (its other settings are kept).
        criterion: ``"event_f1"`` (collar-based) or ``"segment_f1"``, class-wise, sed_eval.
        grid: thresholds tried, each in (0, 1).

    Returns:
        ``({class: threshold}, {class: {threshold: F1}})``. A class without a reference
        event in the split keeps ``postprocess.threshold`` (no F1 can be measured for it).
    """
    from sedweak.evaluation.detection import evaluate_detection
    from sedweak.postprocessing import probabilities_to_events

    if criterion not in TUNE_CRITERIA:
        raise ValueError(f"criterion must be one of {TUNE_CRITERIA}, got {criterion!r}")
    if not grid or not all(0.0 < t < 1.0 for t in grid):
        raise ValueError(f"grid thresholds must be in (0, 1), got {list(grid)}")
    section = criterion.split("_")[0]
    curves: dict[str, dict[float, float]] = {c: {} for c in classes}
    for threshold in grid:
        config = dataclasses.replace(postprocess, threshold=float(threshold), class_thresholds=())
        events = {name: probabilities_to_events(p, classes, frames_per_second, name, config)
                  for name, p in probabilities.items()}
        scores = evaluate_detection({n: list(reference[n]) for n in probabilities}, events, classes, evaluation)
        for c in classes:
            curves[c][float(threshold)] = scores[section]["per_class"][c]["f1"]
    present = {e.label for name in probabilities for e in reference[name]}
    best = {}
    for c in classes:
        if c not in present:
            best[c] = float(postprocess.threshold)
            continue
        best[c] = max(curves[c], key=lambda t: (curves[c][t], -abs(t - postprocess.threshold)))
    return best, curves


def with_thresholds(postprocess: PostprocessConfig, thresholds: Mapping[str, float]) -> PostprocessConfig:
    """``postprocess`` with per-class ``class_thresholds`` set to ``thresholds``."""
    return dataclasses.replace(postprocess, class_thresholds=tuple((c, float(t)) for c, t in thresholds.items()))
