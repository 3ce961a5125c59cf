"""The DESED reader on a fabricated miniature of the real download (same folder, file and column names)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import TINY_MODEL

from sedweak.config import ConfigError, DataConfig, load_config
from sedweak.datasets.desed import DESED_CLASSES, read
from sedweak.datasets.clipset import ClipSet
from sedweak.labels import LabelError
from sedweak.labels import LabelError

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "desed.yaml"
SYNTH = {"0.wav": [(0.5, 1.5, "Dog"), (1.0, 2.5, "Speech")], "1.wav": [(0.25, 1.0, "Cat")],
         "2.wav": [(1.0, 3.0, "Frying"), (0.2, 0.9, "Dishes")]}
WEAK = {"Y07fghylishw_20.000_30.000.wav": "Dog,Speech", "Y0Aj6qHkN-tM_30.000_40.000.wav": "Blender"}
VALID = {"Y00pbt6aJV8Y_350.000_360.000.wav": [(0.0, 2.0, "Running_water")],
         "Y02sBbYq_lHk_30.000_40.000.wav": [(1.0, 1.8, "Alarm_bell_ringing"), (0.1, 0.6, "Cat")]}
PUBLIC = {"YAq5MHAwf3nE_20.000_30.000.wav": [(0.3, 2.2, "Vacuum_cleaner")],
          "Yl0yKSkDNgwI_40.000_50.000.wav": [(0.5, 1.0, "Electric_shaver_toothbrush")]}
PUBLIC_MISSING = "Yzzzz_missing_0.000_10.000.wav"  # listed in public.tsv, no audio


def write_clip(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(path, 0.1 * rng.standard_normal(int(16000 * (2 + seed % 3))).astype(np.float32), 16000)


def write_strong(path: Path, clips: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{f}\t{on}\t{off}\t{label}" for f, events in clips.items() for on, off, label in events]
    path.write_text("filename\tonset\toffset\tevent_label\n" + "\n".join(rows) + "\n")


@pytest.fixture
def desed_root(tmp_path) -> Path:
    root = tmp_path / "DESED" / "dataset"
    for seed, name in enumerate(SYNTH):
        write_clip(root / "audio/train/synthetic21_train/soundscapes" / name, seed)
    for seed, name in enumerate(WEAK):
        write_clip(root / "audio/train/weak" / name, seed + 10)
    for seed, name in enumerate(VALID):
        write_clip(root / "audio/validation/validation" / name, seed + 20)
    for seed, name in enumerate(PUBLIC):
        write_clip(root / "audio/eval/public" / name, seed + 30)
    write_strong(root / "metadata/train/synthetic21_train/soundscapes.tsv", SYNTH)
    (root / "metadata/train/weak.tsv").write_text(
        "filename\tevent_labels\n" + "".join(f"{f}\t{labels}\n" for f, labels in WEAK.items()))
    write_strong(root / "metadata/validation/validation.tsv", VALID)
    write_strong(root / "metadata/eval/public.tsv", {**PUBLIC, PUBLIC_MISSING: [(0.0, 1.0, "Dog")]})
    return root


def data(**options) -> DataConfig:
    return DataConfig(dataset="desed", reader_options=tuple(options.items()))


# What the layout above implies, written out by hand (not derived by code, not pasted from the
# reader): clip ids sorted (digits before "Y", "Y07" before "Y0A"); weak labels = the sorted set
# of a strong clip's event labels, or the weak.tsv cell split at commas; strong events as the
# TSV's (onset, offset, label) rows, sorted by ``events``; weak.tsv clips have no strong labels (None).
SYNTH_IDS = ("0.wav", "1.wav", "2.wav")
WEAK_IDS = ("Y07fghylishw_20.000_30.000.wav", "Y0Aj6qHkN-tM_30.000_40.000.wav")
TRAIN_WEAK = {"0.wav": ["Dog", "Speech"], "1.wav": ["Cat"], "2.wav": ["Dishes", "Frying"],
              "Y07fghylishw_20.000_30.000.wav": ["Dog", "Speech"], "Y0Aj6qHkN-tM_30.000_40.000.wav": ["Blender"]}
TRAIN_STRONG = {"0.wav": [("0.wav", 0.5, 1.5, "Dog"), ("0.wav", 1.0, 2.5, "Speech")],
                "1.wav": [("1.wav", 0.25, 1.0, "Cat")],
                "2.wav": [("2.wav", 0.2, 0.9, "Dishes"), ("2.wav", 1.0, 3.0, "Frying")],
                "Y07fghylishw_20.000_30.000.wav": None, "Y0Aj6qHkN-tM_30.000_40.000.wav": None}
VALID_IDS = ("Y00pbt6aJV8Y_350.000_360.000.wav", "Y02sBbYq_lHk_30.000_40.000.wav")
VALID_WEAK = {"Y00pbt6aJV8Y_350.000_360.000.wav": ["Running_water"],
              "Y02sBbYq_lHk_30.000_40.000.wav": ["Alarm_bell_ringing", "Cat"]}
VALID_STRONG = {"Y00pbt6aJV8Y_350.000_360.000.wav": [("Y00pbt6aJV8Y_350.000_360.000.wav", 0.0, 2.0, "Running_water")],
                "Y02sBbYq_lHk_30.000_40.000.wav": [("Y02sBbYq_lHk_30.000_40.000.wav", 0.1, 0.6, "Cat"),
                                                   ("Y02sBbYq_lHk_30.000_40.000.wav", 1.0, 1.8, "Alarm_bell_ringing")]}
EVAL_IDS = ("YAq5MHAwf3nE_20.000_30.000.wav", "Yl0yKSkDNgwI_40.000_50.000.wav")  # not PUBLIC_MISSING
EVAL_WEAK = {"YAq5MHAwf3nE_20.000_30.000.wav": ["Vacuum_cleaner"],
             "Yl0yKSkDNgwI_40.000_50.000.wav": ["Electric_shaver_toothbrush"]}
EVAL_STRONG = {"YAq5MHAwf3nE_20.000_30.000.wav": [("YAq5MHAwf3nE_20.000_30.000.wav", 0.3, 2.2, "Vacuum_cleaner")],
               "Yl0yKSkDNgwI_40.000_50.000.wav": [("Yl0yKSkDNgwI_40.000_50.000.wav", 0.5, 1.0,
                                                   "Electric_shaver_toothbrush")]}


def events(clipset: ClipSet) -> dict:
    """``strong`` as sorted (filename, onset, offset, label) tuples (TSV row order is not pinned)."""
    return {f: None if ev is None else sorted((e.filename, e.onset_seconds, e.offset_seconds, e.label) for e in ev)
            for f, ev in clipset.strong.items()}


def test_reads_every_split_exactly(desed_root, caplog):
    """train = synthetic soundscapes (strong) + weak clips (strong None); valid = validation;
    eval = public eval without the clip whose audio is missing (one warning names it)."""
    with caplog.at_level(logging.WARNING):
        sets = read(desed_root, data(), ["train", "valid", "eval"])
    synth_dir = desed_root / "audio/train/synthetic21_train/soundscapes"
    weak_dir = desed_root / "audio/train/weak"
    train = sets["train"]
    assert train.name == "train" and train.filenames == SYNTH_IDS + WEAK_IDS
    assert train.audio_paths == tuple(synth_dir / f for f in SYNTH_IDS) + tuple(weak_dir / f for f in WEAK_IDS)
    assert train.weak == TRAIN_WEAK and events(train) == TRAIN_STRONG
    assert train.strong_reference.keys() == set(SYNTH_IDS)
    valid = sets["valid"]
    assert valid.name == "valid" and valid.filenames == VALID_IDS
    assert valid.audio_paths == tuple(desed_root / "audio/validation/validation" / f for f in VALID_IDS)
    assert valid.weak == VALID_WEAK and events(valid) == VALID_STRONG
    evaluation = sets["eval"]
    assert evaluation.name == "eval" and evaluation.filenames == EVAL_IDS
    assert evaluation.audio_paths == tuple(desed_root / "audio/eval/public" / f for f in EVAL_IDS)
    assert evaluation.weak == EVAL_WEAK and events(evaluation) == EVAL_STRONG
    assert "1 of 3 labelled clips have no audio file" in caplog.text and PUBLIC_MISSING in caplog.text


def test_splits_are_disjoint_and_each_role_reads_only_its_part(desed_root):
    """Reading one role reads only that role's files: the same clips alone as together, and no
    clip of the layout is in two roles."""
    together = read(desed_root, data(), ["train", "valid", "eval"])
    for role in ("train", "valid", "eval"):
        assert read(desed_root, data(), [role]) == {role: together[role]}
    ids = [set(together[role].filenames) for role in ("train", "valid", "eval")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set().union(*ids) == set(SYNTH_IDS) | set(WEAK_IDS) | set(VALID_IDS) | set(EVAL_IDS)


def test_unlabelled_in_domain_clips_are_read_without_tags(desed_root, caplog):
    """use_unlabelled: the "unlabelled" role lists unlabel_in_domain.tsv's clips (header
    ``filename``), no tags and no events; a listed clip without audio is dropped with a warning."""
    names = ["Y-unl1_0.000_10.000.wav", "Y-unl0_30.000_40.000.wav"]
    for seed, name in enumerate(names):
        write_clip(desed_root / "audio/train/unlabel_in_domain" / name, seed + 40)
    (desed_root / "metadata/train/unlabel_in_domain.tsv").write_text(
        "filename\n" + "".join(f"{n}\n" for n in names) + "Y-gone_0.000_10.000.wav\n")
    sets = read(desed_root, data(use_unlabelled=True), ["train", "unlabelled"])
    unlabelled = sets["unlabelled"]
    assert unlabelled.filenames == ("Y-unl0_30.000_40.000.wav", "Y-unl1_0.000_10.000.wav")
    assert unlabelled.weak == {n: [] for n in names} and unlabelled.strong == dict.fromkeys(names)
    assert sets["train"].filenames == SYNTH_IDS + WEAK_IDS
    assert "1 of 3" in caplog.text and "Y-gone" in caplog.text
    (desed_root / "metadata/train/unlabel_in_domain.tsv").write_text("file\nY-unl0_30.000_40.000.wav\n")
    with pytest.raises(LabelError, match="unlabel_in_domain.tsv.*'filename'"):
        read(desed_root, data(use_unlabelled=True), ["unlabelled"])


def test_options_select_parts_and_gate_the_unlabelled_role(desed_root):
    """use_synthetic / use_weak pick the training parts; tsv/audio options move a role."""
    weak_only = read(desed_root, data(use_synthetic=False), ["train"])["train"]
    assert weak_only.filenames == WEAK_IDS
    assert weak_only.weak == {f: TRAIN_WEAK[f] for f in WEAK_IDS} and weak_only.strong == dict.fromkeys(WEAK_IDS)
    synthetic_only = read(desed_root, data(use_weak=False), ["train"])["train"]
    assert synthetic_only.filenames == SYNTH_IDS and events(synthetic_only) == {f: TRAIN_STRONG[f] for f in SYNTH_IDS}
    # the synthetic soundscapes as the validation set (absolute and relative paths both resolve)
    moved = read(desed_root, data(valid_tsv=str(desed_root / "metadata/train/synthetic21_train/soundscapes.tsv"),
                                  valid_audio="audio/train/synthetic21_train/soundscapes"), ["valid"])["valid"]
    assert moved.filenames == SYNTH_IDS and events(moved) == {f: TRAIN_STRONG[f] for f in SYNTH_IDS}
    assert moved.audio_paths == tuple(desed_root / "audio/train/synthetic21_train/soundscapes" / f for f in SYNTH_IDS)
    with pytest.raises(ConfigError, match="use_unlabelled: true"):
        read(desed_root, data(), ["unlabelled"])
    with pytest.raises(ConfigError, match="use_synthetic and use_weak are both false"):
        read(desed_root, data(use_synthetic=False, use_weak=False), ["train"])
    with pytest.raises(ConfigError, match="unknown key"):
        read(desed_root, data(weak_csv="x"), ["train"])


def test_a_strong_tsv_row_with_only_a_filename_is_a_clip_without_events(desed_root):
    """DESED TSVs list a clip that has no event as a row with only its file name."""
    name = "Yempty_0.000_10.000.wav"
    write_clip(desed_root / "audio/eval/public" / name, 3)
    with open(desed_root / "metadata/eval/public.tsv", "a") as tsv:
        tsv.write(f"{name}\t\t\t\n")
    evaluation = read(desed_root, data(), ["eval"])["eval"]
    assert evaluation.filenames == (EVAL_IDS[0], name, EVAL_IDS[1])  # sorted: "YA" < "Ye" < "Yl"
    assert evaluation.weak[name] == [] and evaluation.strong[name] == []


def test_a_clip_in_the_synthetic_and_the_weak_part_is_an_error(desed_root):
    weak_tsv = desed_root / "metadata/train/weak.tsv"
    weak_tsv.write_text("filename\tevent_labels\n1.wav\tCat\n")
    with pytest.raises(LabelError, match=r"train: clip 1\.wav is listed twice"):
        read(desed_root, data(), ["train"])


def test_label_errors_name_the_file_and_line(desed_root):
    weak_tsv = desed_root / "metadata/train/weak.tsv"
    weak_tsv.write_text("filename\tlabels\nY0.wav\tDog\n")
    with pytest.raises(LabelError, match=r"weak\.tsv:1: expected header"):
        read(desed_root, data(), ["train"])
    weak_tsv.write_text("filename\tevent_labels\nY0.wav\tDog\nY1.wav\tDoorbell\n")
    with pytest.raises(LabelError, match=r"weak\.tsv:3: unknown label 'Doorbell'"):
        read(desed_root, data(), ["train"])
    valid_tsv = desed_root / "metadata/validation/validation.tsv"
    valid_tsv.write_text("filename\tonset\toffset\tevent_label\na.wav\t0.5\tone\tCat\n")
    with pytest.raises(LabelError, match=r"validation\.tsv:2: onset/offset must be numbers"):
        read(desed_root, data(), ["valid"])
    custom = DataConfig(dataset="desed", classes=("Cat",))  # data.classes narrows the accepted labels
    with pytest.raises(LabelError, match=r"public\.tsv:2: unknown label 'Vacuum_cleaner'"):
        read(desed_root, custom, ["eval"])
    assert len(DESED_CLASSES) == 10


def test_recipe_runs_end_to_end(desed_root, tmp_path):
    overrides = TINY_MODEL + ["train.fast_dev_run=true", f"data.root={desed_root}", "data.clip_seconds=2.0"]
    result = run_recipe(overrides, tmp_path / "run")
    assert set(result.metrics["per_class"]) == set(DESED_CLASSES)
    assert (tmp_path / "run" / "eval_events.tsv").is_file()


@pytest.mark.slow   # the mean teacher with unlabelled clips trains in the default suite's exact-resume test
def test_recipe_trains_a_mean_teacher_on_the_unlabelled_clips(desed_root, tmp_path):
    for seed, name in enumerate(["Y-unl0_0.000_10.000.wav", "Y-unl1_0.000_10.000.wav"]):
        write_clip(desed_root / "audio/train/unlabel_in_domain" / name, seed + 40)
    (desed_root / "metadata/train/unlabel_in_domain.tsv").write_text(
        "filename\nY-unl0_0.000_10.000.wav\nY-unl1_0.000_10.000.wav\n")
    overrides = TINY_MODEL + ["train.fast_dev_run=true", f"data.root={desed_root}", "data.clip_seconds=2.0",
                              "data.reader_options.use_unlabelled=true", "train.mean_teacher.enabled=true",
                              "train.mean_teacher.unlabelled_per_batch=2"]
    with pytest.raises(ConfigError, match="mean teacher only"):
        load_config(RECIPE, overrides[:-2])
    result = run_recipe(overrides, tmp_path / "run")
    assert set(result.metrics["per_class"]) == set(DESED_CLASSES)
    header = (tmp_path / "run" / "history.csv").read_text().splitlines()[0]
    assert "consistency" in header.split(",")


def run_recipe(overrides, workdir):
    from sedweak.training import run

    return run(load_config(RECIPE, overrides), workdir, verbose=0)
