"""The generic reader: class subfolders (seeded split) and CSV / TSV labels files (optional split column)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import TINY_MODEL

from sedweak.config import ConfigError, DataConfig, load_config
from sedweak.datasets.clipset import ClipSet
from sedweak.datasets.generic import read
from sedweak.labels import Event, LabelError

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "generic_folder.yaml"
SECONDS = {"001.wav": 2.0, "002.wav": 3.0, "003.wav": 2.0, "004.wav": 4.0}  # same names in every class folder
HALF = (("fractions", (0.5, 0.25, 0.25)),)


def write_clip(path: Path, seconds: float, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = 0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))
    sf.write(path, noise.astype(np.float32), 16000)


@pytest.fixture
def class_root(tmp_path) -> Path:
    root = tmp_path / "my_clips"
    for k, label in enumerate(("cat", "dog", "siren")):
        for i, (name, seconds) in enumerate(SECONDS.items()):
            write_clip(root / label / name, seconds, 10 * k + i)
    (root / "dog" / "notes.md").write_text("not audio")
    return root


def data(classes=(), clip_seconds=2.5, **options) -> DataConfig:
    return DataConfig(dataset="generic", classes=tuple(classes), clip_seconds=clip_seconds,
                      reader_options=tuple(options.items()))


def test_class_folders_split_by_class_with_a_seed(class_root):
    """Which clip lands in which role is the seeded shuffle's choice, so it is not written out;
    what the layout implies is: every audio file once (not notes.md), 4 per class split
    round(4 * 0.25) = 1 valid, 1 eval, 2 train; id = class/file, label = the folder, one event
    over the clip (duration from its header: 2, 3, 2, 4 s for 001..004, capped at 2.5 s)."""
    sets = read(class_root, data(**dict(HALF)), ["train", "valid", "eval"])
    ids = {role: set(cs.filenames) for role, cs in sets.items()}
    assert ids["train"] | ids["valid"] | ids["eval"] == {f"{c}/{n}" for c in ("cat", "dog", "siren") for n in SECONDS}
    assert not (ids["train"] & ids["valid"] or ids["train"] & ids["eval"] or ids["valid"] & ids["eval"])
    offset = {"001.wav": 2.0, "002.wav": 2.5, "003.wav": 2.0, "004.wav": 2.5}
    for role, per_class in (("train", 2), ("valid", 1), ("eval", 1)):
        clips = sets[role]
        assert sorted(f.split("/")[0] for f in ids[role]) == sorted(["cat", "dog", "siren"] * per_class)
        assert clips.name == role and clips.filenames == tuple(sorted(ids[role]))
        assert clips.audio_paths == tuple(class_root / f for f in clips.filenames)
        assert clips.weak == {f: [f.split("/")[0]] for f in clips.filenames}
        assert clips.strong == {f: [Event(f, 0.0, offset[f.split("/")[1]], f.split("/")[0])] for f in clips.filenames}
    again = read(class_root, data(**dict(HALF)), ["eval"])["eval"]
    other = read(class_root, data(seed=1, **dict(HALF)), ["eval"])["eval"]
    assert again == sets["eval"] and other != again


def test_labels_file_with_split_column_reads_exactly(tmp_path, caplog):
    root = tmp_path / "set"
    for i, name in enumerate(["a.wav", "b.wav", "sub/c.wav", "d.wav"]):
        write_clip(root / "clips" / name, 2.0 + i % 2, i)
    (root / "labels.csv").write_text('filename,labels,split\na.wav,"dog;cat",train\nb.wav,dog,validation\n'
                                     'sub/c.wav,,test\nd.wav,cat,train\nd.wav,bird,train\nlost.wav,cat,train\n')
    with caplog.at_level(logging.WARNING):
        sets = read(root, data(labels_file="labels.csv", audio_dir="clips", clip_events=False),
                    ["train", "valid", "eval"])
    clips = root / "clips"
    assert sets["train"] == ClipSet("train", (clips / "a.wav", clips / "d.wav"), ("a.wav", "d.wav"),
                                    {"a.wav": ["cat", "dog"], "d.wav": ["bird", "cat"]}, {"a.wav": None, "d.wav": None})
    assert sets["valid"] == ClipSet("valid", (clips / "b.wav",), ("b.wav",), {"b.wav": ["dog"]}, {"b.wav": None})
    assert sets["eval"] == ClipSet("eval", (clips / "sub/c.wav",), ("sub/c.wav",), {"sub/c.wav": []},
                                   {"sub/c.wav": None})
    assert "1 of 3 labelled clips have no audio file" in caplog.text and "lost.wav" in caplog.text


def test_labels_file_clip_events_span_each_clip(tmp_path):
    """With clip_events (default) each label is one event from 0 to the clip's duration read from
    its header (a, sub/c: 2 s; b, d: 3 s), capped at data.clip_seconds (2.5 s); no label, no event."""
    root = tmp_path / "set"
    for i, name in enumerate(["a.wav", "b.wav", "sub/c.wav", "d.wav"]):
        write_clip(root / "clips" / name, 2.0 + i % 2, i)
    (root / "labels.csv").write_text('filename,labels,split\na.wav,"dog;cat",train\nb.wav,dog,validation\n'
                                     'sub/c.wav,,test\nd.wav,cat,train\nd.wav,bird,train\n')
    sets = read(root, data(labels_file="labels.csv", audio_dir="clips"), ["train", "valid", "eval"])
    assert sets["train"].strong == {
        "a.wav": [Event("a.wav", 0.0, 2.0, "cat"), Event("a.wav", 0.0, 2.0, "dog")],
        "d.wav": [Event("d.wav", 0.0, 2.5, "bird"), Event("d.wav", 0.0, 2.5, "cat")]}
    assert sets["valid"].strong == {"b.wav": [Event("b.wav", 0.0, 2.5, "dog")]}
    assert sets["eval"].strong == {"sub/c.wav": []}
    assert sets["eval"].weak == {"sub/c.wav": []}


def test_tsv_labels_file_without_split_column_uses_the_seeded_split(tmp_path):
    """0..7.wav labelled a, b, a, b, ... (i % 2), all 2 s: each label's 4 clips split 2 / 1 / 1
    (fractions 0.5 / 0.25 / 0.25); weak label and whole-clip event from the file's own row."""
    for i in range(8):
        write_clip(tmp_path / f"{i}.wav", 2.0, i)
    (tmp_path / "meta.tsv").write_text("filename\tlabel\n" + "".join(f"{i}.wav\t{'ab'[i % 2]}\n" for i in range(8)))
    sets = read(tmp_path, data(labels_file="meta.tsv", **dict(HALF)), ["train", "valid", "eval"])
    label_of = {f"{i}.wav": "ab"[i % 2] for i in range(8)}
    for role, per_label in (("train", 2), ("valid", 1), ("eval", 1)):
        clips = sets[role]
        assert sorted(label_of[f] for f in clips.filenames) == ["a"] * per_label + ["b"] * per_label
        assert clips.audio_paths == tuple(tmp_path / f for f in clips.filenames)
        assert clips.weak == {f: [label_of[f]] for f in clips.filenames}
        assert clips.strong == {f: [Event(f, 0.0, 2.0, label_of[f])] for f in clips.filenames}
    assert sorted(f for role in sets for f in sets[role].filenames) == sorted(label_of)


def test_errors_name_the_file_and_line(tmp_path, class_root):
    cases = [
        ("l.csv", "file,label\na.wav,dog\n", r"l\.csv:1: expected a header with filename, label"),
        ("l.csv", "filename,label,fold\na.wav,dog,1\n", r"l\.csv:1: expected a header"),
        ("l.tsv", "filename\tlabel\na.wav\tdog\nb.wav\tdog\tx\n", r"l\.tsv:3: expected 2 columns, got 3"),
        ("l.csv", "filename,label,split\na.wav,dog,training\n", r"l\.csv:2: split must be one of"),
        ("l.csv", "filename,label\na.wav,dog\nb.wav,whale\n", r"l\.csv:3: unknown label 'whale'"),
        ("l.json", "{}", r"l\.json: labels file must end in"),
    ]
    for name, text, message in cases:
        (tmp_path / name).write_text(text)
        with pytest.raises(LabelError, match=message):
            read(tmp_path, data(classes=("dog", "cat"), labels_file=name), ["train"])
    with pytest.raises(LabelError, match=r"my_clips/siren: unknown label 'siren'"):
        read(class_root, data(classes=("cat", "dog")), ["train"])
    with pytest.raises(ConfigError, match="fractions must be >= 0 and sum to 1"):
        read(class_root, data(fractions=(0.5, 0.5, 0.5)), ["train"])


def test_recipe_runs_end_to_end(class_root, tmp_path):
    from sedweak.training import run

    overrides = TINY_MODEL + ["train.fast_dev_run=true", f"data.root={class_root}", "data.clip_seconds=2.0",
                              "data.reader_options.fractions=[0.5, 0.25, 0.25]"]
    result = run(load_config(RECIPE, overrides), tmp_path / "run", verbose=0)
    assert set(result.metrics["per_class"]) == {"cat", "dog", "siren"}
