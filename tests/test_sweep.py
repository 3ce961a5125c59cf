"""Sweeps: point parsing, planning, resumable runs, failures, the mean ± CI table."""

from __future__ import annotations

import collections
import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import sedweak.training.sweep as sweep
from sedweak.cli import main
from sedweak.config import ConfigError, save_config
from sedweak.evaluation import METRIC_KEYS
from sedweak.io_utils import atomic_write_json

OUTPUTS = ("sweep_results.json", "sweep_table.md", "sweep_table.csv", "sweep_summary.json", "sweep.png")


@pytest.fixture
def fake_training(monkeypatch):
    """Replace ``training.run`` (and data preparation) by a stub that writes metrics.json.

    tagging.f1 = strong_weight / 10 + seed / 100, so summaries have known values; a run whose
    strong_weight is in ``calls.fail_weights`` raises. ``calls`` lists (workdir, resume).
    """
    import sedweak.training

    calls = SimpleNamespace(runs=[], fail_weights=set())

    def run(config, workdir, resume=False, verbose=1, data=None):
        calls.runs.append((Path(workdir), resume))
        if config.loss.strong_weight in calls.fail_weights:
            raise RuntimeError("boom: loss exploded")
        metrics = {key: 0.5 for key in METRIC_KEYS}
        metrics["tagging.f1"] = config.loss.strong_weight / 10 + config.train.seed / 100
        metrics["per_class"] = {}
        save_config(config, Path(workdir) / "config.yaml")
        atomic_write_json(Path(workdir) / "metrics.json", metrics)
        return SimpleNamespace(metrics=metrics)

    monkeypatch.setattr(sedweak.training, "run", run)
    monkeypatch.setattr(sweep, "prepare_shared_data", lambda specs, progress=False: collections.defaultdict(
        lambda: None))
    return calls


def invoke(*args):
    return CliRunner().invoke(main, ["sweep", *[str(a) for a in args]], catch_exceptions=False)


# ----------------------------------------------------------------------------- points


def test_grid_is_the_cartesian_product_first_key_slowest():
    points = sweep.parse_grid(["loss.strong_weight=0.002,1", "loss.weak_weight=1,0.2,0.02"])
    assert points == [["loss.strong_weight=0.002", "loss.weak_weight=1"],
                      ["loss.strong_weight=0.002", "loss.weak_weight=0.2"],
                      ["loss.strong_weight=0.002", "loss.weak_weight=0.02"],
                      ["loss.strong_weight=1", "loss.weak_weight=1"],
                      ["loss.strong_weight=1", "loss.weak_weight=0.2"],
                      ["loss.strong_weight=1", "loss.weak_weight=0.02"]]


def test_grid_and_pairs_keep_commas_inside_yaml_lists():
    assert sweep.parse_grid(["model.rnn_units=[8, 8],[16]"]) == [["model.rnn_units=[8, 8]"], ["model.rnn_units=[16]"]]
    assert sweep.parse_pairs("model.conv_filters=[4,4,4],loss.weak_weight=1;loss.weak_weight=0.2;") == [
        ["model.conv_filters=[4,4,4]", "loss.weak_weight=1"], ["loss.weak_weight=0.2"]]


def test_paper_pairs_are_the_seven_points_in_paper_order():
    points = sweep.points_from_options(use_paper_pairs=True)
    weights = [tuple(float(item.split("=")[1]) for item in point) for point in points]
    assert weights == [(0.002, 1), (0.02, 1), (0.2, 1), (1, 1), (1, 0.2), (1, 0.02), (1, 0.002)]
    assert points[0] == ["loss.strong_weight=0.002", "loss.weak_weight=1"]
    assert sweep.parse_pairs(";".join(",".join(p) for p in points)) == points


@pytest.mark.parametrize("grid, pairs, paper, message", [
    (["loss.strong_weight"], None, False, "expected SECTION.KEY=VALUE"),
    (["loss.strong_weight=1,,2"], None, False, "empty value"),
    (["loss.strong_weight=1", "loss.strong_weight=2"], None, False, "given twice"),
    ((), "loss.strong_weight=1,loss.strong_weight=2", False, "given twice"),
    ((), ";", False, "no point"),
    (["loss.strong_weight=1"], "loss.weak_weight=1", False, "only one of"),
    ((), "loss.weak_weight=1", True, "only one of"),
])
def test_bad_point_options_are_config_errors(grid, pairs, paper, message):
    with pytest.raises(ConfigError, match=message):
        sweep.points_from_options(grid, pairs, paper)


def test_no_point_option_means_the_recipe_alone_and_slugs_are_readable_folder_names():
    assert sweep.points_from_options() == [[]]
    assert sweep.slug([]) == "base"
    assert sweep.slug(["loss.strong_weight=0.002", "loss.weak_weight=1"]) == (
        "loss.strong_weight=0.002__loss.weak_weight=1")
    assert sweep.slug(["model.rnn_units=[8, 8]", "data.root=/a b"]) == "model.rnn_units=[8,8]__data.root=_ab"


# ----------------------------------------------------------------------------- planning


def test_plan_seeds_runs_shares_one_dataset_and_one_folder_per_run(tmp_path, tiny_recipe):
    recipe, overrides = tiny_recipe
    specs = sweep.plan_runs(recipe, tmp_path, [["loss.weak_weight=1"], ["loss.weak_weight=0.2"]], 3, overrides)
    assert [(s.slug, s.seed) for s in specs] == [(f"loss.weak_weight={w}", k) for w in ("1", "0.2") for k in range(3)]
    assert [s.config.train.seed for s in specs] == [0, 1, 2, 0, 1, 2]
    assert {s.config.data.synth.seed for s in specs} == {0}
    assert {s.config.data.root for s in specs} == {str(tmp_path.resolve() / "data")}
    assert specs[4].workdir == tmp_path.resolve() / "runs" / "loss.weak_weight=0.2" / "seed1"
    assert specs[4].config.loss.weak_weight == 0.2


def test_points_that_change_the_dataset_get_their_own_data_folder(tmp_path, tiny_recipe):
    recipe, overrides = tiny_recipe
    specs = sweep.plan_runs(recipe, tmp_path, [["data.synth.num_train_clips=12"], ["data.synth.num_train_clips=8"]],
                            1, overrides)
    roots = [Path(s.config.data.root).name for s in specs]
    assert roots[0] == "data" and roots[1].startswith("data-")
    with pytest.raises(ConfigError, match="fixes data.root"):
        sweep.plan_runs(recipe, tmp_path, [["data.synth.num_train_clips=8"]], 1,
                        overrides + [f"data.root={tmp_path / 'mine'}"])


@pytest.mark.parametrize("points, base, message", [
    ([["loss.strong_weight=1"], ["loss.strong_wieght=1"]], [], "unknown key"),
    ([["loss.strong_weight=1"], ["loss.strong_weight=-1"]], [], "loss weights must be >= 0"),
    ([["train.seed=3"]], [], "set by --seeds"),
    ([["loss.strong_weight=1"]], ["train.epochs=zero"], "expected an integer"),
    ([["loss.weak_weight=1"], ["loss.weak_weight=1.0"], ["loss.weak_weight=1"]], [], "same run folder"),
])
def test_bad_key_or_value_fails_before_any_run(tmp_path, tiny_recipe, fake_training, points, base, message):
    recipe, overrides = tiny_recipe
    with pytest.raises(ConfigError, match=message):
        sweep.run_sweep(recipe, tmp_path / "sw", points, 2, 1, overrides + base)
    assert fake_training.runs == [] and not (tmp_path / "sw").exists()


def test_threads_per_job_share_the_cores():
    assert sweep.threads_per_job(1) >= 1
    assert sweep.threads_per_job(10_000) == 1


# ----------------------------------------------------------------------------- statistics


def test_mean_ci95_golden_values():
    mean, ci = sweep.mean_ci95([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6)
    assert ci == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-6)
    assert sweep.mean_ci95([0.4, 0.6]) == pytest.approx((0.5, 12.706205 * math.sqrt(0.02) / math.sqrt(2)))
    assert sweep.mean_ci95([0.42]) == (0.42, 0.0)
    assert all(math.isnan(v) for v in sweep.mean_ci95([]))


def _record(point, seed, status="ok", **metrics):
    values = {key: 0.5 for key in METRIC_KEYS} | metrics
    return {"slug": sweep.slug(point), "point": point, "seed": seed, "status": status,
            "metrics": None if status == "failed" else values, "error": None, "seconds": 1.0}


def test_summary_and_table_golden():
    point, other = ["loss.strong_weight=1", "loss.weak_weight=0.2"], ["loss.strong_weight=0.02"]
    results = [_record(point, k, **{"tagging.f1": f, "segment.error_rate": er})
               for k, (f, er) in enumerate([(0.5, 0.8), (0.6, 0.9), (0.7, None)])]
    results[0]["metrics"]["psds1"], results[1]["metrics"]["psds1"] = 0.25, 0.35   # the third: before PSDS
    results += [_record(other, 0, **{"tagging.f1": 0.25}), _record(other, 1, status="failed")]
    rows = sweep.summarize(results)
    assert [(r["params"], r["n"], r["n_failed"]) for r in rows] == [
        ({"loss.strong_weight": "1", "loss.weak_weight": "0.2"}, 3, 0), ({"loss.strong_weight": "0.02"}, 1, 1)]
    assert rows[0]["metrics"]["tagging.f1"]["values"] == [0.5, 0.6, 0.7]
    assert math.isinf(rows[0]["metrics"]["segment.error_rate"]["mean"])  # a null ER is inf (undefined)
    assert math.isnan(rows[0]["metrics"]["segment.error_rate"]["ci95"])
    table = sweep.markdown(rows)
    lines = table.splitlines()
    assert lines[0] == ("| loss.strong_weight | loss.weak_weight | n | Tag P % | Tag R % | Tag F1 % | Seg ER | "
                        "Seg F1 % | Event F1 % | PSDS1 |")
    # A run without PSDS (NaN) makes the mean undefined rather than silently averaging two of three.
    assert lines[2] == "| 1 | 0.2 | 3 | 50.0 ± 0.0 | 50.0 ± 0.0 | 60.0 ± 24.8 | inf | 50.0 ± 0.0 | 50.0 ± 0.0 | n/a |"
    assert lines[3] == ("| 0.02 |  | 1 (1 failed) | 50.0 ± 0.0 | 50.0 ± 0.0 | 25.0 ± 0.0 | 0.50 ± 0.00 | "
                        "50.0 ± 0.0 | 50.0 ± 0.0 | n/a |")
    del results[2]
    assert sweep.markdown(sweep.summarize(results)).splitlines()[2].endswith("| 0.300 ± 0.635 |")
    assert "n = 1 show CI = 0" in table


# ----------------------------------------------------------------------------- running (stubbed training)


def test_rerun_skips_finished_runs_and_resumes_interrupted_ones(tmp_path, tiny_recipe, fake_training):
    recipe, overrides = tiny_recipe
    points = [["loss.strong_weight=0.2"], ["loss.strong_weight=1"]]
    interrupted = tmp_path / "runs" / "loss.strong_weight=1" / "seed1" / "checkpoints" / "state.json"
    interrupted.parent.mkdir(parents=True)
    interrupted.write_text("{}")
    first = sweep.run_sweep(recipe, tmp_path, points, 2, 1, overrides)
    assert [r["status"] for r in first] == ["ok", "ok", "ok", "resumed"]
    assert [resume for _, resume in fake_training.runs] == [False, False, False, True]
    fake_training.runs.clear()
    second = sweep.run_sweep(recipe, tmp_path, points, 2, 1, overrides)
    assert fake_training.runs == []
    assert [r["status"] for r in second] == ["skipped"] * 4
    assert [r["metrics"]["tagging.f1"] for r in second] == pytest.approx([0.02, 0.03, 0.1, 0.11])
    changed = sweep.run_sweep(recipe, tmp_path, points, 2, 1, overrides + ["train.epochs=5"])
    assert fake_training.runs == [] and {r["status"] for r in changed} == {"failed"}
    assert "another config" in changed[0]["error"]


def test_cli_reports_a_failed_run_and_finishes_the_others(tmp_path, tiny_recipe, fake_training):
    recipe, overrides = tiny_recipe
    fake_training.fail_weights = {0.2}
    sets = [x for o in overrides for x in ("--set", o)]
    result = invoke(recipe, "--workdir", tmp_path, "--pairs", "loss.strong_weight=0.2;loss.strong_weight=1",
                    "--seeds", 2, *sets)
    assert result.exit_code == 1
    assert "2 of 4 runs failed" in result.stderr
    assert "| 0.2 | 0 (2 failed) | n/a |" in result.stdout and "| 1 | 2 | 50.0 ± 0.0 |" in result.stdout
    records = json.loads((tmp_path / "sweep_results.json").read_text())
    assert [r["status"] for r in records] == ["failed", "failed", "ok", "ok"]
    assert records[0]["error"] == "RuntimeError: boom: loss exploded"
    assert "[failed] loss.strong_weight=0.2 seed0" in result.stderr
    summary = json.loads((tmp_path / "sweep_summary.json").read_text())
    assert summary["num_failed"] == 2 and summary["rows"][0]["metrics"]["tagging.f1"]["mean"] is None


def test_cli_bad_key_is_a_clean_error(tmp_path, tiny_recipe, fake_training):
    recipe, _ = tiny_recipe
    result = invoke(recipe, "--workdir", tmp_path / "sw", "--grid", "loss.nope=1,2")
    assert result.exit_code == 1 and "unknown key(s) ['nope']" in result.stderr
    assert fake_training.runs == [] and not (tmp_path / "sw").exists()


# ----------------------------------------------------------------------------- real training


def check_outputs(workdir, rows, seeds):
    for name in OUTPUTS:
        assert (workdir / name).is_file(), name
    summary = json.loads((workdir / "sweep_summary.json").read_text())
    assert [row["n"] for row in summary["rows"]] == [seeds] * rows
    with open(workdir / "sweep_table.csv") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == rows and all(0.0 <= float(r["tagging.f1_mean"]) <= 1.0 for r in table)
    markdown_lines = (workdir / "sweep_table.md").read_text().splitlines()
    assert len([line for line in markdown_lines if line.startswith("| ")]) == rows + 1  # header + rows
    assert (workdir / "sweep.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow   # real trainings; the orchestration is pinned with fake_training in the default suite
def test_two_points_two_seeds_end_to_end_then_rerun_trains_nothing(tmp_path, tiny_recipe, monkeypatch):
    import sedweak.training

    recipe, overrides = tiny_recipe
    points = sweep.parse_grid(["loss.strong_weight=0.02,1"])
    workdir = tmp_path / "sw"
    results = sweep.run_sweep(recipe, workdir, points, 2, 1, overrides + ["train.epochs=1"])
    assert [r["status"] for r in results] == ["ok"] * 4
    sweep.write_outputs(workdir, results, sweep.summarize(results))
    check_outputs(workdir, rows=2, seeds=2)
    assert sorted(p.name for p in workdir.iterdir()) == sorted(("data", "runs") + OUTPUTS)
    assert all((workdir / "runs" / sweep.slug(p) / f"seed{k}" / "metrics.json").is_file()
               for p in points for k in (0, 1))

    monkeypatch.setattr(sedweak.training, "run", lambda *a, **k: pytest.fail("a finished run was retrained"))
    again = sweep.run_sweep(recipe, workdir, points, 2, 1, overrides + ["train.epochs=1"])
    assert [r["metrics"] for r in again] == json.loads(json.dumps([r["metrics"] for r in results]))


@pytest.mark.slow
def test_two_parallel_jobs(tmp_path, tiny_recipe):
    recipe, overrides = tiny_recipe
    result = invoke(recipe, "--workdir", tmp_path, "--grid", "loss.weak_weight=1,0.02", "--jobs", 2,
                    *[x for o in overrides + ["train.epochs=1"] for x in ("--set", o)])
    assert result.exit_code == 0, result.stderr
    check_outputs(tmp_path, rows=2, seeds=1)
    records = json.loads((tmp_path / "sweep_results.json").read_text())
    assert [r["status"] for r in records] == ["ok", "ok"]
