"""UrbanSound8K as downloaded (Salamon et al. 2014): 8,732 slices of <= 4 s in 10 folds.

    metadata/UrbanSound8K.csv   slice_file_name,fsID,start,end,salience,fold,classID,class
    audio/fold1 .. fold10/<slice_file_name>

Clip classification: one class per slice (weak labels). Roles by fold: eval =
``eval_fold``, valid = ``valid_fold`` (default: the next fold, 10 -> 1), train = the
other eight. The dataset's protocol is 10-fold cross-validation over the predefined
folds -- one run per eval fold, never a random split (slices of one recording share
a fold): :func:`cross_validation_overrides` lists the runs, or sweep with
``--grid data.reader_options.eval_fold=1,2,3,4,5,6,7,8,9,10``.

Every slice was cut from an annotated occurrence of its class, so with
``slice_events`` (default) the class is also one event over the whole slice
(``end - start`` seconds, capped at ``data.clip_seconds``); this gives
``sedweak.training.run`` -- which evaluates detection on strongly labelled clips only --
a reference. With ``slice_events: false``, ``strong`` is None for every clip (tagging
only; the current ``training.run`` then cannot evaluate).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sedweak.config import ConfigError
from sedweak.datasets.clipset import (
    ClipSet,
    check_label,
    check_roles,
    keep_existing_audio,
    make_clipset,
    resolve,
)
from sedweak.datasets.registry import reader_options
from sedweak.datasets.urbansed import URBAN_CLASSES
from sedweak.labels import Event, LabelError

CSV_COLUMNS = ("slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class")
NUM_FOLDS = 10


@dataclass(frozen=True)
class UrbanSound8KOptions:
    """``data.reader_options`` of ``dataset: urbansound8k``."""

    eval_fold: int = 10  # 1..10: the held-out fold of this run
    valid_fold: int | None = None  # 1..10, != eval_fold; None: the fold after eval_fold
    metadata_csv: str = "metadata/UrbanSound8K.csv"
    audio_dir: str = "audio"  # holds fold1 .. fold10
    slice_events: bool = True  # the class also as one event over the whole slice

    def __post_init__(self) -> None:
        for name in ("eval_fold", "valid_fold"):
            fold = getattr(self, name)
            if fold is not None and not 1 <= fold <= NUM_FOLDS:
                raise ConfigError(f"data.reader_options.{name} must be in 1..{NUM_FOLDS}, got {fold}")
        if self.valid_fold == self.eval_fold:
            raise ConfigError(f"data.reader_options.valid_fold must differ from eval_fold ({self.eval_fold})")

    @property
    def folds(self) -> dict[str, set[int]]:
        """Folds of each role."""
        valid = self.valid_fold if self.valid_fold is not None else self.eval_fold % NUM_FOLDS + 1
        train = set(range(1, NUM_FOLDS + 1)) - {valid, self.eval_fold}
        return {"train": train, "valid": {valid}, "eval": {self.eval_fold}}


def cross_validation_overrides() -> list[list[str]]:
    """The 10 runs of the UrbanSound8K protocol as config overrides, one list per eval fold.

    ``[["data.reader_options.eval_fold=1"], ..., ["data.reader_options.eval_fold=10"]]``;
    each run validates on the next fold. Report the mean (and spread) over the 10 runs.
    """
    return [[f"data.reader_options.eval_fold={fold}"] for fold in range(1, NUM_FOLDS + 1)]


def _parse_row(path: Path, line: int, row: dict, classes: Sequence[str]) -> tuple[str, int, float, str]:
    """(slice file name, fold, duration seconds, class) of one checked CSV row."""
    where = f"{path}:{line}"
    try:
        fold, class_id = int(row["fold"]), int(row["classID"])
        start, end = float(row["start"]), float(row["end"])
    except ValueError:
        raise LabelError(f"{where}: fold/classID must be integers and start/end numbers, got {row}") from None
    name, label = row["slice_file_name"].strip(), row["class"].strip()
    if not name:
        raise LabelError(f"{where}: empty slice_file_name")
    if not 1 <= fold <= NUM_FOLDS:
        raise LabelError(f"{where}: fold must be in 1..{NUM_FOLDS}, got {fold}")
    if not (math.isfinite(start) and math.isfinite(end)) or end < start:
        raise LabelError(f"{where}: need start <= end, got {start}, {end}")
    check_label(where, label, classes)
    if label in URBAN_CLASSES and URBAN_CLASSES.index(label) != class_id:
        raise LabelError(f"{where}: classID {class_id} does not match class {label!r} "
                         f"(UrbanSound8K numbers it {URBAN_CLASSES.index(label)})")
    return name, fold, end - start, label


def read_metadata(path: Path, classes: Sequence[str]) -> list[tuple[str, int, float, str]]:
    """Rows of ``UrbanSound8K.csv`` as (slice file name, fold, duration seconds, class)."""
    if not path.is_file():
        raise LabelError(f"{path}: label file not found")
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    header = [c.strip() for c in rows[0]] if rows else []
    if sorted(header) != sorted(CSV_COLUMNS):
        raise LabelError(f"{path}:1: expected the columns {','.join(CSV_COLUMNS)}, got {header}")
    out, seen = [], set()
    for line, cells in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise LabelError(f"{path}:{line}: expected {len(header)} columns, got {len(cells)}")
        parsed = _parse_row(path, line, dict(zip(header, cells)), classes)
        if parsed[0] in seen:
            raise LabelError(f"{path}:{line}: {parsed[0]} is listed twice")
        seen.add(parsed[0])
        out.append(parsed)
    return out


def read(root: Path, data, splits: Sequence[str]) -> dict[str, ClipSet]:
    """Registry entry for ``dataset: urbansound8k``; labels checked against ``data.classes``
    (default: the 10 UrbanSound classes)."""
    check_roles(splits)
    options = reader_options(UrbanSound8KOptions, data)
    classes = list(data.classes) or list(URBAN_CLASSES)
    rows = read_metadata(resolve(root, options.metadata_csv), classes)
    audio_dir = resolve(root, options.audio_dir)
    out = {}
    for role in splits:
        clips = {}
        for name, fold, seconds, label in rows:
            if fold in options.folds[role]:
                events = [Event(name, 0.0, round(min(seconds, data.clip_seconds), 6), label)]
                clips[name] = (audio_dir / f"fold{fold}" / name, [label], events if options.slice_events else None)
        out[role] = keep_existing_audio(make_clipset(role, clips), f"{audio_dir} ({role}: folds "
                                        f"{sorted(options.folds[role])})")
    return out
