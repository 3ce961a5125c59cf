"""The URBAN-SED reader on a fabricated miniature of the real download (txt and JAMS annotations)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import TINY_MODEL

from sedweak.config import ConfigError, DataConfig, load_config
from sedweak.datasets.clipset import ClipSet
from sedweak.datasets.urbansed import URBAN_CLASSES, read
from sedweak.labels import Event, LabelError

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "urbansed.yaml"
EVENTS = {  # folder -> soundscape -> [(onset, offset, label)], sorted by onset
    "train": {"soundscape_train_uniform0": [(0.25, 1.5, "dog_bark"), (0.8, 2.0, "siren")],
              "soundscape_train_bimodal1": [(1.0, 2.75, "jackhammer")],
              "soundscape_train_uniform2": [(0.5, 1.0, "car_horn"), (1.5, 3.0, "street_music")]},
    "validate": {"soundscape_validate_uniform0": [(0.0, 1.25, "drilling")],
                 "soundscape_validate_bimodal1": [(0.5, 2.5, "gun_shot")]},
    "test": {"soundscape_test_uniform0": [(0.3, 1.7, "air_conditioner"), (1.0, 1.5, "dog_bark")],
             "soundscape_test_bimodal1": [(0.1, 2.0, "engine_idling")],
             "soundscape_test_uniform2": [(0.4, 0.9, "children_playing")]},  # annotation, no audio
}
NO_AUDIO = "soundscape_test_uniform2"


def jams_text(events, duration: float = 10.0) -> str:
    """A Scaper-style JAMS document: background noise bed + foreground events."""
    def obs(time, dur, label, role):
        value = {"label": label, "source_file": f"/UrbanSound8K/{label}/1-0-0-0.wav", "source_time": 0.0,
                 "event_time": time, "event_duration": dur, "snr": 6.0, "role": role,
                 "pitch_shift": None, "time_stretch": None}
        return {"time": time, "duration": dur, "value": value, "confidence": 1.0}

    data = [obs(0.0, duration, "brownnoise", "background")]
    data += [obs(on, round(off - on, 6), label, "foreground") for on, off, label in events]
    return json.dumps({
        "annotations": [{"annotation_metadata": {"annotation_tools": "scaper"}, "namespace": "scaper",
                         "data": data, "sandbox": {}, "time": 0, "duration": duration}],
        "file_metadata": {"duration": duration, "identifiers": {}, "jams_version": "0.3.1"},
        "sandbox": {"scaper": {"n_events": len(events)}}}, indent=2)


@pytest.fixture
def urbansed_root(tmp_path) -> Path:
    root = tmp_path / "URBAN-SED_v2.0.0"
    for k, (folder, clips) in enumerate(EVENTS.items()):
        (root / "annotations" / folder).mkdir(parents=True)
        (root / "audio" / folder).mkdir(parents=True)
        for i, (name, events) in enumerate(clips.items()):
            txt = "".join(f"{on:.6f}\t{off:.6f}\t{label}\n" for on, off, label in events)
            (root / "annotations" / folder / f"{name}.txt").write_text(txt)
            (root / "annotations" / folder / f"{name}.jams").write_text(jams_text(events))
            if name != NO_AUDIO:
                noise = np.random.default_rng(10 * k + i).standard_normal(16000 * (2 + i % 2)) * 0.1
                sf.write(root / "audio" / folder / f"{name}.wav", noise.astype(np.float32), 16000)
    return root


def data(**options) -> DataConfig:
    return DataConfig(dataset="urbansed", reader_options=tuple(options.items()))


# What the layout above implies, written out by hand: per role, the clips with audio (ids =
# annotation file stem + ".wav", sorted: "bimodal" < "uniform"), their weak labels (sorted set
# of event labels) and events (onset, offset, label) by onset. The JAMS "brownnoise" background
# is not an event; soundscape_test_uniform2 has no audio and is left out.
GOLDEN = {
    "train": {"soundscape_train_bimodal1.wav": (["jackhammer"], [(1.0, 2.75, "jackhammer")]),
              "soundscape_train_uniform0.wav": (["dog_bark", "siren"], [(0.25, 1.5, "dog_bark"), (0.8, 2.0, "siren")]),
              "soundscape_train_uniform2.wav": (["car_horn", "street_music"],
                                                [(0.5, 1.0, "car_horn"), (1.5, 3.0, "street_music")])},
    "valid": {"soundscape_validate_bimodal1.wav": (["gun_shot"], [(0.5, 2.5, "gun_shot")]),
              "soundscape_validate_uniform0.wav": (["drilling"], [(0.0, 1.25, "drilling")])},
    "eval": {"soundscape_test_bimodal1.wav": (["engine_idling"], [(0.1, 2.0, "engine_idling")]),
             "soundscape_test_uniform0.wav": (["air_conditioner", "dog_bark"],
                                              [(0.3, 1.7, "air_conditioner"), (1.0, 1.5, "dog_bark")])},
}
FOLDER = {"train": "train", "valid": "validate", "eval": "test"}


def golden(role: str, root: Path, clips: dict | None = None, folder: str | None = None) -> ClipSet:
    """The ClipSet spelled out in ``GOLDEN[role]`` (audio under ``audio/<folder>``)."""
    clips = GOLDEN[role] if clips is None else clips
    folder = FOLDER[role] if folder is None else folder
    ids = tuple(clips)
    return ClipSet(role, tuple(root / "audio" / folder / f for f in ids), ids, {f: clips[f][0] for f in ids},
                   {f: [Event(f, on, off, label) for on, off, label in clips[f][1]] for f in ids})


@pytest.mark.parametrize("annotation_format", ["txt", "jams"])
def test_reads_every_split_exactly(urbansed_root, annotation_format, caplog):
    """train / validate / test folders -> train / valid / eval roles, clip by clip, from either
    annotation format; the annotated clip without audio is excluded with one warning."""
    with caplog.at_level(logging.WARNING):
        sets = read(urbansed_root, data(annotation_format=annotation_format), ["train", "valid", "eval"])
    for role in ("train", "valid", "eval"):
        assert sets[role] == golden(role, urbansed_root)
    assert "1 of 3 labelled clips have no audio file" in caplog.text and NO_AUDIO in caplog.text


def test_folder_options_choose_each_roles_folder(urbansed_root):
    """valid_folder / eval_folder name the folder a role reads: here they swap."""
    sets = read(urbansed_root, data(valid_folder="test", eval_folder="validate"), ["valid", "eval"])
    assert sets["valid"] == golden("valid", urbansed_root, GOLDEN["eval"], "test")
    assert sets["eval"] == golden("eval", urbansed_root, GOLDEN["valid"], "validate")


@pytest.mark.parametrize("annotation_format", ["txt", "jams"])
def test_a_soundscape_without_foreground_events_is_a_clip_without_events(urbansed_root, annotation_format):
    """An empty .txt, or a JAMS file with only the background, annotates a clip with no event."""
    name = "soundscape_validate_uniform0"
    (urbansed_root / "annotations/validate" / f"{name}.txt").write_text("")
    (urbansed_root / "annotations/validate" / f"{name}.jams").write_text(jams_text([]))
    valid = read(urbansed_root, data(annotation_format=annotation_format), ["valid"])["valid"]
    assert valid == golden("valid", urbansed_root, {**GOLDEN["valid"], f"{name}.wav": ([], [])})


def test_jams_column_layout_and_plain_label_values(urbansed_root):
    path = urbansed_root / "annotations/validate/soundscape_validate_uniform0.jams"
    path.write_text(json.dumps({"annotations": [{"namespace": "sound_event", "data": {
        "time": [0.0, 0.5], "duration": [1.25, 0.5], "value": ["drilling", "siren"], "confidence": [1, 1]}}]}))
    clip = read(urbansed_root, data(annotation_format="jams"), ["valid"])["valid"]
    name = "soundscape_validate_uniform0.wav"
    assert clip.strong[name] == [Event(name, 0.0, 1.25, "drilling"), Event(name, 0.5, 1.0, "siren")]


def test_errors_name_the_file_and_line(urbansed_root):
    txt = urbansed_root / "annotations/train/soundscape_train_uniform0.txt"
    txt.write_text("onset\toffset\tlabel\n0.1\t0.5\tsiren\n")
    with pytest.raises(LabelError, match=r"uniform0\.txt:1: onset/offset must be numbers \(the file has no header\)"):
        read(urbansed_root, data(), ["train"])
    txt.write_text("0.1\t0.5\tsiren\n0.2\t0.9\n")
    with pytest.raises(LabelError, match=r"uniform0\.txt:2: expected onset<TAB>offset<TAB>label"):
        read(urbansed_root, data(), ["train"])
    txt.write_text("0.1\t0.5\tsiren\n0.2\t0.9\tdoorbell\n")
    with pytest.raises(LabelError, match=r"uniform0\.txt:2: unknown label 'doorbell'"):
        read(urbansed_root, data(), ["train"])
    jams = urbansed_root / "annotations/test/soundscape_test_bimodal1.jams"
    jams.write_text('{"annotations": [\n  {"namespace": "scaper",,}]}')
    with pytest.raises(LabelError, match=r"bimodal1\.jams:2: not valid JSON"):
        read(urbansed_root, data(annotation_format="jams"), ["eval"])
    jams.write_text(json.dumps({"annotations": [{"namespace": "tag_open", "data": []}]}))
    with pytest.raises(LabelError, match=r"bimodal1\.jams: no annotation with namespace scaper or sound_event"):
        read(urbansed_root, data(annotation_format="jams"), ["eval"])
    with pytest.raises(ConfigError, match="annotation_format must be txt or jams"):
        read(urbansed_root, data(annotation_format="csv"), ["eval"])


def test_recipe_runs_end_to_end(urbansed_root, tmp_path):
    from sedweak.training import run

    overrides = TINY_MODEL + ["train.fast_dev_run=true", f"data.root={urbansed_root}", "data.clip_seconds=2.0",
                              "data.reader_options.annotation_format=jams"]
    result = run(load_config(RECIPE, overrides), tmp_path / "run", verbose=0)
    assert set(result.metrics["per_class"]) == set(URBAN_CLASSES)
    assert (tmp_path / "run" / "eval_events.tsv").is_file()
