"""Evaluate a trained model on a dataset split: predictions -> events -> DCASE metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sedweak.artifacts import ModelInfo
from sedweak.config import EvalConfig
from sedweak.datasets.cache import CacheResult
from sedweak.datasets.folder import ClipSet
from sedweak.evaluation import score_events
from sedweak.inference import predict_logmel
from sedweak.labels import Event, write_strong_tsv
from sedweak.postprocessing import probabilities_to_events


def detect_cached(model, info: ModelInfo, features: CacheResult) -> tuple[dict[str, list[Event]], dict]:
    """Events and frame probabilities for every cached clip of a split."""
    events, probs = {}, {}
    for name, logmel in zip(features.filenames, features.features):
        track = predict_logmel(model, logmel, info)
        probs[name] = track
        events[name] = probabilities_to_events(track, info.classes, info.model_frames_per_second,
                                               name, info.postprocess)
    return events, probs


def evaluate_split(model, info: ModelInfo, clips: ClipSet, features: CacheResult,
                   eval_config: EvalConfig, out_tsv: Path | None = None) -> dict:
    """Metrics (keys of ``sedweak.evaluation.score_events``) on the strongly labelled clips."""
    events, _ = detect_cached(model, info, features)
    reference = {n: ev for n, ev in clips.strong_reference.items() if n in events}
    if not reference:
        raise ValueError(f"split {clips.name!r} has no strongly labelled clips to evaluate detection on")
    if out_tsv is not None:
        write_strong_tsv(out_tsv, events)
    estimated = {n: events[n] for n in reference}
    return score_events(reference, estimated, list(info.classes), eval_config)


def mean_probability_gap(probs: dict[str, np.ndarray]) -> float:  # pragma: no cover - debugging aid
    return float(np.mean([p.max() - p.min() for p in probs.values()]))
