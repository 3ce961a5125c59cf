"""The UrbanSound8K reader on a fabricated miniature of the real download (CSV + fold folders)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import TINY_MODEL

from sedweak.config import ConfigError, DataConfig, load_config
from sedweak.datasets.clipset import ClipSet
from sedweak.datasets.urbansed import URBAN_CLASSES
from sedweak.datasets.urbansound8k import CSV_COLUMNS, cross_validation_overrides, read
from sedweak.labels import Event, LabelError
from sedweak.training.sweep import parse_grid

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "urbansound8k.yaml"
HEADER = "slice_file_name,fsID,start,end,salience,fold,classID,class"
# (slice_file_name, start, end, fold, class): names follow [fsID]-[classID]-[occurrenceID]-[sliceID].wav;
# one slice per fold (durations 2, 3 or 4 s), a second one in fold 10, one listed without audio in fold 3.
SLICES = [
    ("100001-0-0-0.wav", 1.5, 4.5, 1, "air_conditioner"),
    ("100002-1-0-0.wav", 1.5, 5.5, 2, "car_horn"),
    ("100003-2-0-0.wav", 1.5, 3.5, 3, "children_playing"),
    ("100004-3-0-0.wav", 1.5, 4.5, 4, "dog_bark"),
    ("100005-4-0-0.wav", 1.5, 5.5, 5, "drilling"),
    ("100006-5-0-0.wav", 1.5, 3.5, 6, "engine_idling"),
    ("100007-6-0-0.wav", 1.5, 4.5, 7, "gun_shot"),
    ("100008-7-0-0.wav", 1.5, 5.5, 8, "jackhammer"),
    ("100009-8-0-0.wav", 1.5, 3.5, 9, "siren"),
    ("100010-9-0-0.wav", 1.5, 4.5, 10, "street_music"),
    ("7061-6-0-0.wav", 0.0, 2.5, 10, "gun_shot"),
    ("99180-9-0-7.wav", 28.0, 32.0, 3, "street_music"),  # listed, no audio
]
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


# Each slice with audio, written out by hand from SLICES: fold, class, and its whole-slice event's
# offset (end - start, capped at data.clip_seconds) at clip_seconds 3.0 and 4.0.
GOLDEN = {  # name -> (fold, class, offset at 3 s, offset at 4 s)
    "100001-0-0-0.wav": (1, "air_conditioner", 3.0, 3.0),
    "100002-1-0-0.wav": (2, "car_horn", 3.0, 4.0),
    "100003-2-0-0.wav": (3, "children_playing", 2.0, 2.0),
    "100004-3-0-0.wav": (4, "dog_bark", 3.0, 3.0),
    "100005-4-0-0.wav": (5, "drilling", 3.0, 4.0),
    "100006-5-0-0.wav": (6, "engine_idling", 2.0, 2.0),
    "100007-6-0-0.wav": (7, "gun_shot", 3.0, 3.0),
    "100008-7-0-0.wav": (8, "jackhammer", 3.0, 4.0),
    "100009-8-0-0.wav": (9, "siren", 2.0, 2.0),
    "100010-9-0-0.wav": (10, "street_music", 3.0, 3.0),
    "7061-6-0-0.wav": (10, "gun_shot", 2.5, 2.5),
}


def golden(role: str, root: Path, names: tuple[str, ...], clip_seconds: float = 4.0,
           slice_events: bool = True) -> ClipSet:
    """The ClipSet of the named slices (in the given order), from ``GOLDEN``."""
    offset = {3.0: 2, 4.0: 3}[clip_seconds]
    return ClipSet(role, tuple(root / "audio" / f"fold{GOLDEN[n][0]}" / n for n in names), names,
                   {n: [GOLDEN[n][1]] for n in names},
                   {n: [Event(n, 0.0, GOLDEN[n][offset], GOLDEN[n][1])] if slice_events else None for n in names})


def test_folds_make_the_splits_exactly(us8k_root, caplog):
    """eval = eval_fold, valid = valid_fold (default: the next fold, 10 wraps to 1), train = the
    eight others; ids sorted as strings; the listed slice without audio is left out."""
    with caplog.at_level(logging.WARNING):
        sets = read(us8k_root, data(clip_seconds=3.0), ["train", "valid", "eval"])
    assert sets["eval"] == golden("eval", us8k_root, ("100010-9-0-0.wav", "7061-6-0-0.wav"), 3.0)
    assert sets["valid"] == golden("valid", us8k_root, ("100001-0-0-0.wav",), 3.0)
    assert sets["train"] == golden("train", us8k_root, (
        "100002-1-0-0.wav", "100003-2-0-0.wav", "100004-3-0-0.wav", "100005-4-0-0.wav", "100006-5-0-0.wav",
        "100007-6-0-0.wav", "100008-7-0-0.wav", "100009-8-0-0.wav"), 3.0)
    assert "1 of 9 labelled clips have no audio file" in caplog.text and NO_AUDIO in caplog.text
    sets = read(us8k_root, data(eval_fold=3, valid_fold=7), ["train", "valid", "eval"])
    assert sets["eval"] == golden("eval", us8k_root, ("100003-2-0-0.wav",))
    assert sets["valid"] == golden("valid", us8k_root, ("100007-6-0-0.wav",))
    assert sets["train"] == golden("train", us8k_root, (
        "100001-0-0-0.wav", "100002-1-0-0.wav", "100004-3-0-0.wav", "100005-4-0-0.wav", "100006-5-0-0.wav",
        "100008-7-0-0.wav", "100009-8-0-0.wav", "100010-9-0-0.wav", "7061-6-0-0.wav"))
    weak_only = read(us8k_root, data(eval_fold=5, slice_events=False), ["valid"])["valid"]
    assert weak_only == golden("valid", us8k_root, ("100006-5-0-0.wav",), slice_events=False)


@pytest.mark.parametrize("eval_fold", range(1, 11))
def test_every_eval_fold_holds_out_its_fold_and_validates_on_the_next(us8k_root, eval_fold):
    """For each run of the 10-fold protocol: roles are the folds of ``GOLDEN``, disjoint, and
    together every slice with audio."""
    sets = read(us8k_root, data(eval_fold=eval_fold), ["train", "valid", "eval"])
    valid_fold = eval_fold % 10 + 1
    fold_of = {role: {GOLDEN[n][0] for n in sets[role].filenames} for role in sets}
    assert fold_of["eval"] == {eval_fold} and fold_of["valid"] == {valid_fold}
    assert fold_of["train"] == set(range(1, 11)) - {eval_fold, valid_fold}  # every fold has a slice with audio
    names = [n for role in ("train", "valid", "eval") for n in sets[role].filenames]
    assert sorted(names) == sorted(GOLDEN)


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
