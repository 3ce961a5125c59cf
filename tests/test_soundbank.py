"""Sound bank: manifest parsing, clear errors, source-disjoint splits, the embedded bank."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import pytest

from sedweak.soundbank import (
    EMBEDDED_BANK_DIR,
    SPLITS,
    BankClip,
    SoundBank,
    SoundBankError,
    _deal,
    curate_subset,
    split_by_source,
    write_toy_bank,
)


@pytest.fixture(scope="module")
def toy_bank(tmp_path_factory) -> SoundBank:
    return write_toy_bank(tmp_path_factory.mktemp("bank"))


def _rewrite_manifest(root: Path, edit) -> None:
    path = root / "manifest.csv"
    rows = list(csv.DictReader(path.open(newline="")))
    fields = list(rows[0])
    rows, fields = edit(rows, fields)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def test_open_lists_classes_and_groups(toy_bank):
    assert toy_bank.foreground_classes == ["Beep", "Buzz", "Chirp"]
    assert toy_bank.background_kinds == ["hiss", "hum"]
    beeps = toy_bank.foreground("Beep")
    assert len(beeps) == 6 and all(isinstance(c, BankClip) and c.path.is_file() for c in beeps)
    # _s0 / _s1 excerpts of one recording share a source group
    assert len({c.source_group for c in beeps}) == 3
    assert {c.role for c in toy_bank.backgrounds()} == {"background"}
    assert all(c.duration_seconds > 0.3 for c in beeps)


def test_unknown_class_names_known_ones(toy_bank):
    with pytest.raises(SoundBankError, match="Bell.*known classes.*Beep"):
        toy_bank.foreground("Bell")


def test_missing_folder_and_manifest_errors_name_path(tmp_path):
    with pytest.raises(SoundBankError, match="nowhere.*folder not found"):
        SoundBank.open(tmp_path / "nowhere")
    with pytest.raises(SoundBankError, match=r"manifest.csv: manifest not found"):
        SoundBank.open(tmp_path)


def test_missing_file_error_names_row(tmp_path):
    bank = write_toy_bank(tmp_path)
    victim = bank.foreground("Buzz")[1]
    victim.path.unlink()
    with pytest.raises(SoundBankError, match=rf"manifest.csv:\d+: file '{victim.relative_path}'.*missing"):
        SoundBank.open(tmp_path)


def test_missing_column_error_names_column(tmp_path):
    write_toy_bank(tmp_path)
    _rewrite_manifest(tmp_path, lambda rows, fields: (
        [{k: v for k, v in r.items() if k != "md5_of_original"} for r in rows],
        [f for f in fields if f != "md5_of_original"]))
    with pytest.raises(SoundBankError, match=r"manifest.csv: missing column.*md5_of_original"):
        SoundBank.open(tmp_path)


def test_bad_role_error(tmp_path):
    write_toy_bank(tmp_path)
    _rewrite_manifest(tmp_path, lambda rows, fields: ([{**rows[0], "role": "fg"}] + rows[1:], fields))
    with pytest.raises(SoundBankError, match=r"manifest.csv:2: role must be"):
        SoundBank.open(tmp_path)


def test_split_disjoint_by_source_and_covers_every_class(toy_bank):
    clips = list(toy_bank.clips)
    splits = split_by_source(clips, seed=3)
    assert set(splits) == set(SPLITS)
    assert sorted(c.relative_path for s in splits.values() for c in s) == sorted(c.relative_path for c in clips)
    groups = {s: {c.source_group for c in splits[s]} for s in SPLITS}
    assert not groups["train"] & groups["valid"]
    assert not groups["train"] & groups["eval"]
    assert not groups["valid"] & groups["eval"]
    for split in SPLITS:  # 3 groups per class / kind: every split gets each of them
        assert {c.label for c in splits[split]} == {"Beep", "Buzz", "Chirp", "hiss", "hum"}


def test_split_is_deterministic_and_seed_dependent(toy_bank):
    def names(seed):
        return {s: [c.relative_path for c in v] for s, v in split_by_source(list(toy_bank.clips), seed=seed).items()}
    assert names(1) == names(1)
    assert any(names(s) != names(1) for s in range(2, 8))


def test_split_fractions_follow_counts():
    assert _deal(20, (0.7, 0.15, 0.15)).count("train") == 14
    assert _deal(3, (0.7, 0.15, 0.15)) == ["train", "valid", "eval"]
    assert _deal(2, (0.7, 0.15, 0.15)) == ["train", "valid"]


def test_class_with_few_groups_is_split_by_file_with_warning(tmp_path):
    # 4 files of 2 recordings: < 3 groups -> split by file (sources may leak), warned.
    bank = write_toy_bank(tmp_path, classes=("Beep",), files_per_class=4)
    with pytest.warns(UserWarning, match="Beep.*2 source group.*by file"):
        splits = split_by_source(bank.foreground("Beep"), seed=0)
    assert all(len(splits[s]) >= 1 for s in SPLITS)
    assert sum(len(v) for v in splits.values()) == 4


def test_class_with_fewer_than_three_files_misses_splits(tmp_path):
    bank = write_toy_bank(tmp_path, classes=("Beep",), files_per_class=2)
    with pytest.warns(UserWarning):
        splits = split_by_source(bank.foreground("Beep"), seed=0)
    assert [len(splits[s]) for s in SPLITS] == [1, 1, 0]


def test_curate_subset_keeps_classes_and_budget(tmp_path):
    src = write_toy_bank(tmp_path / "src", files_per_class=10)
    size = sum(c.path.stat().st_size for c in src.clips)
    # LICENSES.md of the source is needed for the header text
    (tmp_path / "src" / "LICENSES.md").write_text(
        "# Licenses and attribution - soundbank (shared part)\n\nModified files.\n\n"
        "## Licenses that occur\n\n| CC0-1.0 | Creative Commons Zero | https://cc0 | 1 |\n")
    dst = curate_subset(tmp_path / "src", tmp_path / "dst", max_megabytes=size * 0.6 / 1e6,
                        backgrounds_per_kind=2, max_files_per_class=5)
    assert dst.foreground_classes == src.foreground_classes
    assert sum(c.path.stat().st_size for c in dst.clips) <= size * 0.6
    assert all(len(dst.foreground(k)) <= 5 for k in dst.foreground_classes)
    assert len(dst.backgrounds()) == 4
    licences = (tmp_path / "dst" / "LICENSES.md").read_text()
    assert "Creative Commons Zero" in licences and "embedded soundbank" in licences
    assert all(f"`{c.relative_path}`" in licences for c in dst.clips)


def test_embedded_bank_is_complete_and_small():
    bank = SoundBank.open("embedded")
    assert bank.root == EMBEDDED_BANK_DIR
    assert len(bank.foreground_classes) == 9
    assert len(bank.background_kinds) == 5
    assert sum(c.path.stat().st_size for c in bank.clips) <= 20e6
    rows = list(csv.DictReader((EMBEDDED_BANK_DIR / "manifest.csv").open(newline="", encoding="utf-8")))
    assert len(rows) == len(bank.clips)
    for row in rows:
        assert (EMBEDDED_BANK_DIR / row["path"]).is_file(), row["path"]
        assert row["license"].strip() and row["attribution"].strip(), row["path"]
    licences = (EMBEDDED_BANK_DIR / "LICENSES.md").read_text(encoding="utf-8")
    assert all(f"`{row['path']}`" in licences for row in rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every class and kind has >= 3 recordings
        splits = split_by_source(list(bank.clips), seed=0)
    for split in SPLITS:
        assert len({c.label for c in splits[split] if c.role == "foreground"}) == 9


def _clip(label: str, collection: str, group: str, index: int, role: str = "foreground") -> BankClip:
    return BankClip(path=Path(f"/bank/{label}/{group}_{index}.flac"), relative_path=f"{role}/{label}/{group}_{index}.flac",
                    role=role, label=label, source_group=group, duration_seconds=1.0, license="CC0-1.0",
                    collection=collection)


def test_split_by_collection_keeps_eval_collections_out_of_training():
    """Dog: collections A (6 files, 6 recordings), B (2), C (4): the eval fraction 0.15 of 12
    files is 1.8, closest to B's 2, so B is eval and never heard in train / valid; A and C are
    split by recording into train / valid / eval_seen. Cat has one collection: split by
    recording into train / valid / eval, with a warning."""
    dog = ([_clip("Dog", "A", f"a{i}", 0) for i in range(6)] + [_clip("Dog", "B", f"b{i}", 0) for i in range(2)]
           + [_clip("Dog", "C", f"c{i}", 0) for i in range(4)])
    cat = [_clip("Cat", "K", f"k{i}", 0) for i in range(6)]
    with pytest.warns(UserWarning, match="'Cat' has one collection"):
        splits = split_by_source(dog + cat, seed=3, split_by="collection")
    dog_split = {s: {c.collection for c in clips if c.label == "Dog"} for s, clips in splits.items()}
    assert dog_split["eval"] == {"B"}
    assert dog_split["train"] | dog_split["valid"] | dog_split["eval_seen"] == {"A", "C"}
    assert dog_split["eval_seen"] and not {c.source_group for c in splits["eval_seen"]} & {
        c.source_group for c in splits["train"]}    # seen collections, unheard recordings
    assert {c.relative_path for c in dog if c.collection == "B"} == {c.relative_path for c in splits["eval"]
                                                                     if c.label == "Dog"}
    cat_split = {s: [c for c in clips if c.label == "Cat"] for s, clips in splits.items()}
    assert all(cat_split[s] for s in ("train", "valid", "eval"))   # a seen-collection eval for Cat
    assert not cat_split["eval_seen"]
    assert sorted(c.relative_path for clips in splits.values() for c in clips) == sorted(
        c.relative_path for c in dog + cat)         # every clip once
    with pytest.raises(ValueError, match="split_by must be one of"):
        split_by_source(dog, split_by="microphone")


def test_embedded_bank_split_by_collection_has_unseen_eval_for_every_class():
    """The embedded bank has >= 2 collections per class: each class's eval clips come from a
    collection that its training clips do not."""
    bank = SoundBank.open("embedded")
    splits = split_by_source([c for c in bank.clips if c.role == "foreground"], seed=0, split_by="collection")
    for label in bank.foreground_classes:
        seen = {c.collection for s in ("train", "valid") for c in splits[s] if c.label == label}
        unseen = {c.collection for c in splits["eval"] if c.label == label}
        assert unseen and seen and not (seen & unseen), label
