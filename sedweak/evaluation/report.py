"""One flat dictionary of the numbers a DCASE-style table reports, and the tables.

``score_events`` is the single entry point used by training, sweeps and the
``sedweak score`` command; its keys are fixed (``METRIC_KEYS`` + ``per_class``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

from sedweak.config import EvalConfig
from sedweak.evaluation.detection import EventsByFile, evaluate_detection
from sedweak.evaluation.scores import SCORE_KEYS  # threshold-free; in a table when a row has them
from sedweak.evaluation.tagging import tagging_scores
from sedweak.labels import LabelError, read_strong_tsv, weak_from_strong

METRIC_KEYS = (
    "tagging.precision", "tagging.recall", "tagging.f1", "tagging.f1_macro",
    "segment.error_rate", "segment.f1", "segment.f1_macro",
    "event.error_rate", "event.f1", "event.f1_macro",
)
PER_CLASS_KEYS = ("tagging.f1", "segment.f1", "segment.error_rate", "event.f1", "event.error_rate")

# Column titles of the tables; F / P / R are shown in percent, ER as a plain ratio.
_TITLES = {
    "tagging.precision": "Tag P %", "tagging.recall": "Tag R %", "tagging.f1": "Tag F1 %",
    "tagging.f1_macro": "Tag F1 macro %", "segment.error_rate": "Seg ER", "segment.f1": "Seg F1 %",
    "segment.f1_macro": "Seg F1 macro %", "event.error_rate": "Event ER", "event.f1": "Event F1 %",
    "event.f1_macro": "Event F1 macro %", "psds1": "PSDS1", "psds2": "PSDS2", "intersection.f1": "Int. F1 %",
}



def score_events(reference: EventsByFile, estimated: EventsByFile, classes: Sequence[str],
                 config: EvalConfig = EvalConfig(), estimated_tags: Mapping[str, Sequence[str]] | None = None
                 ) -> dict:
    """Tagging, segment-based and event-based scores of estimated events against a reference.

    Args:
        reference: ``{filename: [Event, ...]}``; every listed file is scored.
        estimated: same layout; missing reference files count as "nothing detected";
            files absent from the reference are a LabelError.
        classes: evaluated class names; other labels are a LabelError.
        config: segment length and event collar (see ``EvalConfig``).
        estimated_tags: clip tags from a clip-level (weak) output, ``{filename: [label]}``;
            when None the tags are the labels of each file's estimated events.

    Returns:
        Exactly the keys of ``METRIC_KEYS`` (floats; F / P / R as fractions in [0, 1])
        plus ``"per_class"``: class -> {key: float for key in PER_CLASS_KEYS}. Reference
        clip tags are the labels of each reference file's events. Undefined values follow
        ``sedweak.evaluation.detection`` (F1 0.0; ER 0.0 or inf when Nref = 0).
    """
    tags = weak_from_strong(estimated) if estimated_tags is None else dict(estimated_tags)
    tagging = tagging_scores(weak_from_strong(reference), {f: tags.get(f, []) for f in reference}, classes)
    return assemble(tagging, evaluate_detection(reference, estimated, classes, config), classes)


def score_clips(weak_reference: Mapping[str, Sequence[str]], estimated_tags: Mapping[str, Sequence[str]],
                strong_reference: EventsByFile, estimated: EventsByFile, classes: Sequence[str],
                config: EvalConfig = EvalConfig()) -> dict:
    """Tagging over every weakly labelled clip, detection over the strongly labelled ones.

    A split without strong labels (AudioSet) gets NaN detection scores (``null`` in JSON,
    ``n/a`` in tables) -- the keys are always the same.
    """
    tags = {f: list(estimated_tags.get(f, [])) for f in weak_reference}
    tagging = tagging_scores(dict(weak_reference), tags, classes)
    if not strong_reference:
        return assemble(tagging, None, classes)
    return assemble(tagging, evaluate_detection(strong_reference, estimated, classes, config), classes)


def assemble(tagging: Mapping, detection: Mapping | None, classes: Sequence[str]) -> dict:
    """The fixed-key metrics dict from tagging and (optional) detection scores."""
    if detection is None:
        nan = {"error_rate": math.nan, "f1": math.nan, "f1_macro": math.nan,
               "per_class": {c: {"f1": math.nan, "error_rate": math.nan} for c in classes}}
        detection = {"segment": nan, "event": nan}
    seg, ev = detection["segment"], detection["event"]
    out = {
        "tagging.precision": tagging["precision"], "tagging.recall": tagging["recall"],
        "tagging.f1": tagging["f1"], "tagging.f1_macro": tagging["f1_macro"],
        "segment.error_rate": seg["error_rate"], "segment.f1": seg["f1"], "segment.f1_macro": seg["f1_macro"],
        "event.error_rate": ev["error_rate"], "event.f1": ev["f1"], "event.f1_macro": ev["f1_macro"],
    }
    out["per_class"] = {
        c: {"tagging.f1": tagging["per_class"][c]["f1"],
            "segment.f1": seg["per_class"][c]["f1"], "segment.error_rate": seg["per_class"][c]["error_rate"],
            "event.f1": ev["per_class"][c]["f1"], "event.error_rate": ev["per_class"][c]["error_rate"]}
        for c in classes
    }
    return {k: float(v) if k != "per_class" else v for k, v in out.items()}


def cell(key: str, value: float) -> str:
    """A table cell: F / P / R in %, ER and PSDS as ratios, n/a for undefined."""
    if value is None or math.isnan(value):
        return "n/a"
    if key.endswith("error_rate"):
        return "inf" if math.isinf(value) else f"{value:.2f}"
    if key.startswith("psds"):
        return f"{value:.3f}"
    return f"{100.0 * value:.1f}"


def _table(first_title: str, columns: Sequence[str], rows: Mapping[str, Mapping[str, float]]) -> str:
    header = [first_title] + [_TITLES[c] for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(columns)) + "|"]
    for name, values in rows.items():
        lines.append("| " + " | ".join([str(name)] + [cell(c, values.get(c, math.nan)) for c in columns]) + " |")
    return "\n".join(lines) + "\n"


def markdown_table(metrics_by_system: Mapping[str, Mapping[str, float]],
                   keys: Sequence[str] | None = None) -> str:
    """One row per system with the 10 overall numbers (F / P / R in %, ER plain), then
    PSDS1, PSDS2 and intersection F1 when a row has them (n/a in rows without); ``keys``:
    these columns instead."""
    if keys is None:
        scored = any(key in values for values in metrics_by_system.values() for key in SCORE_KEYS)
        keys = METRIC_KEYS + (SCORE_KEYS if scored else ())
    return _table("System", tuple(keys), metrics_by_system)


def per_class_markdown(metrics: Mapping) -> str:
    """One row per class of ``score_events`` output: tagging F1, segment F1 / ER, event F1 / ER
    (and PSDS1 when the metrics have it)."""
    rows = metrics["per_class"]
    keys = tuple(k for k in PER_CLASS_KEYS if any(k in v for v in rows.values()))
    scored = any("psds1" in values for values in rows.values())
    return _table("Class", keys + (("psds1",) if scored else ()), rows)


def score_tsv(ref_path: str | Path, est_path: str | Path, classes: Sequence[str] | None = None,
              config: EvalConfig = EvalConfig()) -> dict:
    """``score_events`` on two DESED strong-label TSVs (header filename/onset/offset/event_label).

    ``classes`` default to the sorted labels of the reference. A label outside
    ``classes`` is a LabelError naming ``file:line``; so is a malformed row; an
    estimated file not listed in the reference is a LabelError naming both files.
    """
    reference = read_strong_tsv(ref_path, classes)
    derived = classes is None
    if derived:
        classes = sorted({e.label for events in reference.values() for e in events})
        if not classes:
            raise LabelError(f"{ref_path}: no event in the reference; pass the classes explicitly "
                             "(`sedweak score --classes A,B,...`)")
    try:
        estimated = read_strong_tsv(est_path, classes)
    except LabelError as err:
        if derived and "unknown label" in str(err):
            raise LabelError(f"{err} (the classes were taken from the reference's labels {list(classes)}; "
                             "pass the full class list with `sedweak score --classes A,B,...`)") from None
        raise
    extra = sorted(set(estimated) - set(reference))
    if extra:
        raise LabelError(f"{est_path}: file(s) {extra[:5]} not in the reference {ref_path}"
                         + (f" ({len(extra)} in all)" if len(extra) > 5 else ""))
    return score_events(reference, estimated, list(classes), config)
