"""A generic labelled audio folder (``dataset: generic``).

Two layouts (``dataset: generic``):

* one subfolder per class -- ``<root>/<class>/<clip>.wav`` -- each clip tagged with
  its folder's name and split train / valid / eval by a seeded, per-class shuffle
  (option ``fractions``);
* a labels file (option ``labels_file``): ``.csv`` (comma-delimited) or ``.tsv`` /
  ``.txt`` (tab-delimited) with a header naming ``filename`` and ``label`` or
  ``labels`` (several labels in one cell separated by ``,`` or ``;``) and an optional
  ``split`` column (``train`` / ``valid`` / ``eval``; ``validation``, ``val`` and
  ``test`` are accepted aliases). Without a split column the seeded split applies.
  Filenames are paths relative to ``audio_dir`` (default: the root); a file listed on
  several rows gets the union of the labels.

Clip ids are the paths relative to the audio folder (``dog/001.wav``), so equal file
names in two class folders stay distinct. With ``clip_events`` (default) each label
also becomes one event spanning the whole clip (its duration read from the audio
header, capped at ``data.clip_seconds``): a weak label stated as a strong one, so the
detection evaluation of ``sedweak.training.run`` -- which scores strongly labelled
clips only -- has a reference. Segment-based scores then measure clip tagging.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from sedweak.config import ConfigError
from sedweak.datasets.clipset import (ROLES, ClipSet, check_label, check_roles, keep_existing_audio, make_clipset,
                                      resolve, whole_clip_events)
from sedweak.datasets.registry import reader_options
from sedweak.labels import LabelError

log = logging.getLogger(__name__)
SPLIT_ALIASES = {"train": "train", "valid": "valid", "validation": "valid", "val": "valid",
                 "eval": "eval", "test": "eval"}
DELIMITERS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}


# ----------------------------------------------------------------------------- generic reader


@dataclass(frozen=True)
class GenericOptions:
    """``data.reader_options`` of ``dataset: generic``."""

    labels_file: str = ""  # empty: one subfolder per class; else a .csv/.tsv/.txt labels file
    audio_dir: str = ""  # folder the clips (or class folders) are in; empty: the root
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, valid, eval (seeded split)
    seed: int = 0  # of the split shuffle
    extensions: tuple[str, ...] = (".wav", ".flac", ".ogg")  # audio files in class folders
    clip_events: bool = True  # labels also as whole-clip events (see the module docstring)

    def __post_init__(self) -> None:
        if any(f < 0 for f in self.fractions) or abs(sum(self.fractions) - 1.0) > 1e-6:
            raise ConfigError(f"data.reader_options.fractions must be >= 0 and sum to 1, got {list(self.fractions)}")


def _class_folder_rows(audio_dir: Path, options: GenericOptions, classes: Sequence[str] | None) -> list:
    """``(clip id, labels, split None)`` for every audio file in ``audio_dir/<class>/``."""
    if not audio_dir.is_dir():
        raise LabelError(f"{audio_dir}: dataset folder not found")
    rows = []
    extensions = {e.lower() for e in options.extensions}
    for folder in sorted(p for p in audio_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in extensions)
        if files:
            check_label(str(folder), folder.name, classes)
        rows += [(f"{folder.name}/{f.name}", [folder.name], None) for f in files]
    if not rows:
        raise LabelError(f"{audio_dir}: no class subfolders with audio ({', '.join(options.extensions)})")
    return rows


def _header_columns(path: Path, header: list[str]) -> dict[str, int]:
    columns = {c.strip(): i for i, c in enumerate(header)}
    label_keys = [k for k in ("label", "labels") if k in columns]
    unknown = sorted(set(columns) - {"filename", "label", "labels", "split"})
    if "filename" not in columns or len(label_keys) != 1 or unknown:
        raise LabelError(f"{path}:1: expected a header with filename, label (or labels) and an optional "
                         f"split column, got {header}")
    return {"filename": columns["filename"], "labels": columns[label_keys[0]], "split": columns.get("split", -1)}


def read_labels_file(path: Path, classes: Sequence[str] | None) -> list[tuple[str, list[str], str | None]]:
    """``(filename, labels, split or None)`` rows of a generic labels file, merged per filename."""
    if path.suffix.lower() not in DELIMITERS:
        raise LabelError(f"{path}: labels file must end in {sorted(DELIMITERS)} (the delimiter follows)")
    if not path.is_file():
        raise LabelError(f"{path}: label file not found")
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig")), delimiter=DELIMITERS[path.suffix.lower()]))
    if not rows:
        raise LabelError(f"{path}: empty file (expected a header line)")
    col = _header_columns(path, rows[0])
    merged: dict[str, tuple[list[str], str | None]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(rows[0]):
            raise LabelError(f"{path}:{line}: expected {len(rows[0])} columns, got {len(row)}")
        name = row[col["filename"]].strip()
        labels = [s.strip() for s in re.split(r"[;,]", row[col["labels"]]) if s.strip()]
        split = row[col["split"]].strip().lower() if col["split"] >= 0 else None
        if not name:
            raise LabelError(f"{path}:{line}: empty filename")
        if split is not None and split not in SPLIT_ALIASES:
            raise LabelError(f"{path}:{line}: split must be one of {sorted(SPLIT_ALIASES)}, got {split!r}")
        split = SPLIT_ALIASES.get(split) if split is not None else None
        for label in labels:
            check_label(f"{path}:{line}", label, classes)
        if name in merged and merged[name][1] != split:
            raise LabelError(f"{path}:{line}: {name} is listed in splits {merged[name][1]!r} and {split!r}")
        merged[name] = (sorted(set(merged.get(name, ([], None))[0]) | set(labels)), split)
    return [(name, labels, split) for name, (labels, split) in sorted(merged.items())]


def seeded_split(rows: list, fractions: Sequence[float], seed: int) -> dict[str, list]:
    """Rows (id, labels, _) -> ``{role: rows}``, shuffled per label set so every class is spread."""
    rng = np.random.default_rng(seed)
    groups: dict[tuple, list] = {}
    for row in rows:
        groups.setdefault(tuple(row[1]), []).append(row)
    out: dict[str, list] = {role: [] for role in ROLES}
    for key in sorted(groups):
        group = [groups[key][i] for i in rng.permutation(len(groups[key]))]
        n_valid, n_eval = (round(len(group) * f) for f in fractions[1:])
        n_train = max(0, len(group) - n_valid - n_eval)
        out["train"] += group[:n_train]
        out["valid"] += group[n_train:n_train + n_valid]
        out["eval"] += group[n_train + n_valid:]
    return out


def read(root: Path, data, splits: Sequence[str]) -> dict[str, ClipSet]:
    """Registry entry for ``dataset: generic`` (see the module docstring)."""
    check_roles(splits)
    options = reader_options(GenericOptions, data)
    classes = list(data.classes) or None
    audio_dir = resolve(root, options.audio_dir) if options.audio_dir else Path(root)
    if options.labels_file:
        rows = read_labels_file(resolve(root, options.labels_file), classes)
    else:
        rows = _class_folder_rows(audio_dir, options, classes)
    if rows and rows[0][2] is not None:  # a split column (read_labels_file checked every row)
        by_role = {role: [r for r in rows if r[2] == role] for role in ROLES}
    else:
        by_role = seeded_split(rows, options.fractions, options.seed)
    out = {}
    for role in splits:
        clipset = make_clipset(role, {name: (audio_dir / name, labels, None) for name, labels, _ in by_role[role]})
        clipset = keep_existing_audio(clipset, f"{audio_dir} ({role})")
        out[role] = whole_clip_events(clipset, data.clip_seconds) if options.clip_events else clipset
    return out
