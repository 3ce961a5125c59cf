"""The WAA study's tables (Turpault et al., Tables 2-3): method x training length x test length.

A sweep of ``task: waa`` runs (``sedweak sweep recipes/waa_study.yaml --grid waa.method=...
--grid waa.train_segment_seconds=... --seeds 3``) writes, beside its usual tables,
``waa_matrix.md`` (the paper's layout, F1 % mean ± 95 % CI over seeds), ``waa_matrix.json``
and ``waa_matrix.png`` (one heatmap per method, train length x test length). No TensorFlow.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

_KEY = re.compile(r"^waa\.(f1|top1_f1|centroid_f)\.test_([0-9.e+-]+)s$")
KINDS = ("f1", "top1_f1", "centroid_f")
SHORT = {"f1": "F1 %", "top1_f1": "top-1 F1 %", "centroid_f": "centroid F %"}
TITLES = {kind: f"{short} @{{}}s" for kind, short in SHORT.items()}
CAPTIONS = {"f1": "F1 % (macro over classes, sigmoid decisions at waa.threshold: the paper's measure)",
            "top1_f1": "top-1 F1 % (macro over classes, each clip's highest-scoring class)",
            "centroid_f": "centroid F % (nearest train-class centroid of the embedding; no classifier)"}


def is_waa_key(key: str) -> bool:
    return bool(_KEY.match(key))


def test_seconds(key: str) -> float:
    return float(_KEY.match(key).group(2))


def columns(keys: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """(key, title) of every WAA metric among ``keys``: F1, top-1 F1, centroid F, each by test length."""
    found = sorted({k for k in keys if is_waa_key(k)},
                   key=lambda k: (KINDS.index(_KEY.match(k).group(1)), test_seconds(k)))
    return tuple((k, TITLES[_KEY.match(k).group(1)].format(f"{test_seconds(k):g} ")) for k in found)


def run_cell(config) -> tuple[str, float]:
    """(method, training length in seconds) of one run's resolved config."""
    return config.waa.method, float(config.waa.train_segment_seconds)


def matrix(rows: Sequence[dict], cells: dict[str, tuple[str, float]], kind: str = "f1") -> dict:
    """{method: {train seconds: {test seconds: {"mean", "ci95", "values", "n"}}}} from
    :func:`sedweak.training.sweep.summarize` rows; ``cells``: row slug -> (method, train s)."""
    out: dict = {}
    for row in rows:
        if row["slug"] not in cells:
            continue
        method, train = cells[row["slug"]]
        for key, stat in row["metrics"].items():
            match = _KEY.match(key)
            if match and match.group(1) == kind:
                out.setdefault(method, {}).setdefault(train, {})[test_seconds(key)] = {**stat, "n": row["n"]}
    return out


def markdown(table: dict, kind: str = "f1") -> str:
    """The paper's layout: Method | Training s | one column per test length (%, mean ± CI)."""
    tests = sorted({t for by_train in table.values() for cells in by_train.values() for t in cells})
    lines = ["| Method | Training s | " + " | ".join(f"Test {t:g} s" for t in tests) + " | n |",
             "|---|---:|" + "---:|" * (len(tests) + 1)]
    for method, by_train in table.items():
        for train in sorted(by_train):
            cells = by_train[train]
            text = [_percent(cells.get(t)) for t in tests]
            n = max((c["n"] for c in cells.values()), default=0)
            lines.append(f"| {method} | {train:g} | " + " | ".join(text) + f" | {n} |")
    return "\n".join(lines) + f"\n\n{CAPTIONS[kind]}, mean ± 95 % CI over seeds (Student t).\n"


def _percent(stat: dict | None) -> str:
    if not stat or stat["mean"] != stat["mean"]:
        return "n/a"
    return f"{100 * stat['mean']:.1f} ± {100 * stat['ci95']:.1f}"


def heatmap_png(tables: dict[str, dict], path: str | Path) -> Path:
    """One heatmap per (measure, method): rows = training length, columns = test length, % annotated."""
    from sedweak.plots import new_figure, save_png

    methods = list(dict.fromkeys(m for table in tables.values() for m in table))
    figure = new_figure(figsize=(3.6 * max(1, len(methods)), 3.2 * len(tables)), layout="constrained")
    grid = figure.subplots(len(tables), max(1, len(methods)), squeeze=False)
    for row, (kind, table) in enumerate(tables.items()):
        image = _heatmaps(grid[row], table, methods, kind)
    figure.colorbar(image, ax=list(grid.ravel()), shrink=0.6, label="%")
    return save_png(figure, path, dpi=120)


def _heatmaps(axes, table: dict, methods: list[str], kind: str):
    import numpy as np

    tests = sorted({t for by_train in table.values() for cells in by_train.values() for t in cells})
    image = None
    for axis, method in zip(axes, methods):
        if method not in table:
            axis.set_axis_off()
            continue
        trains = sorted(table[method])
        values = np.array([[100 * table[method][tr].get(t, {"mean": np.nan})["mean"] for t in tests]
                           for tr in trains])
        image = axis.imshow(values, vmin=0, vmax=100, cmap="viridis")
        for (i, j), value in np.ndenumerate(values):
            axis.text(j, i, "n/a" if np.isnan(value) else f"{value:.0f}", ha="center", va="center",
                      color="white" if np.isnan(value) or value < 60 else "black", fontsize=9)
        axis.set_xticks(range(len(tests)), [f"{t:g}" for t in tests])
        axis.set_yticks(range(len(trains)), [f"{t:g}" for t in trains])
        axis.set(title=f"{method}: {SHORT[kind]}", xlabel="test length (s)", ylabel="training length (s)")
    return image


def write_matrix(workdir: str | Path, rows: Sequence[dict], cells: dict[str, tuple[str, float]]) -> str:
    """Write ``waa_matrix.md`` (one table per measure), ``.json`` and ``.png``; return the Markdown."""
    from sedweak.io_utils import atomic_write_json, atomic_write_text

    workdir = Path(workdir)
    tables = {kind: matrix(rows, cells, kind) for kind in KINDS}
    tables = {kind: table for kind, table in tables.items() if table}
    text = "\n".join(markdown(table, kind) for kind, table in tables.items())
    atomic_write_text(workdir / "waa_matrix.md", text)
    atomic_write_json(workdir / "waa_matrix.json", json.loads(json.dumps(
        {**{kind: _string_keys(table) for kind, table in tables.items()}, "ci": "95 % Student t over seeds"},
        default=float)))
    if tables:
        heatmap_png(tables, workdir / "waa_matrix.png")
    return text


def _string_keys(table: dict) -> dict:
    return {m: {f"{tr:g}": {f"{t:g}": c for t, c in by_test.items()} for tr, by_test in by_train.items()}
            for m, by_train in table.items()}
