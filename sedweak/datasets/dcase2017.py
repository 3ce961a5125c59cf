"""DCASE 2017 task 4 (large-scale weakly supervised SED for smart cars), as downloaded.

The files of the challenge repository, none with a header line (searched for in
``metadata_dirs`` under ``data.root``, first hit wins):

* clip lists ``training_set.csv``, ``testing_set.csv`` (and ``evaluation_set.csv`` if
  you have one), comma-separated ``YTID,start,end,labels,MIDs``, quoted when a field
  holds a comma::

      -0Eem_FuIto,15.000,25.000,"Fire engine, fire truck (siren)",/m/012ndj
      0_HnD-rW3lI,170.000,180.000,"Train horn,Train","/m/0284vy3,/m/07jdr"

  Labels are read from the MIDs (names may contain commas); the names must agree.
* weak ground truth ``groundtruth_weak_label_{training,testing,evaluation}_set.csv``,
  tab-separated ``filename start end label``, one row per clip and label::

      -5QrBL6MzLg_60.000_70.000.wav	60.000	70.000	Train horn

* strong ground truth ``groundtruth_strong_label_{testing,evaluation}_set.csv``,
  tab-separated ``filename onset offset label`` (seconds within the clip)::

      -5QrBL6MzLg_60.000_70.000.wav	0.917	2.029	Train horn
      -Qfk_Q2ctBs_30.000_40.000.wav	0	0	Train horn

  ``0 0`` rows (a tagged class with no located event) are kept as zero-length events,
  as the official scoring saw them: the clip has the tag, no frame is active.

A set's clips and tags come from its weak ground truth when present, else from its clip
list; clips in the strong ground truth are strongly labelled (tags = weak tags united
with the strong events' labels), the others weakly. Clip ids are the ground-truth
file names ``<YTID>_<start>_<end>.wav``. Audio is found with the AudioSet naming rules
(``sedweak.datasets.audioset``: the official download script writes
``Y<YTID>_<start>_<end>.wav``) in ``audio_dir`` with ``{split}`` replaced by the set name
(training / testing / evaluation); without ``{split}`` it is one flat folder. Clips without
audio are excluded and listed like the AudioSet reader's.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from sedweak.datasets.audioset import (
    clip_id,
    clipset,
    find_audio,
    holdout,
    index_audio,
    listing_missing,
    parse_seconds,
)
from sedweak.datasets.clipset import ClipSet
from sedweak.labels import Event, LabelError

# The 17 classes with their AudioSet MIDs (sound_event_list_17_classes.txt), warnings first.
CLASS_MIDS = (
    ("Train horn", "/m/0284vy3"), ("Air horn, truck horn", "/m/05x_td"), ("Car alarm", "/m/02mfyn"),
    ("Reversing beeps", "/m/02rhddq"), ("Ambulance (siren)", "/m/012n7d"), ("Police car (siren)", "/m/04qvtq"),
    ("Fire engine, fire truck (siren)", "/m/012ndj"), ("Civil defense siren", "/m/0dgbq"),
    ("Screaming", "/m/03qc9zr"), ("Bicycle", "/m/0199g"), ("Skateboard", "/m/06_fw"), ("Car", "/m/0k4j"),
    ("Car passing by", "/t/dd00134"), ("Bus", "/m/01bjv"), ("Truck", "/m/07r04"), ("Motorcycle", "/m/04_sv"),
    ("Train", "/m/07jdr"),
)
CLASSES = tuple(name for name, _ in CLASS_MIDS)
MID_TO_CLASS = {mid: name for name, mid in CLASS_MIDS}
SETS = ("training", "testing", "evaluation")


@dataclass(frozen=True)
class Dcase2017Options:
    """``data.reader_options`` of the ``dcase2017_task4`` reader."""

    # "valid": testing set -> valid, evaluation set -> eval (the challenge protocol);
    # "eval": testing set -> eval, valid = a seeded valid_fraction of the training set.
    testing_split: str = "valid"
    valid_fraction: float = 0.1  # used when testing_split is "eval"
    split_seed: int = 0
    audio_dir: str = "audio/{split}"  # {split}: training / testing / evaluation; no {split}: flat
    metadata_dirs: tuple[str, ...] = ("", "metadata", "groundtruth_release")

    def __post_init__(self) -> None:
        if self.testing_split not in ("valid", "eval"):
            raise LabelError(f"data.reader_options.testing_split must be 'valid' or 'eval', got {self.testing_split!r}")
        if self.testing_split == "eval" and not 0.0 < self.valid_fraction < 1.0:
            raise LabelError(f"data.reader_options.valid_fraction must be in (0, 1), got {self.valid_fraction}")


# ----------------------------------------------------------------------------- files


def _rows(path: Path, delimiter: str):
    """(line number, cells) of a headerless CSV/TSV; blank lines skipped."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        for row in reader:
            if row and "".join(row).strip():
                yield reader.line_num, [c.strip() for c in row]


def _class(label: str, where: str) -> str:
    if label not in CLASSES:
        raise LabelError(f"{where}: unknown label {label!r}; the 17 DCASE 2017 task 4 classes are {list(CLASSES)}")
    return label


def parse_clip_name(name: str, where: str) -> tuple[str, str, str]:
    """``<YTID>_<start>_<end>.wav`` -> (YTID, start, end); YTIDs may contain ``_``."""
    parts = name[:-4].rsplit("_", 2) if name.endswith(".wav") else []
    if len(parts) != 3 or not parts[0]:
        raise LabelError(f"{where}: expected a file name like -5QrBL6MzLg_60.000_70.000.wav, got {name!r}")
    parse_seconds(parts[1], where, "start in the file name")
    parse_seconds(parts[2], where, "end in the file name")
    return parts[0], parts[1], parts[2]


def read_clip_list(path: Path) -> dict[str, set[str]]:
    """``training_set.csv``-style list -> ``{clip id: {labels}}``."""
    out: dict[str, set[str]] = {}
    for line, row in _rows(path, ","):
        where = f"{path}:{line}"
        if len(row) != 5:
            raise LabelError(f"{where}: expected 5 columns YTID,start,end,\"labels\",\"MIDs\", got {len(row)}: {row}")
        ytid, start, end, names, mids = row
        if not ytid or parse_seconds(end, where, "end") <= parse_seconds(start, where, "start"):
            raise LabelError(f"{where}: need a YTID and start < end, got {row[:3]}")
        unknown = [m for m in mids.split(",") if m.strip() not in MID_TO_CLASS]
        if unknown:
            raise LabelError(f"{where}: MID(s) {unknown} are not DCASE 2017 task 4 classes")
        labels = [MID_TO_CLASS[m.strip()] for m in mids.split(",")]
        if ",".join(labels) != names:
            raise LabelError(f"{where}: labels {names!r} do not match MIDs {mids!r} ({','.join(labels)!r})")
        out.setdefault(clip_id(ytid, start, end), set()).update(labels)
    return out


def read_weak_groundtruth(path: Path) -> dict[str, set[str]]:
    """``groundtruth_weak_label_*_set.csv`` -> ``{clip id: {labels}}``."""
    out: dict[str, set[str]] = {}
    for line, row in _rows(path, "\t"):
        where = f"{path}:{line}"
        if len(row) != 4:
            raise LabelError(f"{where}: expected 4 tab-separated columns filename,start,end,label, got {len(row)}")
        ytid, start, end = parse_clip_name(row[0], where)
        if parse_seconds(row[1], where, "start") != float(start) or parse_seconds(row[2], where, "end") != float(end):
            raise LabelError(f"{where}: start/end {row[1]}, {row[2]} disagree with the file name {row[0]}")
        out.setdefault(clip_id(ytid, start, end), set()).add(_class(row[3], where))
    return out


def read_strong_groundtruth(path: Path) -> dict[str, list[Event]]:
    """``groundtruth_strong_label_*_set.csv`` -> ``{clip id: [Event]}`` (seconds within the clip)."""
    out: dict[str, list[Event]] = {}
    for line, row in _rows(path, "\t"):
        where = f"{path}:{line}"
        if len(row) != 4:
            raise LabelError(f"{where}: expected 4 tab-separated columns filename,onset,offset,label, got {len(row)}")
        name = clip_id(*parse_clip_name(row[0], where))
        onset, offset = parse_seconds(row[1], where, "onset"), parse_seconds(row[2], where, "offset")
        if offset < onset:
            raise LabelError(f"{where}: need onset <= offset, got {row[1]}, {row[2]}")
        out.setdefault(name, []).append(Event(name, onset, offset, _class(row[3], where)))
    return out


# ----------------------------------------------------------------------------- sets


def _find(root: Path, options: Dcase2017Options, filename: str) -> Path | None:
    return next((root / d / filename for d in options.metadata_dirs if (root / d / filename).is_file()), None)


def read_set(root: Path, options: Dcase2017Options, name: str
             ) -> tuple[dict[str, set[str]], dict[str, list[Event]]]:
    """Tags and strong events of one challenge set (``training``, ``testing``, ``evaluation``)."""
    files = [f"groundtruth_weak_label_{name}_set.csv", f"{name}_set.csv", f"groundtruth_strong_label_{name}_set.csv"]
    weak_path, list_path, strong_path = (_find(root, options, f) for f in files)
    if not (weak_path or list_path or strong_path):
        raise LabelError(f"{root}: DCASE 2017 task 4 {name} set: none of {files} found in "
                         f"{[str(root / d) for d in options.metadata_dirs]}")
    tags = read_weak_groundtruth(weak_path) if weak_path else read_clip_list(list_path) if list_path else {}
    strong = read_strong_groundtruth(strong_path) if strong_path else {}
    for clip, events in strong.items():
        tags[clip] = tags.get(clip, set()) | {e.label for e in events}
    return tags, strong


def _clipset(split: str, root: Path, options: Dcase2017Options, set_name: str, tags: Mapping[str, set[str]],
             strong: Mapping[str, list[Event]], classes: Sequence[str], indexes: dict) -> tuple[ClipSet, list[str]]:
    """Keep ``classes`` only (others dropped), find the audio; returns (ClipSet, missing ids)."""
    folder = root / options.audio_dir.format(split=set_name)
    if folder not in indexes:
        indexes[folder] = index_audio(folder)
    paths, labels, events, missing = {}, {}, {}, []
    for clip in tags:
        path = find_audio(indexes[folder], *parse_clip_name(clip, set_name))
        if path is None:
            missing.append(clip)
            continue
        paths[clip], labels[clip] = path, sorted(t for t in tags[clip] if t in classes)
        if clip in strong:
            events[clip] = [e for e in strong[clip] if e.label in classes]
    return clipset(split, paths, labels, events), missing


def read_with_missing(root: Path, data, splits: Sequence[str]) -> tuple[dict[str, ClipSet], dict[str, list[str]]]:
    """``({split: ClipSet}, {split: [clip ids without audio]})`` of a DCASE 2017 task 4 copy."""
    from sedweak.datasets.registry import reader_options

    root, options = Path(root), reader_options(Dcase2017Options, data)
    classes = list(data.classes) or list(CLASSES)
    unknown = sorted(set(classes) - set(CLASSES))
    if unknown:
        raise LabelError(f"data.classes {unknown} are not DCASE 2017 task 4 classes {list(CLASSES)}")
    bad = sorted(set(splits) - {"train", "valid", "eval"})
    if bad:
        raise LabelError(f"{root}: the dcase2017_task4 reader has no split(s) {bad}; it serves train, valid, eval")
    roles = {"train": "training", "valid": "testing", "eval": "evaluation"}
    if options.testing_split == "eval":
        roles.update(valid="training", eval="testing")
    sets = {name: read_set(root, options, name) for name in sorted({roles[s] for s in splits})}
    held_out = set()
    if options.testing_split == "eval" and {"train", "valid"} & set(splits):
        held_out = holdout(sets["training"][0], options.valid_fraction, options.split_seed)
    clips, missing, indexes = {}, {}, {}
    for split in splits:
        tags, strong = sets[roles[split]]
        if roles[split] == "training" and held_out:
            keep = (lambda c: c in held_out) if split == "valid" else (lambda c: c not in held_out)
            tags = {c: t for c, t in tags.items() if keep(c)}
        clips[split], missing[split] = _clipset(split, root, options, roles[split], tags, strong, classes, indexes)
    return clips, missing


def read(root: Path, data, splits: Sequence[str]) -> dict[str, ClipSet]:
    """Registry entry: DCASE 2017 task 4 splits; clips without audio are listed and excluded."""
    return listing_missing(read_with_missing(root, data, splits), root)
