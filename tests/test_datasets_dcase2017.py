"""The DCASE 2017 task 4 reader on a fabricated miniature copy of the challenge files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import TINY_MODEL

from sedweak.config import DataConfig, load_config
from sedweak.datasets import dcase2017
from sedweak.datasets.registry import read_dataset
from sedweak.labels import Event, LabelError

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "dcase2017_task4.yaml"
SR = 16000

# training_set.csv: no header, comma-separated, quoted when a field holds a comma.
TRAINING_SET = (
    '-0Eem_FuIto,15.000,25.000,"Fire engine, fire truck (siren)",/m/012ndj\n'
    '0_HnD-rW3lI,170.000,180.000,"Train horn,Train","/m/0284vy3,/m/07jdr"\n'
    '-1HlfoHZCEE,6.000,16.000,"Car passing by,Car","/t/dd00134,/m/0k4j"\n'
    "--0w1YA1Hm4,30.000,40.000,Bus,/m/01bjv\n"
    '-8baTnilyjs,30.000,40.000,"Air horn, truck horn",/m/05x_td\n'
    "-20uudT97E0,30.000,40.000,Screaming,/m/03qc9zr\n"
    "-6d-zxMvC5E,30.000,40.000,Reversing beeps,/m/02rhddq\n"
)
TESTING_WEAK = (
    "-5QrBL6MzLg_60.000_70.000.wav\t60.000\t70.000\tTrain horn\n"
    "-sfn1NDHWJI_30.000_40.000.wav\t30.000\t40.000\tFire engine, fire truck (siren)\n"
    "0QKet-tdquc_30.000_40.000.wav\t30.000\t40.000\tReversing beeps\n"
    "-3gSkrDKNSA_27.000_37.000.wav\t27.000\t37.000\tTruck\n"
    "-5QrBL6MzLg_60.000_70.000.wav\t60.000\t70.000\tTrain\n"
)
TESTING_STRONG = (
    "-5QrBL6MzLg_60.000_70.000.wav\t0.2\t1.1\tTrain horn\n"
    "-5QrBL6MzLg_60.000_70.000.wav\t0.5\t1.9\tTrain\n"
    "-sfn1NDHWJI_30.000_40.000.wav\t0.000\t1.500\tFire engine, fire truck (siren)\n"
    "0QKet-tdquc_30.000_40.000.wav\t0\t0\tReversing beeps\n"
)
EVALUATION_WEAK = (
    "PNaLTW50fxM_60.000_70.000.wav\t60.000\t70.000\tTruck\n"
    "-BaVEk1zS2g_50.000_60.000.wav\t50.000\t60.000\tTrain\n"
    "9N1iw5Vdim8_20.000_30.000.wav\t20.000\t30.000\tMotorcycle\n"
    "PNaLTW50fxM_60.000_70.000.wav\t60.000\t70.000\tCar\n"
)
EVALUATION_STRONG = (
    "PNaLTW50fxM_60.000_70.000.wav\t0\t0\tTruck\n"
    "-BaVEk1zS2g_50.000_60.000.wav\t0.3\t1.6\tTrain\n"
    "9N1iw5Vdim8_20.000_30.000.wav\t0.1\t1.9\tMotorcycle\n"
    "PNaLTW50fxM_60.000_70.000.wav\t0\t0.42\tCar\n"
)
MISSING = "-20uudT97E0_30.000_40.000.wav"


def _ids(text: str, sep: str) -> list[str]:
    if sep == ",":
        return [f"{r.split(',')[0]}_{r.split(',')[1]}_{r.split(',')[2]}.wav" for r in text.splitlines()]
    return sorted({r.split("\t")[0] for r in text.splitlines()})


def fabricate(root: Path) -> Path:
    """Challenge files as in the repository (eval ground truth in groundtruth_release/) + audio/<set>/."""
    (root / "groundtruth_release").mkdir(parents=True)
    files = {"training_set.csv": TRAINING_SET, "groundtruth_weak_label_testing_set.csv": TESTING_WEAK,
             "groundtruth_strong_label_testing_set.csv": TESTING_STRONG,
             "groundtruth_release/groundtruth_weak_label_evaluation_set.csv": EVALUATION_WEAK,
             "groundtruth_release/groundtruth_strong_label_evaluation_set.csv": EVALUATION_STRONG}
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    sets = {"training": _ids(TRAINING_SET, ","), "testing": _ids(TESTING_WEAK, "\t"),
            "evaluation": _ids(EVALUATION_WEAK, "\t")}
    for k, (folder, ids) in enumerate(sets.items()):
        (root / "audio" / folder).mkdir(parents=True)
        for i, clip in enumerate(ids):
            if clip != MISSING:  # the official download script's naming: Y<YTID>_<start>_<end>.wav
                t = np.arange(int((2.0 + 0.5 * (i % 2)) * SR)) / SR
                tone = 0.2 * np.sin(2 * np.pi * (250 + 90 * i + 40 * k) * t)
                noise = 0.02 * np.random.default_rng(i + 10 * k).standard_normal(t.size)
                sf.write(root / "audio" / folder / f"Y{clip}", (tone + noise).astype(np.float32), SR)
    return root


def _data(classes=(), **options) -> DataConfig:
    return DataConfig(dataset="dcase2017_task4", classes=tuple(classes), reader_options=tuple(options.items()))


@pytest.fixture
def copy(tmp_path):
    return fabricate(tmp_path / "dcase2017")


def test_challenge_protocol_weak_strong_and_missing(copy):
    clips = read_dataset("dcase2017_task4", copy, _data(), ("train", "valid", "eval"))
    train, valid, test = clips["train"], clips["valid"], clips["eval"]
    assert train.weak == {
        "-0Eem_FuIto_15.000_25.000.wav": ["Fire engine, fire truck (siren)"],
        "0_HnD-rW3lI_170.000_180.000.wav": ["Train", "Train horn"],
        "-1HlfoHZCEE_6.000_16.000.wav": ["Car", "Car passing by"],
        "--0w1YA1Hm4_30.000_40.000.wav": ["Bus"], "-8baTnilyjs_30.000_40.000.wav": ["Air horn, truck horn"],
        "-6d-zxMvC5E_30.000_40.000.wav": ["Reversing beeps"]}
    assert set(train.strong.values()) == {None}
    assert train.audio_paths[train.filenames.index("--0w1YA1Hm4_30.000_40.000.wav")] == \
        copy / "audio" / "training" / "Y--0w1YA1Hm4_30.000_40.000.wav"
    assert (copy / "features" / "missing_audio_train.txt").read_text() == MISSING + "\n"
    assert valid.weak["-5QrBL6MzLg_60.000_70.000.wav"] == ["Train", "Train horn"]
    assert valid.strong["-5QrBL6MzLg_60.000_70.000.wav"] == [
        Event("-5QrBL6MzLg_60.000_70.000.wav", 0.2, 1.1, "Train horn"),
        Event("-5QrBL6MzLg_60.000_70.000.wav", 0.5, 1.9, "Train")]
    assert valid.strong["0QKet-tdquc_30.000_40.000.wav"] == [
        Event("0QKet-tdquc_30.000_40.000.wav", 0.0, 0.0, "Reversing beeps")]  # a "0 0" row
    assert valid.strong["-3gSkrDKNSA_27.000_37.000.wav"] is None and valid.weak["-3gSkrDKNSA_27.000_37.000.wav"] == ["Truck"]
    assert test.weak == {"-BaVEk1zS2g_50.000_60.000.wav": ["Train"], "9N1iw5Vdim8_20.000_30.000.wav": ["Motorcycle"],
                         "PNaLTW50fxM_60.000_70.000.wav": ["Car", "Truck"]}
    assert set(test.strong_reference) == set(test.filenames)
    assert (copy / "features" / "missing_audio_eval.txt").read_text() == ""


def test_testing_as_eval_holdout_subset_and_flat_audio(copy):
    data = _data(["Train", "Car"], testing_split="eval", valid_fraction=0.3, split_seed=1)
    clips = read_dataset("dcase2017_task4", copy, data, ("train", "valid", "eval"))
    assert len(clips["valid"]) == 2 and set(clips["train"].filenames).isdisjoint(clips["valid"].filenames)
    assert len(clips["train"]) + len(clips["valid"]) == 6  # 7 listed, 1 without audio
    assert clips["eval"].filenames == tuple(sorted(_ids(TESTING_WEAK, "\t")))
    assert clips["eval"].strong["-5QrBL6MzLg_60.000_70.000.wav"] == [
        Event("-5QrBL6MzLg_60.000_70.000.wav", 0.5, 1.9, "Train")]  # Train horn is not selected
    labels = {**clips["train"].weak, **clips["valid"].weak}
    assert labels["-1HlfoHZCEE_6.000_16.000.wav"] == ["Car"] and labels["--0w1YA1Hm4_30.000_40.000.wav"] == []
    flat = copy / "flat"
    flat.mkdir()
    for path in (copy / "audio").rglob("*.wav"):
        shutil.copy(path, flat / path.name)
    flat_clips, missing = dcase2017.read_with_missing(copy, _data(audio_dir="flat"), ("train", "eval"))
    assert missing == {"train": [MISSING], "eval": []}
    assert all(p.parent == flat for cs in flat_clips.values() for p in cs.audio_paths)


@pytest.mark.parametrize("name, edit, where", [
    ("training_set.csv", lambda t: t.replace("--0w1YA1Hm4,30.000,40.000,Bus,/m/01bjv", "--0w1YA1Hm4,30.000,Bus,/m/01bjv"),
     "training_set.csv:4"),
    ("training_set.csv", lambda t: t.replace("Bus,/m/01bjv", "Truck,/m/01bjv"), "training_set.csv:4"),
    ("groundtruth_weak_label_testing_set.csv", lambda t: t.replace("\tTruck", "\tLorry"),
     "groundtruth_weak_label_testing_set.csv:4"),
    ("groundtruth_weak_label_testing_set.csv", lambda t: t.replace("0QKet-tdquc_30.000_40.000.wav", "0QKet-tdquc.wav"),
     "groundtruth_weak_label_testing_set.csv:3"),
    ("groundtruth_strong_label_testing_set.csv", lambda t: t.replace("0.000\t1.500", "1.500\t0.000"),
     "groundtruth_strong_label_testing_set.csv:3"),
])
def test_malformed_rows_name_file_and_line(copy, name, edit, where):
    (copy / name).write_text(edit((copy / name).read_text()))
    with pytest.raises(LabelError, match=where.replace(".", r"\.")):
        read_dataset("dcase2017_task4", copy, _data(), ("train", "valid"))


def test_missing_files_and_unknown_classes_are_errors(copy):
    with pytest.raises(LabelError, match="not DCASE 2017 task 4 classes"):
        read_dataset("dcase2017_task4", copy, _data(["Car", "Dog"]), ("train",))
    shutil.rmtree(copy / "groundtruth_release")
    with pytest.raises(LabelError, match="evaluation set: none of"):
        read_dataset("dcase2017_task4", copy, _data(), ("eval",))
    assert len(dcase2017.CLASSES) == 17 and "Fire engine, fire truck (siren)" in dcase2017.CLASSES


def test_recipe_trains_and_scores_end_to_end(copy, tmp_path):
    from sedweak.training import run

    overrides = TINY_MODEL + [f"data.root={copy}", "data.clip_seconds=2.0", "train.fast_dev_run=true",
                              "train.batch_size=2"]
    config = load_config(RECIPE, overrides)
    assert config.data.classes == dcase2017.CLASSES
    result = run(config, tmp_path / "run", verbose=0)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["per_class"]) == set(dcase2017.CLASSES)
    assert 0.0 <= result.metrics["tagging.f1"] <= 1.0
    assert result.failures == ()
