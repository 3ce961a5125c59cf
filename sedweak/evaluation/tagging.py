"""Clip-level tagging metrics: P / R / F1 (micro and macro) from label sets, AP / mAP from scores.

Zero-division rule: a precision, recall or F1 whose denominator is 0 is 0.0
(e.g. a class never predicted has precision 0.0 and F1 0.0). ``f1_macro`` is the
plain mean of the per-class F1 over all ``classes``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from sedweak.errors import DataError
from sedweak.labels import LabelError

LabelsByFile = Mapping[str, Sequence[str]]


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else 0.0


def _f1(precision: float, recall: float) -> float:
    return _ratio(2.0 * precision * recall, precision + recall)


def prf_from_counts(true_positives: float, false_positives: float, false_negatives: float) -> dict:
    """Counts -> ``{"precision", "recall", "f1"}`` with the zero-division rule."""
    precision = _ratio(true_positives, true_positives + false_positives)
    recall = _ratio(true_positives, true_positives + false_negatives)
    return {"precision": precision, "recall": recall, "f1": _f1(precision, recall)}


def check_files_and_labels(reference: LabelsByFile, estimated: LabelsByFile, classes: Sequence[str],
                           what: str = "tags") -> None:
    """Raise LabelError for an estimated file absent from the reference, or an unknown label."""
    extra = sorted(set(estimated) - set(reference))
    if extra:
        raise LabelError(f"estimated {what} for file(s) not in the reference: {extra[:5]}"
                         + (f" and {len(extra) - 5} more" if len(extra) > 5 else ""))
    known = set(classes)
    for side, labels_by_file in (("reference", reference), ("estimated", estimated)):
        for filename, labels in labels_by_file.items():
            unknown = sorted(set(labels) - known)
            if unknown:
                raise LabelError(f"{side} {filename}: unknown label(s) {unknown}; known labels: {list(classes)}")


def tagging_counts(reference: LabelsByFile, estimated: LabelsByFile,
                   classes: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per-class clip counts ``{class: {"tp", "fp", "fn"}}`` over the reference files.

    A reference file missing from ``estimated`` has no predicted tag.
    """
    check_files_and_labels(reference, estimated, classes)
    counts = {c: {"tp": 0, "fp": 0, "fn": 0} for c in classes}
    for filename, ref_labels in reference.items():
        ref, est = set(ref_labels), set(estimated.get(filename, ()))
        for label in ref & est:
            counts[label]["tp"] += 1
        for label in est - ref:
            counts[label]["fp"] += 1
        for label in ref - est:
            counts[label]["fn"] += 1
    return counts


def tagging_scores(reference: LabelsByFile, estimated: LabelsByFile, classes: Sequence[str]) -> dict:
    """Clip tagging metrics from label sets.

    Args:
        reference: ``{filename: [label, ...]}``; an empty list is a clip without events.
        estimated: same layout; files not in ``reference`` are a LabelError.
        classes: evaluated class names; any other label is a LabelError.

    Returns:
        ``{"precision", "recall", "f1"}`` (micro, pooled over clips and classes),
        ``"f1_macro"`` and ``"per_class"``: class -> {precision, recall, f1, tp, fp, fn}.
    """
    counts = tagging_counts(reference, estimated, classes)
    per_class = {c: {**prf_from_counts(n["tp"], n["fp"], n["fn"]), **n} for c, n in counts.items()}
    totals = {k: sum(n[k] for n in counts.values()) for k in ("tp", "fp", "fn")}
    micro = prf_from_counts(totals["tp"], totals["fp"], totals["fn"])
    f1_macro = float(np.mean([p["f1"] for p in per_class.values()])) if per_class else 0.0
    return {**micro, "f1_macro": f1_macro, "per_class": per_class}


def average_precision(targets: np.ndarray, scores: np.ndarray, classes: Sequence[str]) -> dict:
    """Per-class average precision and their mean (mAP) from clip scores.

    Args:
        targets: (clips, classes) binary clip labels.
        scores: (clips, classes) clip scores (e.g. the weak output).
        classes: class names, one per column.

    Returns:
        ``{"mAP": float, "per_class": {class: AP}, "skipped_classes": [...]}``. Classes
        without a positive clip have no defined AP: they are left out of ``per_class``
        and of the mean, and listed in ``skipped_classes``. If every class is skipped,
        ValueError.
    """
    from sklearn.metrics import (
        average_precision_score,  # heavy: imported only when used
    )

    targets, scores = np.asarray(targets), np.asarray(scores, dtype=np.float64)
    if targets.shape != scores.shape or targets.ndim != 2 or targets.shape[1] != len(classes):
        raise ValueError(f"need targets and scores of shape (clips, {len(classes)}), "
                         f"got {targets.shape} and {scores.shape}")
    per_class, skipped = {}, []
    for k, label in enumerate(classes):
        positives = targets[:, k] > 0.5
        if not positives.any():
            skipped.append(label)
            continue
        per_class[label] = float(average_precision_score(positives, scores[:, k]))
    if not per_class:
        raise DataError(f"no class has a positive clip, average precision is undefined for all of {list(classes)}")
    return {"mAP": float(np.mean(list(per_class.values()))), "per_class": per_class, "skipped_classes": skipped}
