"""Frame probabilities -> sound events (DESED baseline conventions).

The chain is: median filter per class along time -> per-class thresholds ->
runs of active frames (``sedweak.labels.frames_to_events``) -> fill short gaps ->
drop short events. numpy / scipy only: no TensorFlow here, so scoring a saved
prediction file never loads a model stack.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Sequence

import numpy as np
import scipy.ndimage

from sedweak.config import PostprocessConfig
from sedweak.labels import Event, frames_to_events

# Times come from frame indices divided by a frame rate (0.35 - 0.1 = 0.2499999...),
# so comparisons with the gap / duration limits allow this much slack (seconds).
_TIME_TOLERANCE_SECONDS = 1e-6


def _check_matrix(probs: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    probs = np.asarray(probs)
    if probs.ndim != 2:
        raise ValueError(f"expected a (frames, classes) matrix, got shape {probs.shape}")
    if num_classes is not None and probs.shape[1] != num_classes:
        raise ValueError(f"expected (frames, {num_classes}) matrix, got shape {probs.shape}")
    return probs


def odd_window_frames(seconds: float, frames_per_second: float) -> int:
    """Median-filter length in frames: ``seconds * frames_per_second`` rounded, made odd, >= 1.

    An odd length keeps the filter centred on the frame it replaces (0.45 s at
    100 fps -> 45 frames; at 50 fps 22.5 -> 22 -> 23 frames).
    """
    if seconds < 0 or frames_per_second <= 0:
        raise ValueError(f"need seconds >= 0 and frames_per_second > 0, got {seconds}, {frames_per_second}")
    frames = max(1, int(round(seconds * frames_per_second)))
    return frames if frames % 2 == 1 else frames + 1


def median_filter(probs: np.ndarray, size_frames: int) -> np.ndarray:
    """Median filter each class along time.

    Args:
        probs: (frames, classes) frame probabilities.
        size_frames: window length in frames; ``<= 1`` returns ``probs`` unchanged.

    Returns:
        (frames, classes) filtered probabilities, same dtype. Edges repeat the
        first / last frame (``mode='nearest'``), so an event touching the clip
        boundary is not shortened by implicit zeros.
    """
    probs = _check_matrix(probs)
    if size_frames <= 1:
        return probs
    return scipy.ndimage.median_filter(probs, size=(int(size_frames), 1), mode="nearest")


def binarize(probs: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """(frames, classes) probabilities -> (frames, classes) bool, ``probs > thresholds[class]``.

    Strictly greater, as the DESED baseline decoder does.
    """
    probs = _check_matrix(probs)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape != (probs.shape[1],):
        raise ValueError(f"need one threshold per class ({probs.shape[1]}), got {thresholds.shape[0]}")
    return probs > thresholds[np.newaxis, :]


def _merge_close(events: list[Event], min_gap_seconds: float) -> list[Event]:
    """Merge onset-sorted events of one file and class separated by < ``min_gap_seconds``."""
    merged: list[Event] = []
    for event in events:
        if merged and event.onset_seconds - merged[-1].offset_seconds < min_gap_seconds - _TIME_TOLERANCE_SECONDS:
            last = merged[-1]
            merged[-1] = Event(last.filename, last.onset_seconds,
                               max(last.offset_seconds, event.offset_seconds), last.label)
        else:
            merged.append(event)
    return merged


def fill_gaps_and_drop_short(events: Iterable[Event], min_gap_seconds: float = 0.15,
                             min_duration_seconds: float = 0.25) -> list[Event]:
    """Per file and class: merge events whose gap is < ``min_gap_seconds`` (overlaps
    included), then drop events shorter than ``min_duration_seconds``.

    Gaps are filled before short events are dropped, so two 0.2 s bursts 0.1 s
    apart survive as one 0.5 s event. Comparisons allow 1e-6 s of float slack.

    Returns:
        Events sorted by (filename, onset, label).
    """
    def key(e: Event) -> tuple:
        return (e.filename, e.label)

    out: list[Event] = []
    for _, group in itertools.groupby(sorted(events, key=lambda e: (key(e), e.onset_seconds)), key=key):
        for event in _merge_close(list(group), min_gap_seconds):
            if event.offset_seconds - event.onset_seconds >= min_duration_seconds - _TIME_TOLERANCE_SECONDS:
                out.append(event)
    return sorted(out, key=lambda e: (e.filename, e.onset_seconds, e.label))


def probabilities_to_events(probs: np.ndarray, classes: Sequence[str], frames_per_second: float,
                            filename: str, config: PostprocessConfig = PostprocessConfig()) -> list[Event]:
    """Frame probabilities of one clip -> post-processed events.

    Args:
        probs: (frames, classes) probabilities at ``frames_per_second``.
        classes: class names, one per column of ``probs``.
        frames_per_second: frame rate of ``probs`` (frame i covers [i / r, (i + 1) / r) s).
        filename: clip name written into each Event.
        config: thresholds (global + per-class overrides), median filter length,
            minimum gap and minimum duration, all in seconds.

    Returns:
        Events sorted by (onset, label), times in seconds.
    """
    probs = _check_matrix(probs, len(classes))
    size_frames = odd_window_frames(config.median_filter_seconds, frames_per_second)
    smoothed = median_filter(probs, size_frames)
    binary = binarize(smoothed, config.thresholds_for(classes))
    events = frames_to_events(binary, classes, frames_per_second, filename)
    return fill_gaps_and_drop_short(events, config.min_gap_seconds, config.min_duration_seconds)
