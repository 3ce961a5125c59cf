"""Evaluate a trained model on a dataset split: predictions -> events -> DCASE metrics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sedweak.config import EvalConfig
from sedweak.datasets.cache import CacheResult
from sedweak.datasets.clipset import ClipSet
from sedweak.errors import DataError
from sedweak.evaluation import score_clips
from sedweak.evaluation.scores import SCORE_KEYS, psds_scores, score_frames
from sedweak.inference import predict_logmel_outputs
from sedweak.labels import Event, write_strong_tsv
from sedweak.models.saving import ModelInfo
from sedweak.postprocessing import probabilities_to_events


def detect_cached(model, info: ModelInfo, features: CacheResult
                  ) -> tuple[dict[str, list[Event]], dict[str, np.ndarray], dict[str, list[str]]]:
    """Events, frame probabilities and weak-output tags for every cached clip of a split."""
    thresholds = np.asarray(info.postprocess.thresholds_for(info.classes))
    events, probs, tags = {}, {}, {}
    for name, logmel in zip(features.filenames, features.features):
        track, weak = predict_logmel_outputs(model, logmel, info)
        probs[name] = track
        events[name] = probabilities_to_events(track, info.classes, info.model_frames_per_second,
                                               name, info.postprocess)
        tags[name] = [c for c, p, t in zip(info.classes, weak, thresholds) if p > t]
    return events, probs, tags


def evaluate_split(model, info: ModelInfo, clips: ClipSet, features: CacheResult,
                   eval_config: EvalConfig, out_tsv: Path | None = None) -> dict:
    """Metrics (keys of ``sedweak.evaluation.score_events``) of a split.

    Tagging scores the model's weak (clip) output on every clip, as in Adavanne &
    Virtanen; segment and event scores the events post-processed from its strong output
    on the strongly labelled clips (NaN when the split has none, e.g. AudioSet).
    """
    events, probs, tags = detect_cached(model, info, features)
    if not events:
        raise DataError(f"split {clips.name!r} has no usable clip to evaluate")
    if out_tsv is not None:
        write_strong_tsv(out_tsv, events)
    weak_reference = {n: clips.weak[n] for n in events}
    strong_reference = {n: ev for n, ev in clips.strong_reference.items() if n in events}
    estimated = {n: events[n] for n in strong_reference}
    metrics = score_clips(weak_reference, tags, strong_reference, estimated, list(info.classes), eval_config)
    return with_frame_scores(metrics, {n: probs[n] for n in strong_reference}, strong_reference, info)


def with_frame_scores(metrics: dict, probs: dict[str, np.ndarray], reference: dict[str, list[Event]],
                      info: ModelInfo) -> dict:
    """``metrics`` plus PSDS1, PSDS2 and intersection F1 of the frame scores (NaN without a
    strong reference); ``per_class`` entries gain ``psds1`` and ``intersection.f1``."""
    classes = list(info.classes)
    if reference:
        thresholds = dict(zip(classes, info.postprocess.thresholds_for(classes)))
        frames = score_frames(probs, classes, info.model_frames_per_second)
        durations = {n: len(p) / info.model_frames_per_second for n, p in probs.items()}
        threshold_free = psds_scores(frames, reference, classes, durations, thresholds)
    else:
        threshold_free = {key: math.nan for key in SCORE_KEYS}
        threshold_free["per_class"] = {c: {"psds1": math.nan, "intersection.f1": math.nan} for c in classes}
    out = {**metrics, **{key: float(threshold_free[key]) for key in SCORE_KEYS}}
    out["per_class"] = {c: {**metrics["per_class"][c], **threshold_free["per_class"][c]} for c in classes}
    return out
