"""The UrbanSound8K reader on a fabricated miniature of the real download (CSV + fold folders)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import TINY_MODEL

from sedweak.config import ConfigError, DataConfig, load_config
from sedweak.datasets.folder import ClipSet
from sedweak.datasets.urbansed import URBAN_CLASSES
from sedweak.datasets.urbansound8k import CSV_COLUMNS, cross_validation_overrides, read
from sedweak.labels import Event, LabelError
from sedweak.sweep import parse_grid

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "urbansound8k.yaml"
HEADER = "slice_file_name,fsID,start,end,salience,fold,classID,class"
# (slice_file_name, start, end, fold, class): names follow [fsID]-[classID]-[occurrenceID]-[sliceID].wav
SLICES = [(f"{100000 + fold}-{(fold - 1) % 10}-0-0.wav", 1.5, 1.5 + 2 + fold % 3, fold, URBAN_CLASSES[(fold - 1) % 10])
          for fold in range(1, 11)]
SLICES.append(("7061-6-0-0.wav", 0.0, 2.5, 10, "gun_shot"))
SLICES.append(("99180-9-0-7.wav", 28.0, 32.0, 3, "street_music"))  # listed, no audio
NO_AUDIO = "99180-9-0-7.wav"


def csv_row(name, start, end, fold, label) -> str:
    return f"{name},{name.split('-')[0]},{start},{end},1,{fold},{URBAN_CLASSES.index(label)},{label}"


@pytest.fixture
def us8k_root(tmp_path) -> Path:
    root = tmp_path / "UrbanSound8K"
    (root / "metadata").mkdir(parents=True)
    (root / "metadata" / "UrbanSound8K.csv").write_text("\n".join([HEADER, *(csv_row(*s) for s in SLICES)]) + "\n")
    for i, (name, start, end, fold, _) in enumerate(SLICES):
        if name != NO_AUDIO:
            (root / "audio" / f"fold{fold}").mkdir(parents=True, exist_ok=True)
            noise = 0.1 * np.random.default_rng(i).standard_normal(int(16000 * (end - start)))
            sf.write(root / "audio" / f"fold{fold}" / name, noise.astype(np.float32), 16000)
    return root


def data(clip_seconds: float = 4.0, **options) -> DataConfig:
    return DataConfig(dataset="urbansound8k", clip_seconds=clip_seconds, reader_options=tuple(options.items()))


def expected(role: str, root: Path, folds: set[int], clip_seconds: float = 4.0) -> ClipSet:
    rows = sorted((s for s in SLICES if s[3] in folds and s[0] != NO_AUDIO), key=lambda s: s[0])
    return ClipSet(role, tuple(root / "audio" / f"fold{s[3]}" / s[0] for s in rows), tuple(s[0] for s in rows),
                   {s[0]: [s[4]] for s in rows},
                   {s[0]: [Event(s[0], 0.0, min(s[2] - s[1], clip_seconds), s[4])] for s in rows})


def test_folds_make_the_splits_exactly(us8k_root, caplog):
    with caplog.at_level(logging.WARNING):
        sets = read(us8k_root, data(clip_seconds=3.0), ["train", "valid", "eval"])
    assert sets["eval"] == expected("eval", us8k_root, {10}, 3.0)
    assert sets["valid"] == expected("valid", us8k_root, {1}, 3.0)  # the fold after 10 wraps to 1
    assert sets["train"] == expected("train", us8k_root, set(range(2, 10)), 3.0)
    assert "1 of 9 labelled clips have no audio file" in caplog.text and NO_AUDIO in caplog.text
    sets = read(us8k_root, data(eval_fold=3, valid_fold=7), ["train", "valid", "eval"])
    assert sets["eval"] == expected("eval", us8k_root, {3})
    assert sets["valid"] == expected("valid", us8k_root, {7})
    assert sets["train"] == expected("train", us8k_root, set(range(1, 11)) - {3, 7})
    weak_only = read(us8k_root, data(eval_fold=5, slice_events=False), ["valid"])["valid"]
    assert weak_only.filenames == ("100006-5-0-0.wav",) and weak_only.strong == {"100006-5-0-0.wav": None}


def test_cross_validation_overrides_reach_the_reader_options():
    runs = cross_validation_overrides()
    assert runs == parse_grid(["data.reader_options.eval_fold=1,2,3,4,5,6,7,8,9,10"])
    assert [dict(load_config(RECIPE, r).data.reader_options)["eval_fold"] for r in runs] == list(range(1, 11))


def test_errors_name_the_file_and_line(us8k_root):
    path = us8k_root / "metadata" / "UrbanSound8K.csv"
    good = [csv_row(*s) for s in SLICES]
    cases = [
        (HEADER.replace(",class", ",label"), good, r"UrbanSound8K\.csv:1: expected the columns"),
        (HEADER, [good[0], good[1].replace(",1,2,", ",1,two,")], r"UrbanSound8K\.csv:3: fold/classID must be integers"),
        (HEADER, [good[0], good[1] + ",extra"], r"UrbanSound8K\.csv:3: expected 8 columns"),
        (HEADER, [good[0].replace(",1,1,0,", ",1,11,0,")], r"UrbanSound8K\.csv:2: fold must be in 1\.\.10"),
        (HEADER, [good[0].replace(",0,air_conditioner", ",4,air_conditioner")], r"csv:2: classID 4 does not match"),
        (HEADER, [good[0].replace("air_conditioner", "doorbell")], r"UrbanSound8K\.csv:2: unknown label 'doorbell'"),
    ]
    for header, rows, message in cases:
        path.write_text("\n".join([header, *rows]) + "\n")
        with pytest.raises(LabelError, match=message):
            read(us8k_root, data(), ["train"])
    assert CSV_COLUMNS == tuple(HEADER.split(","))
    for options, message in (({"eval_fold": 11}, "eval_fold must be in 1..10"),
                             ({"eval_fold": 2, "valid_fold": 2}, "must differ from eval_fold")):
        with pytest.raises(ConfigError, match=message):
            read(us8k_root, data(**options), ["train"])


def test_recipe_runs_end_to_end(us8k_root, tmp_path):
    from sedweak.training import run

    overrides = TINY_MODEL + ["train.fast_dev_run=true", f"data.root={us8k_root}", "data.clip_seconds=2.0",
                              "data.reader_options.eval_fold=4"]
    result = run(load_config(RECIPE, overrides), tmp_path / "run", verbose=0)
    assert set(result.metrics["per_class"]) == set(URBAN_CLASSES)
    assert (tmp_path / "run" / "eval_events.tsv").read_text().count("\n") >= 1
