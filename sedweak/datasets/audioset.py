"""AudioSet as the user downloaded it: segments CSVs, ontology, class names, an audio folder.

Files (paths relative to ``data.root``; each one is a reader option):

* segments CSVs ``balanced_train_segments.csv``, ``unbalanced_train_segments.csv``,
  ``eval_segments.csv``: three header lines, then one segment per row::

      # Segments csv created Sun Mar  5 10:54:31 2017
      # num_ytids=22160, num_segs=22160, num_unique_labels=527, num_positive_labels=52882
      # YTID, start_seconds, end_seconds, positive_labels
      --PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"

* ``class_labels_indices.csv``: header ``index,mid,display_name``, rows like
  ``0,/m/09x0r,"Speech"`` (quoted when the name has a comma). Labels are display names.
* ``ontology.json``: a list of ``{id, name, description, citation_uri, positive_examples,
  child_ids, restrictions}``; needed for ``include_descendants`` and for selected names
  that are ontology nodes outside the 527 classes.

Audio is looked up (recursively) in ``audio_dir`` by YTID and start time. Accepted names,
with or without a leading ``Y`` and extension wav / flac / ogg / mp3::

    <YTID>_<start>_<end>   start/end in seconds with 3 decimals (30.000) or integer ms (30000)
    <YTID>_<start>         same start formats
    <YTID>

Clips whose audio is missing are excluded, counted in a logged warning and listed (one
clip id per line) in ``<root>/features/missing_audio_<split>.txt``; ``read_with_missing``
returns the lists too. A malformed row or header is a LabelError naming file and line.
Clip ids are ``<YTID>_<start>_<end>.wav`` (3 decimals); labels are weak only.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from sedweak.datasets.clipset import ClipSet
from sedweak.labels import LabelError

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
SEGMENTS_COLUMNS = "# YTID, start_seconds, end_seconds, positive_labels"
INDICES_HEADER = ("index", "mid", "display_name")


@dataclass(frozen=True)
class AudioSetOptions:
    """``data.reader_options`` of the ``audioset`` reader (paths relative to ``data.root``)."""

    train_csv: str = "balanced_train_segments.csv"  # or unbalanced_train_segments.csv
    valid_csv: str = ""  # empty: hold out ``valid_fraction`` of train_csv (seeded)
    eval_csv: str = "eval_segments.csv"
    valid_fraction: float = 0.1
    split_seed: int = 0
    audio_dir: str = "audio"
    class_labels_csv: str = "class_labels_indices.csv"
    ontology_json: str = "ontology.json"
    mids: tuple[str, ...] = ()  # select classes by MID instead of data.classes (display names)
    include_descendants: bool = False  # a descendant's label maps to its selected ancestor
    drop_unlabelled: bool = True  # False: clips with none of the selected classes stay as negatives

    def __post_init__(self) -> None:
        if not 0.0 <= self.valid_fraction < 1.0:
            raise LabelError(f"data.reader_options.valid_fraction must be in [0, 1), got {self.valid_fraction}")
        if not self.valid_csv and self.valid_fraction == 0.0:
            raise LabelError("data.reader_options: give valid_csv or a valid_fraction > 0 for the valid split")


@dataclass(frozen=True)
class Segment:
    """One row of a segments CSV; ``labels`` are MIDs, ``where`` is ``file:line``."""

    ytid: str
    start: str  # as written, e.g. "30.000"
    end: str
    labels: tuple[str, ...]
    where: str

    @property
    def clip_id(self) -> str:
        return clip_id(self.ytid, self.start, self.end)


def clip_id(ytid: str, start: str, end: str) -> str:
    """``<YTID>_<start>_<end>.wav`` with 3-decimal seconds, the DCASE 2017 file naming."""
    return f"{ytid}_{float(start):.3f}_{float(end):.3f}.wav"


# ----------------------------------------------------------------------------- metadata


def _open_text(path: Path):
    if not path.is_file():
        raise LabelError(f"{path}: file not found")
    return open(path, encoding="utf-8-sig", newline="")


def parse_seconds(text: str, where: str, what: str) -> float:
    """A finite, non-negative number of seconds; otherwise a LabelError naming ``where``."""
    try:
        value = float(text)
    except ValueError:
        raise LabelError(f"{where}: {what} must be a number of seconds, got {text!r}") from None
    if not np.isfinite(value) or value < 0:
        raise LabelError(f"{where}: {what} must be >= 0, got {text!r}")
    return value


def read_segments_csv(path: Path) -> list[Segment]:
    """Rows of an AudioSet segments CSV (three ``#`` header lines, then YTID, start, end, MIDs)."""
    path = Path(path)
    with _open_text(path) as handle:
        header = [handle.readline().rstrip("\r\n") for _ in range(3)]
        if not header[0].startswith("# Segments csv created") or not header[1].startswith("# num_ytids="):
            bad = 1 if not header[0].startswith("# Segments csv created") else 2
            raise LabelError(f"{path}:{bad}: expected the AudioSet header lines '# Segments csv created ...' "
                             f"and '# num_ytids=...', got {header[bad - 1]!r}")
        if " ".join(header[2].split()) != SEGMENTS_COLUMNS:
            raise LabelError(f"{path}:3: expected {SEGMENTS_COLUMNS!r}, got {header[2]!r}")
        segments, seen = [], {}
        for offset, row in enumerate(csv.reader(handle, skipinitialspace=True)):
            line = offset + 4  # AudioSet rows hold no quoted newlines: one record per line
            if not row or not "".join(row).strip():
                continue
            segment = _segment(row, f"{path}:{line}")
            if segment.clip_id in seen:
                raise LabelError(f"{path}:{line}: segment {segment.clip_id} already listed on line {seen[segment.clip_id]}")
            seen[segment.clip_id] = line
            segments.append(segment)
    return segments


def _segment(row: Sequence[str], where: str) -> Segment:
    if len(row) != 4:
        raise LabelError(f"{where}: expected 4 columns (YTID, start_seconds, end_seconds, "
                         f"\"positive_labels\"), got {len(row)}: {row}")
    ytid, start, end, labels = (c.strip() for c in row)
    if not ytid:
        raise LabelError(f"{where}: empty YTID")
    if parse_seconds(end, where, "end_seconds") <= parse_seconds(start, where, "start_seconds"):
        raise LabelError(f"{where}: need start_seconds < end_seconds, got {start}, {end}")
    mids = tuple(m.strip() for m in labels.split(",") if m.strip())
    if not mids or not all(m.startswith("/") for m in mids):
        raise LabelError(f"{where}: positive_labels must be comma-separated MIDs like /m/09x0r, got {labels!r}")
    return Segment(ytid, start, end, mids, where)


def read_class_indices(path: Path) -> dict[str, str]:
    """``class_labels_indices.csv`` -> ``{mid: display_name}``."""
    path = Path(path)
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        header = tuple(c.strip() for c in next(reader, []))
        if header != INDICES_HEADER:
            raise LabelError(f"{path}:1: expected header {','.join(INDICES_HEADER)}, got {list(header)}")
        names = {}
        for row in reader:
            if not row:
                continue
            if len(row) != 3 or not row[1].strip().startswith("/") or not row[2].strip():
                raise LabelError(f"{path}:{reader.line_num}: expected index,mid,display_name, got {row}")
            names[row[1].strip()] = row[2].strip()
    return names


def read_ontology(path: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    """``ontology.json`` -> ``{mid: (name, child_ids)}``."""
    path = Path(path)
    with _open_text(path) as handle:
        try:
            nodes = json.load(handle)
        except json.JSONDecodeError as err:
            raise LabelError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(nodes, list):
        raise LabelError(f"{path}: expected a JSON list of ontology entries")
    out = {}
    for i, node in enumerate(nodes):
        if not isinstance(node, dict) or not {"id", "name", "child_ids"} <= set(node):
            raise LabelError(f"{path}: entry {i} lacks id / name / child_ids")
        out[node["id"]] = (str(node["name"]), tuple(node["child_ids"]))
    return out


def descendants(ontology: Mapping[str, tuple[str, tuple[str, ...]]], mid: str) -> set[str]:
    """MIDs below ``mid`` in the ontology, transitively (``mid`` itself excluded)."""
    found, stack = set(), list(ontology[mid][1])
    while stack:
        child = stack.pop()
        if child not in found and child != mid:
            found.add(child)
            stack.extend(ontology.get(child, ("", ()))[1])
    return found


# ----------------------------------------------------------------------------- classes


def _names_to_mids(names: Mapping[str, str], ontology: Mapping) -> dict[str, set[str]]:
    by_name: dict[str, set[str]] = {}
    for mid, name in list(names.items()) + [(m, node[0]) for m, node in ontology.items()]:
        by_name.setdefault(name, set()).add(mid)
    return by_name


def _selected(options: AudioSetOptions, classes: Sequence[str], names: Mapping[str, str],
              ontology: Mapping, where: str) -> list[tuple[str, str]]:
    """(mid, label) of each selected class; every class of ``names`` when nothing is selected."""
    if options.mids:
        if classes and len(classes) != len(options.mids):
            raise LabelError(f"{where}: data.classes ({len(classes)}) and reader option mids "
                             f"({len(options.mids)}) must pair up one to one")
        unknown = [m for m in options.mids if m not in names and m not in ontology]
        if unknown:
            raise LabelError(f"{where}: MIDs {unknown} are in neither class_labels_indices.csv nor ontology.json")
        labels = list(classes) or [names.get(m) or ontology[m][0] for m in options.mids]
        return list(zip(options.mids, labels))
    if not classes:
        return list(names.items())
    by_name, out = _names_to_mids(names, ontology), []
    for name in classes:
        mids = sorted(by_name.get(name, ()))
        if len(mids) != 1:
            why = "is not a class name" if not mids else f"names several classes {mids}; select by mids"
            raise LabelError(f"{where}: data.classes entry {name!r} {why} "
                             f"(class_labels_indices.csv{'' if ontology else '; no ontology.json'})")
        out.append((mids[0], name))
    return out


def label_map(options: AudioSetOptions, classes: Sequence[str], names: Mapping[str, str],
              ontology: Mapping, where: str) -> dict[str, tuple[str, ...]]:
    """``{mid: labels}``: the selected MIDs (and their descendants) -> selected display names."""
    mapping: dict[str, set[str]] = {}
    for mid, label in _selected(options, classes, names, ontology, where):
        targets = {mid}
        if options.include_descendants:
            if mid not in ontology:
                raise LabelError(f"{where}: include_descendants needs {mid} ({label}) in ontology.json")
            targets |= descendants(ontology, mid)
        for target in targets:
            mapping.setdefault(target, set()).add(label)
    return {mid: tuple(sorted(labels)) for mid, labels in mapping.items()}


# ----------------------------------------------------------------------------- audio


def index_audio(folder: Path) -> dict[str, Path]:
    """``{file stem: path}`` of the audio files under ``folder`` (recursive, sorted, first wins)."""
    index: dict[str, Path] = {}
    if not folder.is_dir():
        log.warning("audio folder %s not found: every clip will be listed as missing", folder)
        return index
    for dirpath, dirnames, files in os.walk(folder):
        dirnames.sort()
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() in AUDIO_EXTENSIONS:
                index.setdefault(stem, Path(dirpath) / name)
    return index


def audio_stems(ytid: str, start: str, end: str) -> list[str]:
    """File stems accepted for a segment, most specific first (see the module docstring)."""
    starts = (f"{float(start):.3f}", str(round(float(start) * 1000)))
    ends = (f"{float(end):.3f}", str(round(float(end) * 1000)))
    stems = [f"{ytid}_{s}_{e}" for s, e in zip(starts, ends)] + [f"{ytid}_{s}" for s in starts] + [ytid]
    return [prefix + stem for stem in stems for prefix in ("", "Y")]


def find_audio(index: Mapping[str, Path], ytid: str, start: str, end: str) -> Path | None:
    """The indexed file of a segment under the first matching accepted name, or None."""
    return next((index[s] for s in audio_stems(ytid, start, end) if s in index), None)


def holdout(clip_ids: Iterable[str], fraction: float, seed: int) -> set[str]:
    """A seeded ``fraction`` of ``clip_ids`` (at least one when fraction > 0 and 2+ clips).

    Drawn over the full list, before missing audio is excluded, so the split does not
    move as more audio gets downloaded.
    """
    ids = sorted(set(clip_ids))
    count = min(len(ids) - 1, max(1, round(fraction * len(ids)))) if fraction > 0 and len(ids) > 1 else 0
    order = np.random.default_rng(seed).permutation(len(ids))
    return {ids[i] for i in order[:count]}


def write_missing(root: Path, split: str, missing: Sequence[str]) -> Path:
    """List the clips without audio in ``<root>/features/missing_audio_<split>.txt`` (warn too)."""
    from sedweak.io_utils import atomic_write_text

    path = Path(root) / "features" / f"missing_audio_{split}.txt"
    if missing:
        log.warning("%s: %d clip(s) without audio excluded; listed in %s", split, len(missing), path)
    return atomic_write_text(path, "".join(f"{name}\n" for name in sorted(missing)))


def clipset(split: str, paths: Mapping[str, Path], labels: Mapping[str, Sequence[str]],
            strong: Mapping | None = None) -> ClipSet:
    """A ClipSet sorted by clip id; ``strong`` defaults to None (weak only) for every clip."""
    names = tuple(sorted(paths))
    strong = strong or {}
    return ClipSet(split, tuple(paths[n] for n in names), names, {n: list(labels[n]) for n in names},
                   {n: strong.get(n) for n in names})


# ----------------------------------------------------------------------------- reader


def _split_clips(split: str, segments: Sequence[Segment], mapping: Mapping[str, tuple[str, ...]],
                 index: Mapping[str, Path], drop_unlabelled: bool):
    paths, labels, missing = {}, {}, []
    for seg in segments:
        clip_labels = sorted({label for m in seg.labels for label in mapping.get(m, ())})
        if not clip_labels and drop_unlabelled:
            continue
        path = find_audio(index, seg.ytid, seg.start, seg.end)
        if path is None:
            missing.append(seg.clip_id)
            continue
        paths[seg.clip_id], labels[seg.clip_id] = path, clip_labels
    return clipset(split, paths, labels), missing


def _checked_segments(path: Path, known: set[str]) -> list[Segment]:
    """``read_segments_csv`` with every MID checked against the known classes."""
    segments = read_segments_csv(path)
    for seg in segments:
        unknown = [m for m in seg.labels if m not in known]
        if unknown:
            raise LabelError(f"{seg.where}: unknown MID(s) {unknown} (not in class_labels_indices.csv / ontology.json)")
    return segments


def _segments_by_split(root: Path, options: AudioSetOptions, splits: Sequence[str],
                       known: set[str]) -> dict[str, list[Segment]]:
    out: dict[str, list[Segment]] = {}
    if "train" in splits or ("valid" in splits and not options.valid_csv):
        train = _checked_segments(root / options.train_csv, known)
        valid_ids = set() if options.valid_csv else holdout((s.clip_id for s in train),
                                                            options.valid_fraction, options.split_seed)
        out["train"] = [s for s in train if s.clip_id not in valid_ids]
        out["valid"] = [s for s in train if s.clip_id in valid_ids]
    if "valid" in splits and options.valid_csv:
        out["valid"] = _checked_segments(root / options.valid_csv, known)
    if "eval" in splits:
        out["eval"] = _checked_segments(root / options.eval_csv, known)
    unknown = sorted(set(splits) - set(out))
    if unknown:
        raise LabelError(f"{root}: the audioset reader has no split(s) {unknown}; it serves train, valid, eval")
    return {split: out[split] for split in splits}


def read_with_missing(root: Path, data, splits: Sequence[str]) -> tuple[dict[str, ClipSet], dict[str, list[str]]]:
    """``({split: ClipSet}, {split: [clip ids without audio]})`` of an AudioSet copy."""
    from sedweak.datasets.registry import reader_options

    root, options = Path(root), reader_options(AudioSetOptions, data)
    names = read_class_indices(root / options.class_labels_csv)
    ontology_path = root / options.ontology_json
    ontology = read_ontology(ontology_path) if ontology_path.is_file() or options.include_descendants else {}
    mapping = label_map(options, list(data.classes), names, ontology, str(root))
    segments_by_split = _segments_by_split(root, options, splits, set(names) | set(ontology))
    index = index_audio(root / options.audio_dir)
    clips, missing = {}, {}
    for split, segments in segments_by_split.items():
        clips[split], missing[split] = _split_clips(split, segments, mapping, index, options.drop_unlabelled)
    return clips, missing


def listing_missing(clips_and_missing: tuple[dict, dict], root: Path) -> dict[str, ClipSet]:
    """The ClipSets of a ``read_with_missing``, after writing each split's missing-audio list."""
    clips, missing = clips_and_missing
    for split, names in missing.items():
        write_missing(root, split, names)
    return clips


def read(root: Path, data, splits: Sequence[str]) -> dict[str, ClipSet]:
    """Registry entry: weakly labelled AudioSet splits; clips without audio are listed and excluded."""
    return listing_missing(read_with_missing(root, data, splits), root)
