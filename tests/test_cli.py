"""The ``sedweak`` commands, through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

from sedweak.cli import main
from sedweak.labels import read_strong_tsv

SED_EVAL_DATA = Path(__file__).parent / "data" / "sed_eval"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def street_tsvs(tmp_path):
    """sed_eval's street_fold1 lists (file, [scene,] onset, offset, label) as DESED TSVs."""
    out = []
    for name, columns in (("street_fold1_reference.txt", (0, 2, 3, 4)), ("street_fold1_detected.txt", (0, 1, 2, 3))):
        rows = ["filename\tonset\toffset\tevent_label"]
        for line in (SED_EVAL_DATA / name).read_text().splitlines():
            cells = line.split("\t")
            if len(cells) > max(columns):
                rows.append("\t".join(cells[c] for c in columns))
        path = tmp_path / name.replace(".txt", ".tsv")
        path.write_text("\n".join(rows) + "\n")
        out.append(path)
    return out


def test_score_reproduces_sed_eval_on_its_own_test_lists(tmp_path):
    reference, estimated = street_tsvs(tmp_path)
    result = invoke("score", reference, estimated, "--json", tmp_path / "m.json")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["segment.error_rate"] == pytest.approx(1.0616698292, abs=1e-9)
    assert "| street_fold1_detected.tsv | " in result.output and "Seg ER" in result.output


def test_score_names_the_file_and_line_of_a_malformed_row(tmp_path):
    reference = tmp_path / "ref.tsv"
    reference.write_text("filename\tonset\toffset\tevent_label\na.wav\t0.5\t1.0\tdog\n")
    estimated = tmp_path / "est.tsv"
    estimated.write_text("filename\tonset\toffset\tevent_label\na.wav\tsoon\t1.0\tdog\n")
    result = CliRunner().invoke(main, ["score", str(reference), str(estimated)])
    assert result.exit_code != 0
    assert "est.tsv:2" in result.output and "onset/offset must be numbers" in result.output


def test_score_needs_events_or_scores_and_names_a_bad_score_folder(tmp_path):
    reference = tmp_path / "ref.tsv"
    reference.write_text("filename\tonset\toffset\tevent_label\na.wav\t1\t2\tdog\n")
    result = CliRunner().invoke(main, ["score", str(reference)])
    assert result.exit_code != 0 and "give ESTIMATED" in result.output
    (tmp_path / "scores").mkdir()
    (tmp_path / "scores" / "a.tsv").write_text("onset\toffset\tdog\n0\t1\tinf\n")
    result = CliRunner().invoke(main, ["score", str(reference), "--scores", str(tmp_path / "scores")])
    assert result.exit_code == 1 and "a.tsv: NaN, infinite or non-numeric values" in result.output
    assert "Traceback" not in result.output


def test_score_rejects_an_unknown_label_and_a_missing_file(tmp_path):
    reference = tmp_path / "ref.tsv"
    reference.write_text("filename\tonset\toffset\tevent_label\na.wav\t0.5\t1.0\tdog\n")
    estimated = tmp_path / "est.tsv"
    estimated.write_text("filename\tonset\toffset\tevent_label\na.wav\t0.5\t1.0\tcat\n")
    result = CliRunner().invoke(main, ["score", str(reference), str(estimated)])
    assert result.exit_code != 0 and "unknown label 'cat'" in result.output and "est.tsv:2" in result.output
    result = CliRunner().invoke(main, ["score", str(reference), str(tmp_path / "nope.tsv")])
    assert result.exit_code != 0 and "nope.tsv" in result.output


def test_train_predict_evaluate_round_trip(tmp_path, tiny_recipe):
    recipe, overrides = tiny_recipe
    workdir = tmp_path / "run"
    sets = [x for o in overrides for x in ("--set", o)]
    result = invoke("train", recipe, "--workdir", workdir, "--fast-dev-run", *sets)
    assert result.exit_code == 0, result.output
    assert "Seg F1" in result.output and (workdir / "model.keras").is_file()

    # Predict on a clip longer than the training clip (two eval clips back to back).
    import numpy as np
    import soundfile as sf

    clips = sorted((workdir / "data" / "audio" / "eval").glob("*.wav"))
    long_audio = np.concatenate([sf.read(c)[0] for c in clips[:2]])
    sf.write(tmp_path / "long.wav", long_audio, 16000)
    (tmp_path / "broken.wav").write_bytes(b"not audio at all")
    out = tmp_path / "events.tsv"
    result = CliRunner().invoke(main, ["predict", str(workdir / "model.keras"), str(tmp_path / "long.wav"),
                                       str(tmp_path / "broken.wav"), "--out", str(out),
                                       "--frames", str(tmp_path / "frames.h5")])
    assert result.exit_code == 0, result.output
    assert "broken.wav" in result.output and "unreadable audio" in result.output
    assert set(read_strong_tsv(out)) == {"long.wav"}
    with h5py.File(tmp_path / "frames.h5") as h5:
        # 8 s at 100 frames/s, pooled 4x by the tiny model: 200 frames x 3 classes.
        assert h5["long.wav"].shape == (200, 3)
        assert h5.attrs["frames_per_second"] == pytest.approx(25.0)

    result = invoke("evaluate", workdir / "model.keras", "--json", tmp_path / "eval.json")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "eval.json").read_text()) == json.loads((workdir / "metrics.json").read_text())

    # Frame scores of the eval clips, scored from files, give evaluate's PSDS (6 digits kept).
    result = invoke("predict", workdir / "model.keras", workdir / "data" / "audio" / "eval",
                    "--out", tmp_path / "eval_events.tsv", "--scores", tmp_path / "scores")
    assert result.exit_code == 0, result.output
    result = invoke("score", workdir / "data" / "metadata" / "eval.tsv", "--scores", tmp_path / "scores",
                    "--json", tmp_path / "scored.json")
    assert result.exit_code == 0, result.output
    scored, evaluated = (json.loads((tmp_path / n).read_text()) for n in ("scored.json", "eval.json"))
    assert "PSDS1" in result.output and "Seg F1" not in result.output
    for key in ("psds1", "psds2", "intersection.f1"):
        assert scored[key] == pytest.approx(evaluated[key], abs=1e-3), key


def test_pretrain_then_train_init_then_embed(tmp_path, tiny_recipe):
    """The self-supervised path through the CLI: pretrain on a folder, fine-tune from it
    (the run's config records train.init_from), embed with the pre-trained model."""
    import numpy as np
    import soundfile as sf

    recipe, overrides = tiny_recipe
    sets = [x for o in overrides + ["pretrain.window_seconds=0.5"] for x in ("--set", o)]
    folder = tmp_path / "audio"
    folder.mkdir()
    for i in range(2):
        sf.write(folder / f"n{i}.wav", (0.1 * np.random.default_rng(i).standard_normal(32000)).astype(np.float32),
                 16000)
    result = invoke("pretrain", recipe, "--workdir", tmp_path / "pre", "--audio", folder, "--fast-dev-run", *sets)
    assert result.exit_code == 0, result.output
    model = tmp_path / "pre" / "model.keras"
    assert f"--init {model}" in result.output
    result = invoke("train", recipe, "--workdir", tmp_path / "run", "--fast-dev-run", "--init", model, *sets)
    assert result.exit_code == 0, result.output
    assert f"init_from: {model}" in (tmp_path / "run" / "config.yaml").read_text()
    result = invoke("embed", model, folder, "--out", tmp_path / "emb.h5")
    assert result.exit_code == 0 and "2 vectors of 8 from 2 files" in result.output, result.output


def test_train_reports_config_errors_cleanly(tmp_path, tiny_recipe):
    recipe, _ = tiny_recipe
    result = CliRunner().invoke(main, ["train", str(recipe), "--workdir", str(tmp_path / "w"),
                                       "--set", "train.epochz=3"])
    assert result.exit_code != 0
    assert "unknown key(s) ['epochz']" in result.output and "tiny.yaml" in result.output


def test_predict_names_a_missing_model(tmp_path):
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "m.keras"), str(tmp_path), "--out", "x.tsv"])
    assert result.exit_code != 0 and "m.keras: model file not found" in result.output


def test_demo_fast_dev_run_writes_the_report(tmp_path, monkeypatch, toy_bank_dir):
    result = invoke("demo", "--workdir", tmp_path / "demo", "--fast-dev-run",
                    "--set", f"data.soundbank={toy_bank_dir}", "--set", "data.classes=[]")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert set(metrics) == {"crnn", "mfcc_knn"}     # the weak-only comparison is opt-in
    for name in ("report.md", "model.keras", "model.json", "event_roll.png"):
        assert (tmp_path / "demo" / name).is_file(), name
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "| mfcc_knn |" in report
    # The demo recipe's eval splits: seen collections, unseen, unseen mixed another way.
    by_split = json.loads((tmp_path / "demo" / "metrics_by_split.json").read_text())
    assert list(by_split) == ["eval_seen", "eval", "eval_remix"]
    assert all(set(v) == {"crnn", "mfcc_knn"} for v in by_split.values())
    assert by_split["eval"] == metrics and "psds1" in by_split["eval_seen"]["crnn"]
    assert "| crnn | eval_seen (seen collections, unheard recordings) |" in report
    assert "--with-weak-only" in report and "`crnn_weak_only` (" not in report

    # --with-weak-only in the same folder: the data and the crnn training are reused, the
    # weak-only twin trains and joins every table.
    crnn_best = (tmp_path / "demo" / "crnn" / "checkpoints" / "best.keras").stat().st_mtime_ns
    result = invoke("demo", "--workdir", tmp_path / "demo", "--fast-dev-run", "--with-weak-only",
                    "--set", f"data.soundbank={toy_bank_dir}", "--set", "data.classes=[]")
    assert result.exit_code == 0, result.output
    by_split = json.loads((tmp_path / "demo" / "metrics_by_split.json").read_text())
    assert all(set(v) == {"crnn", "crnn_weak_only", "mfcc_knn"} for v in by_split.values())
    assert (tmp_path / "demo" / "crnn" / "checkpoints" / "best.keras").stat().st_mtime_ns == crnn_best  # not retrained
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "| crnn_weak_only | eval (unseen collections) |" in report and "--with-weak-only" not in report


def test_a_user_error_is_one_line_and_a_bug_is_a_traceback(tmp_path, monkeypatch):
    """A recipe error prints one line (``-v`` raises it with its traceback); an exception that is
    not a :class:`sedweak.errors.UserError` -- a bug -- is never turned into a one-liner."""
    from sedweak.config import ConfigError

    recipe = tmp_path / "bad.yaml"
    recipe.write_text("train:\n  epochs: -1\n")
    args = ["train", str(recipe), "--workdir", str(tmp_path / "w")]
    plain = CliRunner().invoke(main, args)
    assert plain.exit_code == 1 and plain.output.strip().count("\n") == 0
    assert plain.output.startswith("Error: ") and "train.batch_size and train.epochs must be > 0" in plain.output
    verbose = CliRunner().invoke(main, ["-v"] + args)
    assert isinstance(verbose.exception, ConfigError)     # re-raised: the traceback is printed

    import sedweak.config

    def buggy(*_args, **_kwargs):
        raise ValueError("an index went wrong inside sedweak")

    monkeypatch.setattr(sedweak.config, "load_config", buggy)
    bug = CliRunner().invoke(main, ["train", "recipes/demo.yaml", "--workdir", str(tmp_path / "w2")])
    assert isinstance(bug.exception, ValueError) and "Error: an index went wrong" not in bug.output
