"""Tables and a plot of :func:`sedweak.collections.transfer.run_transfer`'s learning curves.

:func:`summarise` reduces the records to mean ± 95 % confidence half-width per (classifier,
n, metric). The unit of the interval is the split: the repeats of one split share its test
set, so they are averaged first, and the interval is Student t over the split means,
``t(0.975, splits - 1) * sd / sqrt(splits)``. With a single split (a fixed train/test
partition) the draws are the only spread there is: the interval is then over the repeats
(None with one repeat).

:func:`write_transfer_report` writes ``transfer.md``, ``transfer.json`` and
``learning_curve.png`` into a folder, each atomically.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Sequence

import numpy as np

METRICS = ("accuracy", "macro_f1", "map")
METRIC_TITLES = {"accuracy": "accuracy", "macro_f1": "macro F1", "map": "mAP"}


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float | None]:
    """(mean, Student-t half-width of the ``confidence`` interval; None for one value)."""
    from scipy.stats import t

    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return float(values.mean()), None
    half = t.ppf((1 + confidence) / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean()), float(half)


def size_name(n: int | None) -> str:
    return "all" if n is None else str(n)


def summarise(records: Sequence[dict], confidence: float = 0.95) -> list[dict]:
    """One row per (classifier, n) in the records' order: ``{"classifier", "n", "splits",
    "repeats", "train_files", <metric>: {"mean", "ci95"}}`` (see the module docstring)."""
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in records:
        groups.setdefault((r["classifier"], r["n"]), {}).setdefault(r["split"], []).append(r)
    rows = []
    for (classifier, n), by_split in groups.items():
        row = {"classifier": classifier, "n": size_name(n), "splits": len(by_split),
               "repeats": max(len(v) for v in by_split.values()),
               "train_files": float(np.mean([r["train_files"] for v in by_split.values() for r in v]))}
        for metric in METRICS:
            if len(by_split) == 1:
                mean, half = mean_ci([r[metric] for r in next(iter(by_split.values()))], confidence)
            else:
                mean, half = mean_ci([np.mean([r[metric] for r in v]) for v in by_split.values()], confidence)
            row[metric] = {"mean": mean, "ci95": half}
        rows.append(row)
    return rows


def _cell(value: dict) -> str:
    return f"{value['mean']:.3f}" + ("" if value["ci95"] is None else f" ± {value['ci95']:.3f}")


def markdown(result, rows: Sequence[dict]) -> str:
    """The report: what was measured, then one table row per (classifier, n)."""
    lines = [f"# Transfer learning: {result.source}", "",
             (f"Labels: {result.labels_source} ({sum(result.class_counts.values())} files, "
              f"{len(result.class_counts)} classes: "
              + ", ".join(f"{c} {n}" for c, n in result.class_counts.items()) + ")"),
             (f"Splits: {', '.join(result.splits)}; repeats per n: {result.settings.repeats} (n=all: 1), "
              "mean ± 95 % CI (Student t over splits; over the repeats with one split)."), ""]
    lines += [f"Note: {note}" for note in result.notes]
    lines += [f"Skipped (unreadable): {path}: {why}" for path, why in result.skipped]
    lines += [f"Dropped label row (file unreadable): {where}" for where in result.dropped]
    lines += ["", "| classifier | n per class | train files | accuracy | macro F1 | mAP |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['classifier']} | {r['n']} | {r['train_files']:.0f} | {_cell(r['accuracy'])} | "
              f"{_cell(r['macro_f1'])} | {_cell(r['map'])} |" for r in rows]
    return "\n".join(lines) + "\n"


def plot_png(rows: Sequence[dict], title: str = "") -> bytes:
    """PNG bytes: accuracy and macro F1 against n per class, one line per classifier with its
    95 % interval as error bars; "all" sits one step right of the largest n."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(dict.fromkeys(r["n"] for r in rows))
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for axis, metric in zip(axes, ("accuracy", "macro_f1")):
        names = list(dict.fromkeys(r["classifier"] for r in rows))
        for i, classifier in enumerate(names):
            mine = [r for r in rows if r["classifier"] == classifier]
            means = [r[metric]["mean"] for r in mine]
            errors = [r[metric]["ci95"] or 0.0 for r in mine]
            dodge = 0.06 * (i - (len(names) - 1) / 2)   # equal curves would hide each other's bars
            axis.errorbar([sizes.index(r["n"]) + dodge for r in mine], means, yerr=errors, marker="o", capsize=3,
                          label=classifier)
        axis.set_xticks(range(len(sizes)), sizes)
        axis.set_xlabel("labelled examples per class")
        axis.set_title(METRIC_TITLES[metric])
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def write_transfer_report(out_dir: str | Path, result) -> dict[str, Path]:
    """``transfer.md``, ``transfer.json`` (settings, summary rows, every record) and
    ``learning_curve.png`` in ``out_dir``; returns their paths by kind."""
    from sedweak.io_utils import atomic_write_bytes, atomic_write_json, atomic_write_text

    out_dir = Path(out_dir)
    rows = summarise(result.records)
    record = {"source": result.source, "labels": result.labels_source, "class_counts": result.class_counts,
              "splits": list(result.splits), "sizes": [size_name(n) for n in result.sizes],
              "settings": dataclasses.asdict(result.settings), "notes": list(result.notes),
              "skipped": [{"path": p, "reason": why} for p, why in result.skipped],
              "dropped_label_rows": list(result.dropped), "summary": rows, "records": result.records}
    return {"markdown": atomic_write_text(out_dir / "transfer.md", markdown(result, rows)),
            "json": atomic_write_json(out_dir / "transfer.json", record),
            "png": atomic_write_bytes(out_dir / "learning_curve.png", plot_png(rows, result.source))}
