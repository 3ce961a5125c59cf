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
from sedweak.datasets.folder import ClipSet
from sedweak.labels import Event, LabelError

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


def strong_clipset(name: str, audio_dir: Path, clips: dict) -> ClipSet:
    ids = tuple(sorted(clips))
    strong = {f: [Event(f, on, off, lab) for on, off, lab in clips[f]] for f in ids}  # TSV order
    return ClipSet(name, tuple(audio_dir / f for f in ids), ids,
                   {f: sorted({lab for _, _, lab in clips[f]}) for f in ids}, strong)


def test_reads_every_split_exactly(desed_root, caplog):
    with caplog.at_level(logging.WARNING):
        sets = read(desed_root, data(), ["train", "valid", "eval"])
    synth_dir = desed_root / "audio/train/synthetic21_train/soundscapes"
    weak_dir = desed_root / "audio/train/weak"
    train_ids = tuple(sorted([*SYNTH, *WEAK]))
    expected_synth = strong_clipset("train", synth_dir, SYNTH)
    assert sets["train"].filenames == train_ids
    assert sets["train"].audio_paths == tuple(synth_dir / f if f in SYNTH else weak_dir / f for f in train_ids)
    assert sets["train"].weak == {**expected_synth.weak, "Y07fghylishw_20.000_30.000.wav": ["Dog", "Speech"],
                                  "Y0Aj6qHkN-tM_30.000_40.000.wav": ["Blender"]}
    assert {f: sorted(ev) for f, ev in sets["train"].strong.items() if ev is not None} == \
        {f: sorted(ev) for f, ev in expected_synth.strong.items()}
    assert [f for f, ev in sets["train"].strong.items() if ev is None] == sorted(WEAK)
    assert sets["valid"] == strong_clipset("valid", desed_root / "audio/validation/validation", VALID)
    assert sets["eval"] == strong_clipset("eval", desed_root / "audio/eval/public", PUBLIC)
    assert "1 of 3 labelled clips have no audio file" in caplog.text and PUBLIC_MISSING in caplog.text


def test_options_select_parts_and_refuse_unlabelled(desed_root):
    weak_only = read(desed_root, data(use_synthetic=False), ["train"])["train"]
    assert weak_only.filenames == tuple(sorted(WEAK))
    with pytest.raises(ConfigError, match="semi-supervised"):
        read(desed_root, data(use_unlabelled=True), ["train"])
    with pytest.raises(ConfigError, match="unknown key"):
        read(desed_root, data(weak_csv="x"), ["train"])


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


def run_recipe(overrides, workdir):
    from sedweak.training import run

    return run(load_config(RECIPE, overrides), workdir, verbose=0)
