"""The generalisation ablation: seen against unseen collections, for each point of a sweep.

Run a ``sedweak sweep`` of a synth recipe whose eval splits are ``eval_seen`` / ``eval`` /
``eval_remix`` (``data.synth.split_by: collection``; the demo recipe), with each lever on
and off, e.g.::

    sedweak sweep recipes/demo.yaml --workdir ABL --seeds 3 \\
        --pairs "augment.dynamic_mixing=false;augment.dynamic_mixing=true;\\
augment.dynamic_mixing=true,augment.mixup_probability=0.5"
    python bench/bench_generalisation.py --sweep ABL [--sweep ABL2 ...] [--no-tune]

For every finished run this reads the metrics that training wrote for each eval split and,
for the per-class-thresholds lever (which needs no retraining), tunes the thresholds on
the run's valid split and scores the same model again. It prints one table per split
(mean ± 95 % CI over seeds of PSDS1, segment F1 and event F1) plus the seen-unseen gap,
and writes the JSON record (``bench/results/generalisation.json`` by default).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_record  # noqa: E402

SPLITS = ("eval_seen", "eval", "eval_remix")
KEYS = (("psds1", "PSDS1"), ("segment.f1", "Seg F1 %"), ("event.f1", "Event F1 %"))


def tuned_metrics(workdir: Path, splits) -> dict:
    """The run's model with thresholds tuned on valid (event F1), scored on ``splits``."""
    from sedweak.config import load_config
    from sedweak.datasets.prepare import prepare_data
    from sedweak.evaluation.split import evaluate_split
    from sedweak.models.saving import load_model
    from sedweak.training.trainer import tuned_info

    config = load_config(workdir / "config.yaml")
    config = dataclasses.replace(config, postprocess=dataclasses.replace(config.postprocess,
                                                                         tune_thresholds="event_f1"))
    model, info = load_model(workdir / "model.keras")
    data = prepare_data(config, workdir, splits=("valid", *splits), progress=False)
    info = tuned_info(model, info, data, config, workdir / "tuned")
    return {s: evaluate_split(model, info, data.clips[s], data.features[s], config.evaluation) for s in splits}


def finished_runs(sweep: Path) -> list[tuple[str, Path]]:
    """(row name, run folder) of every finished run under ``sweep/runs/<slug>/seed<k>``: the
    folders, not ``sweep_results.json``, which lists only the points of the last invocation
    (a sweep extended point by point keeps its earlier runs on disk)."""
    runs = sorted(sweep.glob("runs/*/seed*/metrics.json"))
    return [(path.parent.parent.name.replace("__", ", "), path.parent) for path in runs]


def collect(sweep: Path, tune: bool) -> dict:
    """{row name: {split: {key: [values over seeds]}}} for every finished run."""
    rows: dict[str, dict] = {}
    for name, workdir in finished_runs(sweep):
        per_split = {"eval": json.loads((workdir / "metrics.json").read_text())}
        for split in ("eval_seen", "eval_remix"):
            path = workdir / f"metrics_{split}.json"
            if path.is_file():
                per_split[split] = json.loads(path.read_text())
        variants = {name: per_split}
        if tune:
            variants[name + " + tuned thresholds"] = tuned_metrics(workdir, tuple(per_split))
        for row, metrics in variants.items():
            target = rows.setdefault(row, {"slug": workdir.parent.name, "splits": {}})
            for split, values in metrics.items():
                for key, _ in KEYS:
                    value = values.get(key)
                    target["splits"].setdefault(split, {}).setdefault(key, []).append(
                        float("nan") if value is None else float(value))
    return rows


def summary(rows: dict) -> dict:
    from sedweak.training.sweep import mean_ci95

    out = {}
    for row, data in rows.items():
        out[row] = {split: {key: dict(zip(("mean", "ci95"), mean_ci95(values)), n=len(values), values=values)
                            for key, values in keys.items()} for split, keys in data["splits"].items()}
    return out


def _cell(key: str, stat: dict) -> str:
    scale, digits = (1.0, 3) if key.startswith("psds") else (100.0, 1)
    return f"{scale * stat['mean']:.{digits}f} ± {scale * stat['ci95']:.{digits}f}"


def markdown(table: dict) -> str:
    lines = []
    for split in SPLITS:
        present = [row for row in table if split in table[row]]
        if not present:
            continue
        lines += [f"\n{split}:", "", "| Point | n | " + " | ".join(t for _, t in KEYS) + " |",
                  "|---|---:|" + "---:|" * len(KEYS)]
        for row in present:
            stats = table[row][split]
            lines.append(f"| {row} | {stats['segment.f1']['n']} | "
                         + " | ".join(_cell(k, stats[k]) for k, _ in KEYS) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", required=True, type=Path, action="append",
                        help="a finished `sedweak sweep` folder (repeat to put several sweeps in one table)")
    parser.add_argument("--no-tune", action="store_true", help="skip the tuned-thresholds rows")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "generalisation.json")
    args = parser.parse_args()
    rows: dict = {}
    for sweep in args.sweep:
        rows.update(collect(sweep, tune=not args.no_tune))
    table = summary(rows)
    text = markdown(table)
    print(text)
    write_record(args.out, {"sweeps": [str(p) for p in args.sweep], "table": table, "markdown": text})


if __name__ == "__main__":
    main()
