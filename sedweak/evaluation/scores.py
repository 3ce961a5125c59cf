"""Threshold-free detection metrics on frame scores: PSDS1, PSDS2 and intersection F1.

An adapter to **sed_scores_eval 0.0.4** (Ebbers et al., ICASSP 2022: the exact PSDS of
the DCASE 2021-2024 task 4 baselines), kept beside sed_eval, which still computes the
segment and collar metrics (``sedweak.evaluation.detection``).

Pinned with ``pandas<3``: sed_scores_eval 0.0.4's Cython kernel takes a memoryview of
a pandas column, which pandas 3 hands out read-only ("buffer source array is read-only").

Settings (DCASE 2021-2024 task 4):

* PSDS1: dtc = gtc = 0.7, no cross-trigger criterion, alpha_ct = 0, alpha_st = 1, e_max = 100/h;
* PSDS2: dtc = gtc = 0.1, cttc = 0.3, alpha_ct = 0.5, alpha_st = 1, e_max = 100/h (with a
  single scored class there is nothing to cross-trigger: cttc none, alpha_ct 0);
* intersection F1: dtc = gtc = 0.7 at the model's decision thresholds, on the raw frame
  scores (no median filter), macro-averaged over classes.

sed_scores_eval refuses a class without any reference event (PSDS divides by its
count): such classes are left out of all three numbers and listed under
``scores.classes_without_reference``; with none left the numbers are NaN. It also refuses
same-class reference events that touch or overlap: they are merged first.

Score files are sed_scores_eval's TSV format: one ``<audio id>.tsv`` per file, columns
``onset offset <class> ...``, one row per model frame. The audio id is the file name
without its audio extension (``clip.wav`` -> ``clip``), as sed_scores_eval's ground-truth
reader derives it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from sedweak_runtime.inputs import AUDIO_EXTENSIONS

from sedweak.errors import DataError
from sedweak.io_utils import atomic_path
from sedweak.labels import Event, LabelError

SCORE_KEYS = ("psds1", "psds2", "intersection.f1")
PSDS1 = {"dtc_threshold": 0.7, "gtc_threshold": 0.7, "cttc_threshold": None, "alpha_ct": 0.0,
         "alpha_st": 1.0, "max_efpr": 100.0}
PSDS2 = {"dtc_threshold": 0.1, "gtc_threshold": 0.1, "cttc_threshold": 0.3, "alpha_ct": 0.5,
         "alpha_st": 1.0, "max_efpr": 100.0}
INTERSECTION_F1 = {"dtc_threshold": 0.7, "gtc_threshold": 0.7}


class ScoreFileError(DataError):
    """A score file or folder that cannot be read as sed_scores_eval scores."""


def audio_id(filename: str) -> str:
    """``clip.wav`` -> ``clip``: the key sed_scores_eval uses for a file (other names unchanged)."""
    stem, ext = os.path.splitext(filename)
    return stem if ext.lower() in AUDIO_EXTENSIONS else filename


def score_frames(probabilities: Mapping[str, np.ndarray], classes: Sequence[str],
                 frames_per_second: float) -> dict:
    """Frame probabilities ``{filename: (frames, classes)}`` -> ``{audio id: DataFrame}``.

    Frame ``i`` spans ``[i / fps, (i + 1) / fps)`` seconds, as the strong output's frames do.
    """
    from sed_scores_eval.base_modules.scores import create_score_dataframe

    out = {}
    for name, track in probabilities.items():
        track = np.asarray(track, np.float64)
        if track.ndim != 2 or track.shape[1] != len(classes):
            raise ValueError(f"{name}: scores of shape {track.shape}, expected (frames, {len(classes)})")
        timestamps = np.arange(track.shape[0] + 1) / float(frames_per_second)
        out[audio_id(name)] = create_score_dataframe(track, timestamps, list(classes))
    return out


def write_scores(folder: str | Path, probabilities: Mapping[str, np.ndarray], classes: Sequence[str],
                 frames_per_second: float) -> Path:
    """One sed_scores_eval TSV per file under ``folder`` (atomic per file); returns the folder.

    A key with folders (``a/clip.wav``) is written as ``folder/a/clip.tsv``; sed_scores_eval's
    own reader reads flat folders only, :func:`read_scores` reads both.
    """
    folder = Path(folder)
    for key, frame in score_frames(probabilities, classes, frames_per_second).items():
        with atomic_path(folder / f"{key}.tsv") as tmp:   # hidden: read_scores skips it
            frame.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    return folder


def read_scores(folder: str | Path, classes: Sequence[str] | None = None) -> tuple[dict, list[str]]:
    """``({audio id: DataFrame}, classes)`` from a folder of score TSVs (nested folders too).

    Raises ScoreFileError naming the file for a missing folder, an empty one, a file that
    is not ``onset offset <class>...`` with increasing times and finite scores, or classes
    that differ between files or from ``classes``.
    """
    import pandas as pd

    folder = Path(folder)
    if not folder.is_dir():
        raise ScoreFileError(f"{folder}: no such score folder")
    files = sorted(p for p in folder.rglob("*.tsv") if not p.name.startswith("."))
    if not files:
        raise ScoreFileError(f"{folder}: no .tsv score files")
    scores, found = {}, None if classes is None else list(classes)
    for path in files:
        try:
            frame = pd.read_csv(path, sep="\t")
        except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
            raise ScoreFileError(f"{path}: not a score TSV ({err})") from None
        columns = [str(c) for c in frame.columns]
        if columns[:2] != ["onset", "offset"] or len(columns) < 3:
            raise ScoreFileError(f"{path}: columns {columns[:4]}...; expected onset, offset, then one per class")
        if found is None:
            found = columns[2:]
        elif sorted(columns[2:]) != sorted(found):
            raise ScoreFileError(f"{path}: classes {columns[2:]} differ from {found}")
        _check_frame(path, frame)
        scores[path.relative_to(folder).with_suffix("").as_posix()] = frame[["onset", "offset", *found]]
    return scores, found


def read_durations_tsv(path: str | Path) -> dict[str, float]:
    """A DESED durations TSV (header ``filename	duration``) -> ``{filename: seconds}``;
    LabelError naming ``file:line`` for a bad header or a duration that is not > 0."""
    from sedweak.labels import read_tsv_rows

    path = Path(path)
    rows = read_tsv_rows(path)
    header = [c.strip() for c in rows[0]]
    if header[:2] != ["filename", "duration"]:
        raise LabelError(f"{path}:1: expected header filename/duration (tab-separated), got {header}")
    out = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        try:
            seconds = float(row[1])
        except (IndexError, ValueError):
            raise LabelError(f"{path}:{line}: expected filename<TAB>seconds, got {row}") from None
        if not (math.isfinite(seconds) and seconds > 0):
            raise LabelError(f"{path}:{line}: duration must be > 0 seconds, got {row[1]!r}")
        out[row[0].strip()] = seconds
    return out


def score_files(reference_tsv: str | Path, scores_dir: str | Path, classes: Sequence[str] | None = None,
                durations_tsv: str | Path | None = None, threshold: float = 0.5) -> dict:
    """:func:`psds_scores` of a folder of score TSVs against a DESED strong TSV.

    Classes default to the score files' columns; durations to each score's last offset.
    """
    from sedweak.labels import read_strong_tsv

    scores, found = read_scores(scores_dir, classes)
    reference = read_strong_tsv(reference_tsv, found)
    durations = read_durations_tsv(durations_tsv) if durations_tsv else None
    return psds_scores(scores, reference, found, durations, threshold)


def _check_frame(path: Path, frame) -> None:
    import pandas as pd

    if len(frame) == 0:
        raise ScoreFileError(f"{path}: no frames")
    values = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise ScoreFileError(f"{path}: NaN, infinite or non-numeric values")
    onset, offset = values[:, 0], values[:, 1]
    if (offset <= onset).any() or (np.abs(onset[1:] - offset[:-1]) > 1e-6).any():
        raise ScoreFileError(f"{path}: frames must be contiguous with offset > onset")


def merge_touching(events: Sequence[Event]) -> list[tuple[float, float, str]]:
    """``(onset, offset, label)`` with same-label events that overlap or touch merged into one.

    sed_scores_eval refuses them (a synthesized clip can hold two takes of one class
    back to back); as one sound they are one reference event for PSDS.
    """
    out: list[list] = []
    for e in sorted(events, key=lambda e: (e.label, e.onset_seconds, e.offset_seconds)):
        if out and out[-1][2] == e.label and e.onset_seconds <= out[-1][1]:
            out[-1][1] = max(out[-1][1], float(e.offset_seconds))
        else:
            out.append([float(e.onset_seconds), float(e.offset_seconds), e.label])
    return [tuple(event) for event in sorted(out)]


def _ground_truth(reference: Mapping[str, Sequence[Event]], ids: set[str]) -> dict:
    gt = {audio_id(name): merge_touching(events) for name, events in reference.items()}
    missing = sorted(set(gt) - ids)
    if missing:
        raise LabelError(f"no scores for {len(missing)} reference file(s), e.g. {missing[:3]}")
    extra = sorted(ids - set(gt))
    if extra:
        raise LabelError(f"scores for {len(extra)} file(s) not in the reference, e.g. {extra[:3]}")
    return gt


def psds_scores(scores: Mapping, reference: Mapping[str, Sequence[Event]], classes: Sequence[str],
                durations_seconds: Mapping[str, float] | None = None,
                thresholds: Mapping[str, float] | float = 0.5) -> dict:
    """PSDS1, PSDS2 and intersection F1 (module docstring) of frame scores.

    Args:
        scores: ``{audio id: DataFrame}`` (:func:`score_frames`, :func:`read_scores`).
        reference: ``{filename: [Event, ...]}``; every file must have scores and vice versa.
        classes: the evaluated classes (the score columns).
        durations_seconds: ``{filename or audio id: seconds}``; default: each score's last offset.
        thresholds: decision threshold(s) of the intersection F1.

    Returns:
        ``{"psds1", "psds2", "intersection.f1"}`` floats in [0, 1] (NaN when no class has a
        reference event), ``"per_class"``: class -> {"psds1", "intersection.f1"} (NaN for a
        class without reference events) and ``"classes_without_reference"``.
    """
    from sed_scores_eval import intersection_based

    gt = _ground_truth(reference, set(scores))
    present = sorted({label for events in gt.values() for _, _, label in events})
    unknown = sorted(set(present) - set(classes))
    if unknown:
        raise LabelError(f"reference labels {unknown} are not among the scored classes {list(classes)}")
    scored = [c for c in classes if c in present]
    absent = [c for c in classes if c not in present]
    nan_class = {"psds1": math.nan, "intersection.f1": math.nan}
    out = {key: math.nan for key in SCORE_KEYS}
    out["per_class"] = {c: dict(nan_class) for c in classes}
    out["classes_without_reference"] = absent
    if not scored:
        return out
    frames = {k: v[["onset", "offset", *scored]] for k, v in scores.items()}
    durations = {audio_id(k): float(v) for k, v in (durations_seconds or {}).items()}
    durations = {k: durations.get(k, float(v["offset"].iloc[-1])) for k, v in frames.items()}
    psds1, per_class1, *_ = intersection_based.psds(frames, gt, durations, **PSDS1)
    # Cross-triggers need a second class (sed_scores_eval 0.0.4 crashes on an empty set of them).
    psds2_settings = PSDS2 if len(scored) > 1 else {**PSDS2, "cttc_threshold": None, "alpha_ct": 0.0}
    psds2, *_ = intersection_based.psds(frames, gt, durations, **psds2_settings)
    threshold = {c: float(thresholds[c] if isinstance(thresholds, Mapping) else thresholds) for c in scored}
    f1, *_ = intersection_based.fscore(frames, gt, threshold, **INTERSECTION_F1)
    out.update({"psds1": float(psds1), "psds2": float(psds2), "intersection.f1": float(f1["macro_average"])})
    for c in scored:
        out["per_class"][c] = {"psds1": float(per_class1[c]), "intersection.f1": float(f1[c])}
    return out
