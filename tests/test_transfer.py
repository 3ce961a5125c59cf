"""``sedweak transfer``: label tables, splits, draws, learning curves, the report, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from sedweak.cli import main
from sedweak.collections.labels import LabelTable, match_files, read_label_csv, read_labels
from sedweak.collections.mfcc_stats import MFCC_STATS_DIM, mfcc_statistics
from sedweak.collections.transfer import (
    CLASSIFIERS,
    TransferSettings,
    cv_splits,
    draw_per_class,
    feasible_sizes,
    learning_curve,
)
from sedweak.collections.transfer_report import mean_ci, summarise
from sedweak.embeddings.extract import Embeddings, write_embeddings
from sedweak.labels import LabelError

RATE = 16000
TONES_HZ = {"low": 300.0, "mid": 1000.0, "high": 3000.0}


def blobs(per_class: int, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Three classes far apart in every dimension (centres of spread 10, points 0.1 around
    them): any classifier separates them, even after z-scoring each dimension."""
    rng = np.random.default_rng(seed)
    centres = 10.0 * rng.standard_normal((3, dim))
    x = np.concatenate([c + 0.1 * rng.standard_normal((per_class, dim)) for c in centres])
    return x.astype(np.float32), [c for c in ("a", "b", "c") for _ in range(per_class)]


def tone_library(root, per_class: int = 4, broken: bool = True):
    """``root/<class>/<class><i>.wav``: tones of each class's pitch, varied in level and pitch."""
    rng = np.random.default_rng(0)
    for name, hz in TONES_HZ.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            t = np.arange(int(RATE * (0.6 + 0.1 * i))) / RATE
            wave = (0.1 + 0.05 * i) * np.sin(2 * np.pi * hz * (1 + 0.02 * i) * t) + 0.003 * rng.standard_normal(len(t))
            sf.write(root / name / f"{name}{i}.wav", wave.astype(np.float32), RATE)
    if broken:
        (root / "low" / "broken.wav").write_bytes(b"RIFF\x00\x00not audio")
    return root


def test_predefined_folds_test_each_fold_once_in_order():
    splits = cv_splits(["a", "b", "a", "b", "a", "b"], [2, 2, 1, 1, 3, 3])
    assert [s.name for s in splits] == ["fold 1", "fold 2", "fold 3"]
    assert [s.test.tolist() for s in splits] == [[2, 3], [0, 1], [4, 5]]
    assert [s.train.tolist() for s in splits] == [[0, 1, 4, 5], [2, 3, 4, 5], [0, 1, 2, 3]]
    with pytest.raises(LabelError, match="all labelled files are in fold 4"):
        cv_splits(["a", "b"], [4, 4])


def test_stratified_folds_test_every_file_once_with_every_class_in_each():
    labels = ["a"] * 6 + ["b"] * 9
    splits = cv_splits(labels, None, stratified_folds=3, seed=1)
    assert sorted(np.concatenate([s.test for s in splits]).tolist()) == list(range(15))
    for s in splits:
        assert sorted(np.asarray(labels)[s.test].tolist()) == ["a"] * 2 + ["b"] * 3
        assert not set(s.train) & set(s.test)
    assert [s.test.tolist() for s in splits] == [s.test.tolist() for s in cv_splits(labels, None, 3, seed=1)]
    with pytest.raises(LabelError, match="class 'a' has 6 labelled file.*7 folds"):
        cv_splits(labels, None, stratified_folds=7)


def test_draws_take_n_per_class_from_the_training_pool_only():
    labels = np.array(["a", "b"] * 10)
    pool = np.arange(4, 20)
    first = draw_per_class(labels, pool, 3, np.random.default_rng([0, 1, 3, 0]))
    assert len(first) == 6 and set(first) <= set(pool) and sorted(labels[first].tolist()) == ["a"] * 3 + ["b"] * 3
    assert first.tolist() == draw_per_class(labels, pool, 3, np.random.default_rng([0, 1, 3, 0])).tolist()
    assert first.tolist() != draw_per_class(labels, pool, 3, np.random.default_rng([0, 1, 3, 1])).tolist()
    assert draw_per_class(labels, pool, None, np.random.default_rng(0)).tolist() == pool.tolist()


def test_sizes_a_class_cannot_supply_are_left_out_or_refused():
    labels = ["a"] * 6 + ["b"] * 3 + ["c"] * 9
    folds = [1, 2, 3] * 2 + [1, 2, 3] + [1, 2, 3] * 3
    splits = cv_splits(labels, folds)          # class b: 2 training files when testing on any fold
    kept, notes = feasible_sizes(labels, splits, (1, 2, 5, None), strict=False)
    assert kept == (1, 2, None)
    assert notes == ["n=5 examples per class: class 'b' has only 2 training file(s) when testing on fold 1: left out"]
    with pytest.raises(LabelError, match="n=5 .* class 'b' has only 2 training file"):
        feasible_sizes(labels, splits, (1, 5), strict=True)
    with pytest.raises(LabelError, match="class 'c' has no labelled file outside fold 2"):
        feasible_sizes(["a", "a", "c", "b", "b", "c"], cv_splits(["a", "a", "c", "b", "b", "c"], [1, 2, 2, 1, 2, 2]),
                       (1,), strict=False)


def test_separated_classes_score_one_with_every_classifier():
    x, labels = blobs(6)
    settings = TransferSettings(repeats=2)
    splits = cv_splits(labels, [1, 2, 3] * 6)
    records = learning_curve(x, labels, splits, settings, (1, None))
    assert {r["classifier"] for r in records} == set(CLASSIFIERS)
    # 3 splits x (n=1: 2 repeats + all: 1) x 4 classifiers; each of 3 classes: 1 or 4 training files
    assert len(records) == 3 * 3 * 4
    assert sorted({(r["n"], r["train_files"]) for r in records}, key=str) == [(1, 3), (None, 12)]
    for r in records:
        assert (r["accuracy"], r["macro_f1"], r["map"]) == (1.0, 1.0, 1.0), r


def test_mean_and_student_t_interval_by_hand():
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302652729911275 / np.sqrt(3))   # t(0.975, 2) * sd 1 / sqrt 3
    assert mean_ci([0.5]) == (0.5, None)
    # repeats of a split are averaged before the interval: splits means 0.5 and 1.0
    records = [{"classifier": "knn", "n": 1, "split": s, "repeat": r, "train_files": 2, "accuracy": a,
                "macro_f1": a, "map": a} for s, r, a in (("f1", 0, 0.0), ("f1", 1, 1.0), ("f2", 0, 1.0))]
    (row,) = summarise(records)
    assert row["splits"] == 2 and row["repeats"] == 2 and row["accuracy"]["mean"] == 0.75
    assert row["accuracy"]["ci95"] == pytest.approx(12.706204736174698 * np.std([0.5, 1.0], ddof=1) / np.sqrt(2))


def test_mfcc_statistics_of_a_constant_log_mel():
    """A flat log-mel of -20 dB: the 0th MFCC (orthonormal DCT of 64 equal bands) is
    -20 * sqrt(64) = -160, every other is 0, and nothing varies over time."""
    stats = mfcc_statistics(np.full((10, 64), -20.0))
    assert stats.shape == (MFCC_STATS_DIM,) == (40,)
    np.testing.assert_allclose(stats[0], -160.0, rtol=1e-5)
    np.testing.assert_allclose(stats[1:], 0.0, atol=1e-4)
    with pytest.raises(ValueError, match="frames >= 1"):
        mfcc_statistics(np.zeros((0, 64)))


def test_label_csvs_read_and_bad_rows_named(tmp_path):
    good = tmp_path / "labels.csv"
    good.write_text("file,label,fold\na.wav,dog,1\n\nsub/b.wav,cat,2\n")
    table = read_label_csv(good)
    assert (table.files, table.labels, table.folds) == (("a.wav", "sub/b.wav"), ("dog", "cat"), (1, 2))
    assert table.where == (f"{good}:2", f"{good}:4")
    cases = {"name,label\na.wav,dog\n": ":1: expected the header file,label",
             "file,label\na.wav\n": ":2: expected 2 columns",
             "file,label,fold\na.wav,dog,x\n": ":2: fold must be a positive integer, got 'x'",
             "file,label\na.wav,dog\na.wav,cat\n": ":3: a.wav is already listed on line 2",
             "file,label\na.wav,\n": ":2: empty label",
             "file,label\n": ": no labelled file"}
    for i, (text, message) in enumerate(cases.items()):
        bad = tmp_path / f"bad{i}.csv"
        bad.write_text(text)
        with pytest.raises(LabelError, match=f"bad{i}.csv{message}"):
            read_label_csv(bad)


def test_urbansound8k_metadata_and_class_folders(tmp_path):
    meta = tmp_path / "UrbanSound8K.csv"
    meta.write_text("slice_file_name,fsID,start,end,salience,fold,classID,class\n"
                    "100-3-0-0.wav,100,0.0,4.0,1,5,3,dog_bark\n7-1-0-0.wav,7,1.0,2.5,2,2,1,car_horn\n")
    table = read_labels(meta)
    assert (table.files, table.labels, table.folds) == (("100-3-0-0.wav", "7-1-0-0.wav"), ("dog_bark", "car_horn"),
                                                        (5, 2))
    meta.write_text("slice_file_name,fsID,start,end,salience,fold,classID,class\nx.wav,1,0,1,1,11,3,dog_bark\n")
    with pytest.raises(LabelError, match="UrbanSound8K.csv:2: fold must be in 1..10"):
        read_labels(meta)
    library = tone_library(tmp_path / "lib", per_class=1, broken=False)
    table = read_labels(library)
    assert table.files == ("high/high0.wav", "low/low0.wav", "mid/mid0.wav") and table.labels == ("high", "low", "mid")
    (library / "loose.wav").write_bytes((library / "low" / "low0.wav").read_bytes())
    with pytest.raises(LabelError, match="loose.wav .* outside any class-named subfolder"):
        read_labels(library)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabelError, match="empty: no audio files"):
        read_labels(tmp_path / "empty")


def test_labels_match_keys_by_path_or_unique_file_name():
    table = LabelTable(("a.wav", "fold2/b.wav", "c.wav"), ("x", "y", "x"), None, ("l:2", "l:3", "l:4"), "l")
    rows, indices, dropped = match_files(table, ["fold1/a.wav", "fold2/b.wav", "c.wav"])
    assert (rows, indices, dropped) == ([0, 1, 2], [0, 1, 2], [])
    assert match_files(table, ["fold1/a.wav", "fold2/b.wav"], skipped=["/data/c.wav"])[2] == ["l:4"]
    with pytest.raises(LabelError, match="l:4: c.wav is not among the 2 audio files"):
        match_files(table, ["fold1/a.wav", "fold2/b.wav"])
    with pytest.raises(LabelError, match="l:2: a.wav matches 2 files"):
        match_files(table, ["fold1/a.wav", "fold3/a.wav", "fold2/b.wav", "c.wav"])


def test_cli_on_embeddings_with_folds_writes_the_report(tmp_path):
    x, labels = blobs(6)
    keys = [f"clip{i}.wav" for i in range(len(x))]
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    write_embeddings(tmp_path / "emb.h5", Embeddings(unit, tuple(keys), np.zeros(18), np.ones(18)))
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("file,label,fold\n" + "".join(f"{k},{c},{i % 3 + 1}\n" for i, (k, c) in enumerate(zip(keys, labels))))
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["transfer", str(tmp_path / "emb.h5"), "--labels", str(csv_path), "--out", str(out),
                                       "--classifier", "logistic", "--classifier", "knn", "--repeats", "2"])
    assert result.exit_code == 0, result.output
    assert "| knn | all | 12 | 1.000 ± 0.000 | 1.000 ± 0.000 | 1.000 ± 0.000 |" in result.output
    record = json.loads((out / "transfer.json").read_text())
    assert record["sizes"] == ["1", "2", "all"] and record["splits"] == ["fold 1", "fold 2", "fold 3"]
    assert "n=5 examples per class: class 'a' has only 4 training file(s) when testing on fold 1: left out" in record["notes"]
    assert len(record["records"]) == 3 * (2 + 2 + 1) * 2
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG" and (out / "transfer.md").is_file()
    refused = CliRunner().invoke(main, ["transfer", str(tmp_path / "emb.h5"), "--labels", str(csv_path), "--out",
                                        str(out), "--n", "1,5"])
    assert refused.exit_code == 1 and "n=5 examples per class: class 'a' has only 4" in refused.output
    csv_path.write_text(csv_path.read_text() + "ghost.wav,a,1\n")
    unknown = CliRunner().invoke(main, ["transfer", str(tmp_path / "emb.h5"), "--labels", str(csv_path), "--out", str(out)])
    assert unknown.exit_code == 1 and f"{csv_path}:20: ghost.wav is not among the 18 audio files" in unknown.output


def test_cli_mfcc_on_class_folders_skips_a_broken_file(tmp_path):
    library = tone_library(tmp_path / "lib")
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["transfer", "mfcc", "--labels", str(library), "--out", str(out), "--folds", "2",
                                       "--classifier", "knn", "--classifier", "logistic", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "broken.wav" in result.output
    record = json.loads((out / "transfer.json").read_text())
    assert record["class_counts"] == {"high": 4, "low": 4, "mid": 4}
    assert record["sizes"] == ["1", "2", "all"] and record["dropped_label_rows"] == [str(library / "low/broken.wav")]
    best = {(r["classifier"], r["n"]): r for r in record["summary"]}
    assert best[("logistic", "all")]["accuracy"]["mean"] == 1.0   # three pitches, two levels apart: separable
    (tmp_path / "empty").mkdir()
    empty = CliRunner().invoke(main, ["transfer", "mfcc", str(tmp_path / "empty"), "--labels", str(library / "x.csv"),
                                      "--out", str(out)])
    assert empty.exit_code == 2 and "x.csv" in empty.output          # click: the labels file does not exist
    (tmp_path / "l.csv").write_text("file,label\nlow0.wav,low\nmid0.wav,mid\n")
    empty = CliRunner().invoke(main, ["transfer", "mfcc", str(tmp_path / "empty"), "--labels", str(tmp_path / "l.csv"),
                                      "--out", str(out)])
    assert empty.exit_code == 1 and "no audio files in" in empty.output and "empty" in empty.output


def test_cli_with_a_model_and_one_without_an_embedding(tmp_path):
    import keras

    from sedweak.config import FeatureConfig, ModelConfig, PostprocessConfig
    from sedweak.models.crnn import build_crnn
    from sedweak.models.saving import ModelInfo, save_model

    info = ModelInfo(("a", "b"), FeatureConfig(), PostprocessConfig(), 4, 1.0)
    keras.utils.set_random_seed(0)
    crnn = build_crnn(ModelConfig(conv_filters=(4, 4), conv_pool_freq=(4, 4), conv_pool_time=(2, 2), rnn_units=(4,),
                                  embedding_dim=8), 2, 64, info.clip_frames)
    model_path = save_model(crnn, tmp_path / "m.keras", info)
    library = tone_library(tmp_path / "lib", per_class=2, broken=False)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["transfer", str(model_path), str(library), "--labels", str(library), "--out",
                                       str(out), "--folds", "2", "--classifier", "knn", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "transfer.json").read_text())
    assert record["sizes"] == ["1", "all"] and record["source"] == str(model_path)
    assert len(record["records"]) == 2 * 2
    inputs = keras.Input((100, 64))
    headless = keras.Model(inputs, keras.layers.Dense(2)(inputs))          # (batch, frames, 2): no embedding
    headless_path = save_model(headless, tmp_path / "headless.keras", info)
    refused = CliRunner().invoke(main, ["transfer", str(headless_path), "--labels", str(library), "--out", str(out)])
    assert refused.exit_code == 1 and "headless.keras: the model's output is not an embedding" in refused.output


def test_importing_the_collections_pulls_in_no_heavy_module(modules_loaded_by):
    code = ("import sedweak.collections.transfer, sedweak.collections.cluster, sedweak.collections.labels, "
            "sedweak.collections.vectors, sedweak.collections.transfer_report")
    assert modules_loaded_by(code, {"tensorflow", "keras", "sklearn", "matplotlib", "librosa"}) == []
