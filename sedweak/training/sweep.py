"""Sweeps: override points x seeds -> ``sedweak.training.run`` each -> mean ± 95 % CI table.

DIR holds ``data/`` (shared, prepared once before any run), ``runs/<slug>/seed<k>/`` (one run
each), ``sweep_results.json`` (per run: point, seed, status, metrics), ``sweep_table.md``/``.csv``,
``sweep_summary.json`` (per point, mean ± CI), ``sweep.png``. Finished runs (``metrics.json``) are
read, interrupted ones resume, a failing one is recorded as ``"failed"`` and the others go on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from sedweak.config import Config, ConfigError, load_config, to_dict
from sedweak.io_utils import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

# Adavanne & Virtanen's (strong, weak) loss weights, in the order of their table.
PAPER_PAIRS = ((0.002, 1), (0.02, 1), (0.2, 1), (1, 1), (1, 0.2), (1, 0.02), (1, 0.002))
# The paper's columns (tagging P/R/F, detection ER/F) plus event-based F; F/P/R in %.
TABLE_COLUMNS = (("tagging.precision", "Tag P %"), ("tagging.recall", "Tag R %"), ("tagging.f1", "Tag F1 %"),
                 ("segment.error_rate", "Seg ER"), ("segment.f1", "Seg F1 %"), ("event.f1", "Event F1 %"),
                 ("psds1", "PSDS1"))
PLOT_LINES = (("tagging.f1", "tagging F1"), ("segment.f1", "segment F1"), ("segment.error_rate", "segment ER"))


def split_top_level(text: str, sep: str) -> list[str]:
    """Split ``text`` on ``sep`` outside brackets/braces: ``"a=[1,2],b=3"`` -> two items."""
    parts, depth = [""], 0
    for char in text:
        depth += (char in "[{") - (char in "]}")
        if char == sep and depth == 0:
            parts.append("")
        else:
            parts[-1] += char
    return [p.strip() for p in parts]


def _key_and_raw(item: str, where: str) -> tuple[str, str]:
    key, eq, raw = (part.strip() for part in item.partition("="))
    if not (eq and key and raw):
        raise ConfigError(f"{where} {item!r}: expected SECTION.KEY=VALUE")
    return key, raw


def parse_grid(specs: Sequence[str]) -> list[list[str]]:
    """``["a.x=1,2", "b.y=3,4"]`` -> the cartesian product ``[["a.x=1", "b.y=3"], ["a.x=1", "b.y=4"], ...]``.

    The first key varies slowest. Values are YAML (``model.rnn_units=[8],[16]`` works).
    """
    axes, keys = [], []
    for spec in specs:
        key, raw = _key_and_raw(spec, "--grid")
        if key in keys:
            raise ConfigError(f"--grid: key {key!r} given twice")
        values = split_top_level(raw, ",")
        if not all(values):
            raise ConfigError(f"--grid {spec!r}: empty value")
        keys.append(key)
        axes.append([f"{key}={v}" for v in values])
    return [list(point) for point in itertools.product(*axes)] if axes else []


def parse_pairs(text: str) -> list[list[str]]:
    """``"a.x=1,b.y=2;a.x=3,b.y=4"`` -> ``[["a.x=1", "b.y=2"], ["a.x=3", "b.y=4"]]`` (explicit points)."""
    points = []
    for chunk in split_top_level(text, ";"):
        if not chunk:
            continue
        items = [_key_and_raw(item, "--pairs") for item in split_top_level(chunk, ",")]
        if len({key for key, _ in items}) != len(items):
            raise ConfigError(f"--pairs {chunk!r}: a key is given twice")
        points.append([f"{k}={v}" for k, v in items])
    if not points:
        raise ConfigError("--pairs: no point given")
    return points


def paper_pairs() -> list[list[str]]:
    """The seven (loss.strong_weight, loss.weak_weight) points of Adavanne & Virtanen, in order."""
    return [[f"loss.strong_weight={s:g}", f"loss.weak_weight={w:g}"] for s, w in PAPER_PAIRS]


def points_from_options(grid: Sequence[str] = (), pairs: str | None = None,
                        use_paper_pairs: bool = False) -> list[list[str]]:
    """One source of points (grid, pairs or the paper's pairs); none -> one point, the recipe itself."""
    if bool(grid) + bool(pairs) + bool(use_paper_pairs) > 1:
        raise ConfigError("give only one of --grid, --pairs and --paper-pairs")
    if grid:
        return parse_grid(grid)
    if pairs:
        return parse_pairs(pairs)
    return paper_pairs() if use_paper_pairs else [[]]


def slug(point: Sequence[str]) -> str:
    """Readable folder name: ``loss.strong_weight=0.002__loss.weak_weight=1`` ("base" when empty)."""
    text = "__".join(item.replace(" ", "") for item in point) or "base"
    return re.sub(r"[^A-Za-z0-9._=,+\-\[\]]", "_", text)


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its point, seed, folder and fully resolved config."""

    point: tuple[str, ...]
    slug: str
    seed: int
    workdir: Path
    config: Config


def _dataset_key(config: Config) -> str:
    """What the synthesized/loaded dataset depends on (not where it lives)."""
    data = {k: v for k, v in to_dict(config.data).items() if k != "root"}
    return json.dumps([data, config.train.fast_dev_run], sort_keys=True)


def plan_runs(recipe: str | Path, workdir: Path, points: Sequence[Sequence[str]], seeds: int,
              base_overrides: Sequence[str] = (), fast_dev_run: bool = False) -> list[RunSpec]:
    """Validate every (point, seed) config and give each run its folder and data root.

    Raises ConfigError (before anything runs) for a bad key/value in any point. Runs share
    ``DIR/data`` (or the recipe's ``data.root``); a point that changes the dataset itself
    (``data.*`` keys) gets ``DIR/data-<hash>`` so no two datasets overwrite each other.
    """
    if seeds < 1:
        raise ConfigError("seeds must be >= 1")
    base = list(base_overrides) + (["train.fast_dev_run=true"] if fast_dev_run else [])
    for item in base + [i for p in points for i in p]:
        if item.split("=", 1)[0].strip() == "train.seed":
            raise ConfigError("train.seed is set by --seeds (0..seeds-1); do not set or sweep it")
    workdir = Path(workdir).resolve()
    base_key = _dataset_key(load_config(recipe, base))
    specs = []
    for point in points:
        for seed in range(seeds):
            config = load_config(recipe, base + list(point) + [f"train.seed={seed}"])
            key, name = _dataset_key(config), slug(point)
            if not config.data.root:
                folder = "data" if key == base_key else f"data-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
                config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=str(workdir / folder)))
            elif key != base_key:
                raise ConfigError(f"point {name} changes the dataset but the recipe fixes data.root; "
                                  "remove data.root so each dataset gets its own folder")
            specs.append(RunSpec(tuple(point), name, seed, workdir / "runs" / name / f"seed{seed}", config))
    if len({spec.workdir for spec in specs}) != len(specs):
        raise ConfigError("two points give the same run folder (a point is repeated?)")
    return specs


def prepare_shared_data(specs: Sequence[RunSpec], progress: bool = False) -> dict:
    """Synthesize and cache log-mels once per distinct (data, features) config, so that
    workers only read and never race on writes. Returns {_prepared_key: PreparedData}."""
    from sedweak.datasets.prepare import prepare_data

    unique = {_prepared_key(spec.config): spec for spec in specs}
    return {key: prepare_data(spec.config, spec.workdir, progress=progress) for key, spec in unique.items()}


def _prepared_key(config: Config) -> str:
    return json.dumps([config.data.root, _dataset_key(config), to_dict(config.features)])


def _record(spec: RunSpec, status: str, metrics: dict | None = None, error: str | None = None,
            seconds: float = 0.0) -> dict:
    return {"slug": spec.slug, "point": list(spec.point), "seed": spec.seed, "workdir": str(spec.workdir),
            "status": status, "metrics": metrics, "error": error, "seconds": round(seconds, 1)}


def finished_record(spec: RunSpec) -> dict | None:
    """The record of a run already done (``metrics.json``), or of a folder holding another config."""
    saved = spec.workdir / "config.yaml"
    if saved.is_file() and load_config(saved) != spec.config:
        return _record(spec, "failed", error=f"{spec.workdir} holds a run of another config; "
                                             "use another --workdir or delete that run")
    metrics = spec.workdir / "metrics.json"
    return _record(spec, "skipped", metrics=json.loads(metrics.read_text())) if metrics.is_file() else None


def run_one(spec: RunSpec, data=None, verbose: int = 0) -> dict:
    """Train one run (resuming it when it left checkpoints); never raises, returns its record."""
    from sedweak import training

    start = time.monotonic()
    # an interrupted run (its config.yaml written, with or without checkpoints) is resumed
    resume = (spec.workdir / "config.yaml").is_file() or (spec.workdir / "checkpoints" / "state.json").is_file()
    try:
        result = training.run(spec.config, spec.workdir, resume=resume, verbose=verbose, data=data)
    except Exception as err:  # noqa: BLE001 - one bad run must not stop the sweep
        log.exception("run %s seed%d failed", spec.slug, spec.seed)
        return _record(spec, "failed", error=f"{type(err).__name__}: {err}", seconds=time.monotonic() - start)
    return _record(spec, "resumed" if resume else "ok", metrics=result.metrics, seconds=time.monotonic() - start)


def _init_worker(threads: int) -> None:
    """Worker start: cap TensorFlow's thread pools so ``jobs`` runs share the cores, not fight."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def threads_per_job(jobs: int) -> int:
    """TensorFlow threads per worker: the usable cores split between ``jobs``, at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // jobs)


def _run_parallel(todo: Sequence[RunSpec], jobs: int, on_done: Callable[[dict], None]) -> None:
    """Each run in a fresh "spawn" process (TF is not fork-safe; one run per process frees its memory)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                               initargs=(threads_per_job(jobs),), max_tasks_per_child=1)
    try:
        futures = {pool.submit(run_one, spec): spec for spec in todo}
        for future in as_completed(futures):
            try:
                on_done(future.result())
            except Exception as err:  # noqa: BLE001 - e.g. a worker killed by the OOM killer
                on_done(_record(futures[future], "failed", error=f"{type(err).__name__}: {err}"))
    finally:  # on Ctrl-C, start no queued run (a plain `with` would run them all first)
        pool.shutdown(cancel_futures=True)


def run_sweep(recipe: str | Path, workdir: str | Path, points: Sequence[Sequence[str]], seeds: int = 1,
              jobs: int = 1, base_overrides: Sequence[str] = (), fast_dev_run: bool = False,
              progress: Callable[[dict], None] = lambda record: None, verbose: int = 0) -> list[dict]:
    """Run every (point, seed) not done yet; returns one record per run in (point, seed) order.

    ``jobs == 1`` trains in this process; ``jobs > 1`` in that many spawned workers with
    ``cpu_count // jobs`` TensorFlow threads each. ``DIR/sweep_results.json`` is rewritten
    after each run. A record: {slug, point, seed, workdir, status (ok | resumed | skipped |
    failed), metrics (``training.run`` metrics or None), error, seconds}.
    """
    workdir = Path(workdir).resolve()
    if jobs < 1:
        raise ConfigError("jobs must be >= 1")
    specs = plan_runs(recipe, workdir, points, seeds, base_overrides, fast_dev_run)
    records: dict[int, dict] = {}

    def done(index: int, record: dict) -> None:
        records[index] = record
        atomic_write_json(workdir / "sweep_results.json", [records[i] for i in sorted(records)])
        progress(record)

    todo = []
    for index, spec in enumerate(specs):
        record = finished_record(spec)
        if record is None:
            todo.append(index)
        else:
            done(index, record)
    prepared = prepare_shared_data([specs[i] for i in todo], progress=verbose > 0) if todo else {}
    if jobs == 1:
        for i in todo:
            done(i, run_one(specs[i], prepared[_prepared_key(specs[i].config)], verbose))
    elif todo:
        prepared.clear()  # workers read the caches themselves
        by_workdir = {specs[i].workdir: i for i in todo}
        _run_parallel([specs[i] for i in todo], jobs, lambda r: done(by_workdir[Path(r["workdir"])], r))
    return [records[i] for i in sorted(records)]


def describe(record: dict) -> str:
    """One progress line for a finished run."""
    metrics = record.get("metrics") or {}
    if record["status"] == "failed":
        tail = record["error"]
    elif "tagging.f1" in metrics:
        tail = f"tag F1 {100 * metrics['tagging.f1']:.1f} %, seg ER {_as_float(metrics['segment.error_rate']):.2f}"
    else:   # a study without detection metrics (task: waa): its own columns
        tail = ", ".join(f"{title} {100 * _as_float(metrics.get(key), key):.1f}"
                         for key, title in table_columns([record]))
    return f"[{record['status']}] {record['slug']} seed{record['seed']} ({record['seconds']} s): {tail}"


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of its 95 % Student-t interval: t(0.975, n-1) * sd / sqrt(n).

    One value -> CI 0.0 (no spread can be estimated); none -> (nan, nan); any inf -> CI nan.
    """
    import numpy as np
    from scipy.stats import t

    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return math.nan, math.nan
    if data.size == 1 or not np.isfinite(data).all():  # an undefined (inf) ER has no spread either
        return float(data.mean()), 0.0 if data.size == 1 else math.nan
    return float(data.mean()), float(t.ppf(0.975, data.size - 1) * data.std(ddof=1) / math.sqrt(data.size))


def _as_float(value, key: str = "segment.error_rate") -> float:
    """metrics.json stores an undefined error rate (inf) and an undefined score (NaN, e.g.
    PSDS without strong labels, or a run from before PSDS was reported) as null."""
    if value is None:
        return math.inf if key.endswith("error_rate") else math.nan
    return float(value)


def table_columns(results: Sequence[dict]) -> tuple[tuple[str, str], ...]:
    """(metric key, title) of the table: the detection columns, or a WAA study's (its F1
    and centroid F per test length) when the runs report those instead. Run records and
    :func:`summarize` rows both hold their metrics under ``"metrics"``: either will do."""
    from sedweak.embeddings.waa_report import columns

    keys = [key for record in results for key in (record.get("metrics") or {})]
    return columns(keys) or TABLE_COLUMNS


def summarize(results: Sequence[dict]) -> list[dict]:
    """One row per point (first-seen order): params, n (finished seeds), n_failed, and per
    table metric (:func:`table_columns`) {"mean", "ci95", "values"} (fractions; ER as a ratio)."""
    table = table_columns(results)
    by_slug: dict[str, list[dict]] = {}
    for record in results:
        by_slug.setdefault(record["slug"], []).append(record)
    rows = []
    for name, records in by_slug.items():
        done = [r["metrics"] for r in records if r["status"] != "failed" and r.get("metrics")]
        row = {"slug": name, "params": dict(_key_and_raw(i, "point") for i in records[0]["point"]),
               "n": len(done), "n_failed": len(records) - len(done), "metrics": {}}
        for key, _ in table:
            values = [_as_float(m.get(key), key) for m in done]
            mean, ci = mean_ci95(values)
            row["metrics"][key] = {"mean": mean, "ci95": ci, "values": values}
        rows.append(row)
    return rows


def _param_keys(rows: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row["params"]))


def _cell(key: str, stat: dict) -> str:
    mean, ci = stat["mean"], stat["ci95"]
    if math.isnan(mean):
        return "n/a"
    if key.endswith("error_rate"):
        return "inf" if math.isinf(mean) else f"{mean:.2f} ± {ci:.2f}"
    if key.startswith("psds"):
        return f"{mean:.3f} ± {ci:.3f}"
    return f"{100 * mean:.1f} ± {100 * ci:.1f}"


def markdown(rows: Sequence[dict]) -> str:
    """The paper's table: swept keys, n, tagging P/R/F1, segment ER/F1, event F1 (mean ± 95 % CI)."""
    keys, table = _param_keys(rows) or ["point"], table_columns(rows)
    header = keys + ["n"] + [title for _, title in table]
    align = ["---"] * len(keys) + ["---:"] * (len(header) - len(keys))
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for row in rows:
        params = [row["params"].get(k, "") for k in keys] if row["params"] else [row["slug"]]
        n = f"{row['n']}" + (f" ({row['n_failed']} failed)" if row["n_failed"] else "")
        lines.append("| " + " | ".join(params + [n] + [_cell(k, row["metrics"][k]) for k, _ in table]) + " |")
    note = ("\nmean ± 95 % CI over seeds (Student t, n-1 degrees of freedom); F/P/R in %, ER and PSDS1 "
            "(sed_scores_eval, DCASE settings) as ratios.")
    if any(row["n"] == 1 for row in rows):
        note += "\nRows with n = 1 show CI = 0: a single seed gives no spread estimate."
    return "\n".join(lines) + "\n" + note + "\n"


def _csv(rows: Sequence[dict]) -> str:
    import csv

    keys, buffer, table = _param_keys(rows), io.StringIO(), table_columns(rows)
    writer = csv.writer(buffer, lineterminator="\n")
    stat_names = [f"{k}_{s}" for k, _ in table for s in ("mean", "ci95")]
    writer.writerow(["slug"] + keys + ["n", "n_failed"] + stat_names)
    for row in rows:
        stats = [row["metrics"][k][s] for k, _ in table for s in ("mean", "ci95")]
        writer.writerow([row["slug"]] + [row["params"].get(k, "") for k in keys] + [row["n"], row["n_failed"]] + stats)
    return buffer.getvalue()


def plot(rows: Sequence[dict], path: Path) -> Path:
    """PNG: x = the points in order; tagging and segment F1 (%, left), segment ER (right), 95 % CI bars
    (a WAA study: its F1 per test length)."""
    from sedweak.plots import new_figure, save_png

    figure = new_figure(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.6), layout="constrained")
    f1_axis = figure.add_subplot()
    lines = PLOT_LINES if rows and PLOT_LINES[0][0] in rows[0]["metrics"] else \
        [(k, t) for k, t in table_columns(rows) if k.startswith("waa.f1.")]
    axes = [f1_axis] * len(lines)
    if lines is PLOT_LINES:
        er_axis = f1_axis.twinx()  # ER is a ratio that can exceed 1: its own scale, so F1 stays readable
        er_axis.set_ylabel("segment ER")
        axes[-1] = er_axis
    x = list(range(len(rows)))
    for (key, label), axis, color in zip(lines, axes, ("C0", "C1", "C3", "C2", "C4", "C5")):
        scale = 1.0 if key.endswith("error_rate") else 100.0
        axis.errorbar(x, [scale * r["metrics"][key]["mean"] for r in rows], marker="o", capsize=4, label=label,
                      yerr=[scale * r["metrics"][key]["ci95"] for r in rows], color=color)
    f1_axis.set_xticks(x, [", ".join(r["params"].values()) or r["slug"] for r in rows], rotation=30, ha="right")
    f1_axis.set(xlabel=", ".join(_param_keys(rows)) or "point", ylabel="F1 %")
    f1_axis.grid(alpha=0.3)
    figure.legend(loc="outside upper center", ncols=3, fontsize=8)
    return save_png(figure, path, dpi=120)


def write_outputs(workdir: str | Path, results: Sequence[dict], rows: Sequence[dict]) -> str:
    """Write sweep_results.json, sweep_table.md/.csv, sweep_summary.json, sweep.png; return the table."""
    workdir, table = Path(workdir), markdown(rows)
    atomic_write_json(workdir / "sweep_results.json", list(results))
    atomic_write_text(workdir / "sweep_table.md", table)
    atomic_write_text(workdir / "sweep_table.csv", _csv(rows))
    atomic_write_json(workdir / "sweep_summary.json", {
        "ci": "95 % Student t over seeds: t.ppf(0.975, n-1) * sd / sqrt(n); 0 when n = 1",
        "num_runs": len(results), "num_failed": sum(r["status"] == "failed" for r in results), "rows": list(rows)})
    plot(rows, workdir / "sweep.png")
    cells = _waa_cells(results)
    if cells:
        from sedweak.embeddings.waa_report import write_matrix

        table += "\n" + write_matrix(workdir, rows, cells)
    return table


def _waa_cells(results: Sequence[dict]) -> dict[str, tuple[str, float]]:
    """Row slug -> (method, training seconds) of each point of a ``task: waa`` sweep, read
    from a run's saved config; empty for any other sweep."""
    from sedweak.embeddings.waa_report import run_cell

    cells = {}
    for record in results:
        saved = Path(record["workdir"]) / "config.yaml"
        if record["slug"] in cells or not saved.is_file():
            continue
        config = load_config(saved)
        if config.task == "waa":
            cells[record["slug"]] = run_cell(config)
    return cells
