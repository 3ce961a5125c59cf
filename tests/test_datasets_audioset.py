"""The AudioSet reader on a fabricated miniature copy of the real download layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import TINY_MODEL

from sedweak.config import DataConfig, load_config
from sedweak.datasets import audioset
from sedweak.datasets.registry import read_dataset
from sedweak.labels import LabelError

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "audioset_subset.yaml"
SR = 16000

# Real MIDs and names (class_labels_indices.csv / ontology.json).
INDICES = [("/m/09x0r", "Speech"), ("/m/05zppz", "Male speech, man speaking"), ("/m/0jbk", "Animal"),
           ("/m/068hy", "Domestic animals, pets"), ("/m/0bt9lr", "Dog"), ("/m/05tny_", "Bark"),
           ("/m/01yrx", "Cat"), ("/m/04rlf", "Music")]
ONTOLOGY_CHILDREN = {"/m/0dgw9r": ["/m/09x0r"], "/m/09x0r": ["/m/05zppz"], "/m/0jbk": ["/m/068hy"],
                     "/m/068hy": ["/m/0bt9lr", "/m/01yrx"], "/m/0bt9lr": ["/m/05tny_"]}
HEADER = ("# Segments csv created Sun Mar  5 10:54:31 2017\n"
          "# num_ytids={n}, num_segs={n}, num_unique_labels=527, num_positive_labels={n}\n"
          "# YTID, start_seconds, end_seconds, positive_labels\n")
# (YTID, start, end, MIDs, audio file name or None when not downloaded)
TRAIN = [
    ("--PJHxphWEs", "30.000", "40.000", "/m/09x0r,/m/05zppz", "Y--PJHxphWEs.wav"),
    ("-0Gj8-vB1q4", "30.000", "40.000", "/m/05tny_", "-0Gj8-vB1q4_30.000.flac"),
    ("-1LrH01Ei1w", "0.000", "10.000", "/m/01yrx", "-1LrH01Ei1w_0_10000.wav"),
    ("-1nilez17Dg", "30.000", "40.000", "/m/04rlf", "-1nilez17Dg_30.000_40.000.ogg"),
    ("-2PDE7hUArE", "30.000", "40.000", "/m/0bt9lr,/m/04rlf", "-2PDE7hUArE_30000.wav"),
    ("-2xiZDEuHd8", "30.000", "40.000", "/m/09x0r", None),
    ("-3mVv9xBd5Q", "20.000", "30.000", "/m/09x0r", "Y-3mVv9xBd5Q_20.000_30.000.wav"),
    ("-4cxHrCSDaE", "30.000", "40.000", "/m/01yrx,/m/09x0r", "-4cxHrCSDaE.wav"),
]
EVAL = [
    ("-0SdAVK79lg", "30.000", "40.000", "/m/05tny_", "Y-0SdAVK79lg_30.000_40.000.wav"),
    ("-1pRmoJIGQc", "10.000", "20.000", "/m/09x0r", "Y-1pRmoJIGQc_10.000_20.000.wav"),
    ("-5xOcMJpTUk", "0.000", "10.000", "/m/01yrx", None),
]


def _clip(index: int, seconds: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(index)
    t = np.arange(int(seconds * SR)) / SR
    return (0.2 * np.sin(2 * np.pi * (300 + 150 * index) * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def _segments_csv(rows) -> str:
    lines = [f'{ytid}, {start}, {end}, "{mids}"\n' for ytid, start, end, mids, _ in rows]
    return HEADER.format(n=len(rows)) + "".join(lines)


def fabricate(root: Path) -> Path:
    """A miniature AudioSet download: segments CSVs, class_labels_indices.csv, ontology.json, audio/."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "balanced_train_segments.csv").write_text(_segments_csv(TRAIN), encoding="utf-8")
    (root / "eval_segments.csv").write_text(_segments_csv(EVAL), encoding="utf-8")
    (root / "class_labels_indices.csv").write_text(
        "index,mid,display_name\n" + "".join(f'{i},{mid},"{name}"\n' for i, (mid, name) in enumerate(INDICES)),
        encoding="utf-8")
    names = dict(INDICES) | {"/m/0dgw9r": "Human sounds"}
    ontology = [{"id": mid, "name": name, "description": f"{name}.", "citation_uri": "",
                 "positive_examples": [], "child_ids": ONTOLOGY_CHILDREN.get(mid, []), "restrictions": []}
                for mid, name in names.items()]
    (root / "ontology.json").write_text(json.dumps(ontology, indent=1), encoding="utf-8")
    rows = [("balanced_train_segments", r[-1]) for r in TRAIN] + [("eval_segments", r[-1]) for r in EVAL]
    for i, (subfolder, audio) in enumerate(rows):
        if audio:  # in per-CSV subfolders: the reader searches audio/ recursively
            (root / "audio" / subfolder).mkdir(parents=True, exist_ok=True)
            sf.write(root / "audio" / subfolder / audio, _clip(i, 2.0 + 0.5 * (i % 3)), SR)
    return root


def _data(classes=(), **options) -> DataConfig:
    return DataConfig(dataset="audioset", classes=tuple(classes), reader_options=tuple(options.items()))


@pytest.fixture
def copy(tmp_path):
    return fabricate(tmp_path / "audioset")


def test_subset_with_descendants_splits_and_missing_audio(copy):
    data = _data(["Speech", "Dog", "Cat"], include_descendants=True, valid_fraction=0.25, split_seed=3)
    clips = read_dataset("audioset", copy, data, ("train", "valid", "eval"))
    train, valid = clips["train"], clips["valid"]
    assert set(train.filenames).isdisjoint(valid.filenames) and len(valid) == 2
    labels = {**train.weak, **valid.weak}
    assert labels == {  # Bark -> Dog, Male speech -> Speech; music-only clip dropped; one missing
        "--PJHxphWEs_30.000_40.000.wav": ["Speech"], "-0Gj8-vB1q4_30.000_40.000.wav": ["Dog"],
        "-1LrH01Ei1w_0.000_10.000.wav": ["Cat"], "-2PDE7hUArE_30.000_40.000.wav": ["Dog"],
        "-3mVv9xBd5Q_20.000_30.000.wav": ["Speech"], "-4cxHrCSDaE_30.000_40.000.wav": ["Cat", "Speech"]}
    paths = {n: p.name for cs in (train, valid) for n, p in zip(cs.filenames, cs.audio_paths)}
    assert paths["-1LrH01Ei1w_0.000_10.000.wav"] == "-1LrH01Ei1w_0_10000.wav"
    assert paths["-2PDE7hUArE_30.000_40.000.wav"] == "-2PDE7hUArE_30000.wav"
    assert paths["--PJHxphWEs_30.000_40.000.wav"] == "Y--PJHxphWEs.wav"
    assert all(p.is_absolute() and p.is_file() for cs in clips.values() for p in cs.audio_paths)
    assert all(v is None for cs in clips.values() for v in cs.strong.values())
    assert clips["eval"].weak == {"-0SdAVK79lg_30.000_40.000.wav": ["Dog"], "-1pRmoJIGQc_10.000_20.000.wav": ["Speech"]}
    missing = {s: (copy / "features" / f"missing_audio_{s}.txt").read_text().split() for s in clips}
    assert missing["eval"] == ["-5xOcMJpTUk_0.000_10.000.wav"]
    assert missing["train"] + missing["valid"] == ["-2xiZDEuHd8_30.000_40.000.wav"]
    again = read_dataset("audioset", copy, data, ("train", "valid"))
    assert again["valid"].filenames == valid.filenames  # the hold-out is seeded


def test_selection_by_mids_ontology_nodes_and_negatives(copy):
    _, missing = audioset.read_with_missing(copy, _data(mids=["/m/0jbk"], include_descendants=True), ("eval",))
    assert missing == {"eval": ["-5xOcMJpTUk_0.000_10.000.wav"]}
    clips = read_dataset("audioset", copy, _data(mids=["/m/0jbk"], include_descendants=True), ("eval",))
    assert clips["eval"].weak == {"-0SdAVK79lg_30.000_40.000.wav": ["Animal"]}
    human = read_dataset("audioset", copy, _data(["Human sounds"], include_descendants=True,
                                                 drop_unlabelled=False), ("eval",))
    assert human["eval"].weak == {"-0SdAVK79lg_30.000_40.000.wav": [],
                                  "-1pRmoJIGQc_10.000_20.000.wav": ["Human sounds"]}
    everything = read_dataset("audioset", copy, _data(valid_fraction=0.5), ("train", "valid"))
    tags = {**everything["train"].weak, **everything["valid"].weak}
    assert tags["--PJHxphWEs_30.000_40.000.wav"] == ["Male speech, man speaking", "Speech"]
    assert tags["-1nilez17Dg_30.000_40.000.wav"] == ["Music"]  # an .ogg file
    no_descendants = read_dataset("audioset", copy, _data(["Dog"]), ("eval",))
    assert no_descendants["eval"].weak == {}  # Bark is not Dog without include_descendants


@pytest.mark.parametrize("edit, where", [
    (lambda t: t.replace('-0Gj8-vB1q4, 30.000, 40.000, "/m/05tny_"', "-0Gj8-vB1q4, 30.000, 40.000"),
     "balanced_train_segments.csv:5"),
    (lambda t: t.replace("-0Gj8-vB1q4, 30.000", "-0Gj8-vB1q4, thirty"), "balanced_train_segments.csv:5"),
    (lambda t: t.replace('"/m/01yrx"', '"/m/unknown"'), "balanced_train_segments.csv:6"),
    (lambda t: t.replace("# YTID, start_seconds", "# YTID, begin_seconds"), "balanced_train_segments.csv:3"),
    (lambda t: t.replace("# Segments csv created", "Segments csv created"), "balanced_train_segments.csv:1"),
])
def test_malformed_segments_name_file_and_line(copy, edit, where):
    path = copy / "balanced_train_segments.csv"
    path.write_text(edit(path.read_text()))
    with pytest.raises(LabelError, match=where.replace(".", r"\.")):
        read_dataset("audioset", copy, _data(valid_fraction=0.2), ("train",))


def test_bad_metadata_and_options_are_errors(copy):
    indices = copy / "class_labels_indices.csv"
    with pytest.raises(LabelError, match="not a class name"):
        read_dataset("audioset", copy, _data(["Dgo"]), ("eval",))
    indices.write_text(indices.read_text().replace("index,mid,display_name", "idx,mid,name"))
    with pytest.raises(LabelError, match=r"class_labels_indices\.csv:1"):
        read_dataset("audioset", copy, _data(), ("eval",))
    from sedweak.config import ConfigError

    with pytest.raises(ConfigError, match="valid_fractoin"):
        read_dataset("audioset", copy, _data(valid_fractoin=0.2), ("eval",))


def test_recipe_trains_end_to_end(copy, tmp_path):
    from sedweak.training import run

    overrides = TINY_MODEL + [f"data.root={copy}", "data.clip_seconds=2.0", "train.fast_dev_run=true",
                              "train.batch_size=2", "data.reader_options.valid_fraction=0.25"]
    config = load_config(RECIPE, overrides)
    assert config.data.dataset == "audioset"
    workdir = tmp_path / "run"
    result = run(config, workdir, verbose=0)
    assert (workdir / "checkpoints" / "best.keras").is_file()
    assert len((workdir / "history.csv").read_text().splitlines()) == 2  # header + the one fast-dev epoch
    # AudioSet has weak labels only: tagging is scored, detection is undefined (null in JSON).
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert 0.0 <= metrics["tagging.f1"] <= 1.0 and result.metrics["tagging.f1"] == metrics["tagging.f1"]
    assert metrics["segment.f1"] is None and metrics["event.error_rate"] is None
