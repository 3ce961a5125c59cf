"""Detection metrics: an adapter from ``sedweak.labels.Event`` to sed_eval 0.2.1.

Segment-based metrics use ``EvalConfig.segment_seconds`` segments; event-based
metrics use ``t_collar_seconds`` and ``percentage_of_length`` on onset AND offset
(DCASE conventions). Files are evaluated one by one, as sed_eval requires.

Rules for undefined values (sed_eval returns NaN, or a huge number, for these):

* Precision, recall and F1 that are 0/0 (no system output, or no reference) are
  **0.0**, overall and per class. So a class with no detections has F1 = 0.0, and
  so does a class absent from both reference and output.
* ``f1_macro`` is the plain mean of the per-class F1 over ALL ``classes`` after the
  rule above. (sed_eval's own ``class_wise_average`` uses ``nanmean``, which skips
  such classes and so reports a higher number.)
* Error rate (ER = (S + D + I) / Nref) with Nref = 0: **0.0** when the system
  output is empty too, **inf** otherwise (insertions against nothing; sed_eval
  divides by Nref + 2.2e-16 and returns ~4.5e15 x insertions).
* Otherwise numbers are sed_eval's own, including that epsilon: one error on one
  reference event gives ER 0.9999999999999998, not 1.0. Compare with a tolerance.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from sedweak.config import EvalConfig
from sedweak.evaluation.tagging import check_files_and_labels as check_labels
from sedweak.labels import Event, weak_from_strong

EventsByFile = Mapping[str, Sequence[Event]]


def _zero_if_nan(value: float) -> float:
    value = float(value)
    return 0.0 if math.isnan(value) else value


def _error_rate(error_rate: float, n_ref: float, n_sys: float) -> float:
    """sed_eval ER (or insertion rate) with the Nref = 0 rule of the module docstring."""
    if n_ref == 0:
        return 0.0 if n_sys == 0 else math.inf
    return float(error_rate)


def _overall_rates(rates: Mapping[str, float], n_ref: float, n_sys: float) -> dict:
    """Overall ER and its S / D / I parts; with Nref = 0 only insertions can be non-zero."""
    if n_ref == 0:
        return {"error_rate": _error_rate(0.0, n_ref, n_sys), "substitution_rate": 0.0,
                "deletion_rate": 0.0, "insertion_rate": _error_rate(0.0, n_ref, n_sys)}
    return {name: float(rates[name])
            for name in ("error_rate", "substitution_rate", "deletion_rate", "insertion_rate")}


def check_files_and_labels(reference: EventsByFile, estimated: EventsByFile,
                           classes: Sequence[str]) -> None:
    """Raise LabelError for an estimated file absent from the reference, or an unknown label."""
    check_labels(weak_from_strong(reference), weak_from_strong(estimated), classes, what="events")


def to_sed_eval_events(events: Sequence[Event]) -> list[dict]:
    """Events -> the dicts sed_eval / dcase_util MetaDataContainer read.

    sed_eval 0.2.1 keeps an item only if it has ``event_label`` and either
    ``onset``/``offset`` or ``event_onset``/``event_offset``; it groups by ``filename``
    (dcase_util copies a legacy ``file`` key into ``filename``).
    """
    return [{"filename": e.filename, "event_label": e.label,
             "onset": float(e.onset_seconds), "offset": float(e.offset_seconds)} for e in events]


def _make_metrics(classes: Sequence[str], config: EvalConfig) -> tuple:
    import sed_eval  # imported here: it pulls in dcase_util, not needed to import this package

    segment = sed_eval.sound_event.SegmentBasedMetrics(
        event_label_list=list(classes), time_resolution=float(config.segment_seconds))
    event = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=list(classes), t_collar=float(config.t_collar_seconds),
        percentage_of_length=float(config.percentage_of_length),
        evaluate_onset=True, evaluate_offset=True)
    return segment, event


def _summarize(metrics, classes: Sequence[str], with_accuracy: bool) -> dict:
    """sed_eval metrics object -> plain dict with the NaN / ER rules applied."""
    # Not metrics.results(): its class-wise average (nanmean) is unused here and warns
    # "Mean of empty slice" when every class is NaN.
    raw = {"overall": metrics.results_overall_metrics(), "class_wise": metrics.results_class_wise_metrics()}
    overall_f, overall_er = raw["overall"]["f_measure"], raw["overall"]["error_rate"]
    n_ref, n_sys = metrics.overall["Nref"], metrics.overall["Nsys"]
    per_class = {}
    for label in classes:
        cw = raw["class_wise"][label]
        per_class[label] = {
            "f1": _zero_if_nan(cw["f_measure"]["f_measure"]),
            "precision": _zero_if_nan(cw["f_measure"]["precision"]),
            "recall": _zero_if_nan(cw["f_measure"]["recall"]),
            "error_rate": _error_rate(cw["error_rate"]["error_rate"], cw["count"]["Nref"], cw["count"]["Nsys"]),
            "n_ref": float(cw["count"]["Nref"]),
            "n_sys": float(cw["count"]["Nsys"]),
        }
    out = {
        **_overall_rates(overall_er, n_ref, n_sys),
        "f1": _zero_if_nan(overall_f["f_measure"]),
        "f1_macro": sum(c["f1"] for c in per_class.values()) / len(per_class) if per_class else 0.0,
        "precision": _zero_if_nan(overall_f["precision"]),
        "recall": _zero_if_nan(overall_f["recall"]),
        "n_ref": float(n_ref),
        "n_sys": float(n_sys),
    }
    if with_accuracy:
        out["accuracy"] = float(raw["overall"]["accuracy"]["accuracy"])
    out["per_class"] = per_class
    return out


def evaluate_detection(reference: EventsByFile, estimated: EventsByFile, classes: Sequence[str],
                       config: EvalConfig = EvalConfig()) -> dict:
    """Segment- and event-based detection metrics with sed_eval.

    Args:
        reference: ``{filename: [Event, ...]}``; every file listed is evaluated, a file
            with an empty list is a clip without events.
        estimated: same layout; a reference file missing here counts as "no detection"
            (all misses). A file here but not in the reference is a LabelError.
        classes: the evaluated class names; an event with another label is a LabelError.
        config: segment length, collar and percentage_of_length (seconds / fraction).

    Returns:
        ``{"segment": {...}, "event": {...}}``, each with ``error_rate``,
        ``substitution_rate``, ``deletion_rate``, ``insertion_rate``, ``f1`` (micro),
        ``f1_macro``, ``precision``, ``recall``, ``n_ref``, ``n_sys`` and ``per_class``
        (class -> f1, precision, recall, error_rate, n_ref, n_sys); ``segment`` also
        has ``accuracy``. Counts are segments or events. Floats; rules for undefined
        values in the module docstring. The evaluated length of each file is the
        latest offset in its reference or output, as in sed_eval.
    """
    if not classes:
        raise ValueError("evaluate_detection needs at least one class")
    check_files_and_labels(reference, estimated, classes)
    segment_metrics, event_metrics = _make_metrics(classes, config)
    for filename in sorted(reference):
        ref = to_sed_eval_events(reference[filename])
        est = to_sed_eval_events(estimated.get(filename, ()))
        segment_metrics.evaluate(reference_event_list=ref, estimated_event_list=est)
        event_metrics.evaluate(reference_event_list=ref, estimated_event_list=est)
    return {"segment": _summarize(segment_metrics, classes, with_accuracy=True),
            "event": _summarize(event_metrics, classes, with_accuracy=False)}
