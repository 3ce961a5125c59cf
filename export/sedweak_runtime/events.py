"""Frame probabilities -> events -> DESED strong TSV, to the spec of ``sedweak.postprocessing``
(tests compare them): median filter, per-class thresholds, runs, gaps filled, short events dropped."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STRONG_HEADER = "filename\tonset\toffset\tevent_label"
_TIME_TOLERANCE_SECONDS = 1e-6  # as sedweak.postprocessing: frame times are i / rate


@dataclass(frozen=True)
class Event:
    """One detected event; times in seconds."""

    filename: str
    onset_seconds: float
    offset_seconds: float
    label: str


def median_filter(probs: np.ndarray, size_frames: int) -> np.ndarray:
    """(frames, classes) -> median over ``size_frames`` (odd) along time, edges repeated (scipy 'nearest')."""
    if size_frames <= 1:
        return probs
    half = size_frames // 2
    padded = np.pad(probs, ((half, half), (0, 0)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, size_frames, axis=0)  # (frames, classes, size)
    return np.median(windows, axis=-1).astype(probs.dtype)


def odd_window_frames(seconds: float, frames_per_second: float) -> int:
    """``seconds * rate`` rounded, made odd, >= 1 (sedweak.postprocessing.odd_window_frames)."""
    frames = max(1, int(round(seconds * frames_per_second)))
    return frames if frames % 2 == 1 else frames + 1


def _runs_to_events(binary: np.ndarray, classes, frames_per_second: float, filename: str) -> list[Event]:
    changes = np.diff(np.pad(binary, ((1, 1), (0, 0))).astype(np.int8), axis=0)
    events = []
    for k, label in enumerate(classes):
        starts, stops = np.flatnonzero(changes[:, k] == 1), np.flatnonzero(changes[:, k] == -1)
        events += [Event(filename, round(a / frames_per_second, 6), round(b / frames_per_second, 6), label)
                   for a, b in zip(starts, stops)]
    return events


def _merge_and_drop(events: list[Event], min_gap_seconds: float, min_duration_seconds: float) -> list[Event]:
    """Per class: merge events closer than the gap, then drop the short ones."""
    out = []
    for label in sorted({e.label for e in events}):
        merged: list[Event] = []
        for e in sorted((e for e in events if e.label == label), key=lambda e: e.onset_seconds):
            if merged and e.onset_seconds - merged[-1].offset_seconds < min_gap_seconds - _TIME_TOLERANCE_SECONDS:
                last = merged[-1]
                merged[-1] = Event(last.filename, last.onset_seconds, max(last.offset_seconds, e.offset_seconds), label)
            else:
                merged.append(e)
        out += [e for e in merged
                if e.offset_seconds - e.onset_seconds >= min_duration_seconds - _TIME_TOLERANCE_SECONDS]
    return sorted(out, key=lambda e: (e.onset_seconds, e.label))


def probabilities_to_events(probs: np.ndarray, meta: dict, filename: str) -> list[Event]:
    """(frames, classes) probabilities -> median filter -> thresholds -> runs -> gaps / min duration."""
    post, rate = meta["postprocess"], meta["model_frames_per_second"]
    smoothed = median_filter(probs, odd_window_frames(post["median_filter_seconds"], rate))
    binary = smoothed > np.asarray(post["thresholds"])[np.newaxis, :]
    events = _runs_to_events(binary, meta["classes"], rate, filename)
    return _merge_and_drop(events, post["min_gap_seconds"], post["min_duration_seconds"])


def strong_tsv_text(events_by_file: dict[str, list[Event]]) -> str:
    """DESED strong TSV; a file without events gets a filename-only row."""
    lines = [STRONG_HEADER]
    for filename in sorted(events_by_file):
        events = sorted(events_by_file[filename], key=lambda e: (e.onset_seconds, e.label))
        if not events:
            lines.append(f"{filename}\t\t\t")
        lines += [f"{filename}\t{e.onset_seconds:.3f}\t{e.offset_seconds:.3f}\t{e.label}" for e in events]
    return "\n".join(lines) + "\n"
