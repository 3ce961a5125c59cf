"""The one place where seconds meet frames: strong events <-> frame matrix <-> weak vector.

Conventions
-----------
* Strong labels are DESED TSVs: header ``filename<TAB>onset<TAB>offset<TAB>event_label``
  (seconds). A row with only a filename lists a clip that has no event.
* Weak labels are TSVs with header ``filename<TAB>event_labels`` (comma-separated).
* At ``frames_per_second`` = r, frame ``i`` covers ``[i / r, (i + 1) / r)`` seconds. The
  same functions serve the feature rate (100 fps) and any pooled model rate (e.g. 50 fps).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from sedweak.errors import UserError

STRONG_HEADER = ("filename", "onset", "offset", "event_label")
WEAK_HEADER = ("filename", "event_labels")


class LabelError(UserError, ValueError):
    """A malformed label file or an unknown label name."""


@dataclass(frozen=True, order=True)
class Event:
    """One sound event in one clip; times in seconds."""

    filename: str
    onset_seconds: float
    offset_seconds: float
    label: str


EventsByFile = dict[str, list[Event]]


# ----------------------------------------------------------------------------- TSV I/O


def read_tsv_rows(path: Path) -> list[list[str]]:
    """The rows of a UTF-8 TSV (a BOM is dropped); LabelError for a missing, non-text or empty file."""
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"{path}: label file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise LabelError(f"{path}: not UTF-8 text ({err})") from None
    rows = list(csv.reader(io.StringIO(text), delimiter="\t"))
    if not rows:
        raise LabelError(f"{path}: empty file (expected a header line)")
    return rows


def _check_label(path: Path, line: int, label: str, classes: Sequence[str] | None) -> None:
    if classes is not None and label not in classes:
        raise LabelError(f"{path}:{line}: unknown label {label!r}; known labels: {list(classes)}")


def read_strong_tsv(path: str | Path, classes: Sequence[str] | None = None) -> EventsByFile:
    """Read a DESED strong-label TSV into ``{filename: [Event, ...]}``.

    Files listed without an event map to an empty list. With ``classes`` given, a
    label outside it is an error naming the file and line.
    """
    path = Path(path)
    rows = read_tsv_rows(path)
    header = tuple(c.strip() for c in rows[0])
    if header[:4] != STRONG_HEADER:
        raise LabelError(f"{path}:1: expected header {'/'.join(STRONG_HEADER)} (tab-separated), got {list(header)}")
    out: EventsByFile = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        cells = [c.strip() for c in row] + [""] * (4 - len(row))
        filename, onset, offset, label = cells[:4]
        if not filename:
            raise LabelError(f"{path}:{line}: empty filename")
        events = out.setdefault(filename, [])
        if not onset and not offset and not label:
            continue  # a clip without events
        try:
            onset_s, offset_s = float(onset), float(offset)
        except ValueError:
            raise LabelError(f"{path}:{line}: onset/offset must be numbers, got {onset!r}, {offset!r}") from None
        if not (math.isfinite(onset_s) and math.isfinite(offset_s)) or onset_s < 0 or offset_s < onset_s:
            raise LabelError(f"{path}:{line}: need 0 <= onset <= offset, got {onset_s}, {offset_s}")
        if not label:
            raise LabelError(f"{path}:{line}: empty event_label")
        _check_label(path, line, label, classes)
        events.append(Event(filename, onset_s, offset_s, label))
    return out


def read_weak_tsv(path: str | Path, classes: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Read a weak-label TSV into ``{filename: [label, ...]}`` (empty list: no event)."""
    path = Path(path)
    rows = read_tsv_rows(path)
    header = tuple(c.strip() for c in rows[0])
    if header[:2] != WEAK_HEADER:
        raise LabelError(f"{path}:1: expected header {'/'.join(WEAK_HEADER)} (tab-separated), got {list(header)}")
    out: dict[str, list[str]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        filename = row[0].strip()
        if not filename:
            raise LabelError(f"{path}:{line}: empty filename")
        if len(row) > 2:
            raise LabelError(f"{path}:{line}: expected 2 columns, got {len(row)}")
        labels = [s.strip() for s in (row[1] if len(row) > 1 else "").split(",") if s.strip()]
        for label in labels:
            _check_label(path, line, label, classes)
        out[filename] = sorted(set(out.get(filename, [])) | set(labels))
    return out


def strong_tsv_text(events_by_file: Mapping[str, Iterable[Event]]) -> str:
    """DESED strong TSV text; a file without events gets a filename-only row."""
    lines = ["\t".join(STRONG_HEADER)]
    for filename in sorted(events_by_file):
        events = sorted(events_by_file[filename], key=lambda e: (e.onset_seconds, e.label))
        if not events:
            lines.append(f"{filename}\t\t\t")
        for e in events:
            lines.append(f"{filename}\t{e.onset_seconds:.3f}\t{e.offset_seconds:.3f}\t{e.label}")
    return "\n".join(lines) + "\n"


def weak_tsv_text(labels_by_file: Mapping[str, Iterable[str]]) -> str:
    lines = ["\t".join(WEAK_HEADER)]
    for filename in sorted(labels_by_file):
        lines.append(f"{filename}\t{','.join(sorted(set(labels_by_file[filename])))}")
    return "\n".join(lines) + "\n"


def write_strong_tsv(path: str | Path, events_by_file: Mapping[str, Iterable[Event]]) -> Path:
    from sedweak.io_utils import atomic_write_text

    return atomic_write_text(Path(path), strong_tsv_text(events_by_file))


def write_weak_tsv(path: str | Path, labels_by_file: Mapping[str, Iterable[str]]) -> Path:
    from sedweak.io_utils import atomic_write_text

    return atomic_write_text(Path(path), weak_tsv_text(labels_by_file))


def weak_from_strong(events_by_file: Mapping[str, Iterable[Event]]) -> dict[str, list[str]]:
    return {f: sorted({e.label for e in events}) for f, events in events_by_file.items()}


# ----------------------------------------------------------------------------- frames


def seconds_to_frame(seconds: float, frames_per_second: float) -> int:
    """Index of the frame that contains time ``seconds``."""
    return int(math.floor(seconds * frames_per_second + 1e-6))


def events_to_frames(events: Iterable[Event], classes: Sequence[str], num_frames: int,
                     frames_per_second: float) -> np.ndarray:
    """Strong events -> binary frame matrix of shape (num_frames, num_classes), float32.

    A frame is active when the event overlaps it; events past the end are clipped.
    """
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((num_frames, len(classes)), dtype=np.float32)
    for e in events:
        if e.label not in index:
            raise LabelError(f"{e.filename}: unknown label {e.label!r}; known labels: {list(classes)}")
        start = max(0, seconds_to_frame(e.onset_seconds, frames_per_second))
        stop = min(num_frames, int(math.ceil(e.offset_seconds * frames_per_second - 1e-6)))
        if stop > start:
            matrix[start:stop, index[e.label]] = 1.0
    return matrix


def frames_to_events(binary: np.ndarray, classes: Sequence[str], frames_per_second: float,
                     filename: str) -> list[Event]:
    """Binary frame matrix (frames, classes) -> events, one per run of active frames."""
    binary = np.asarray(binary).astype(bool)
    if binary.ndim != 2 or binary.shape[1] != len(classes):
        raise ValueError(f"expected (frames, {len(classes)}) matrix, got shape {binary.shape}")
    events = []
    padded = np.pad(binary, ((1, 1), (0, 0))).astype(np.int8)
    changes = np.diff(padded, axis=0)
    for k, label in enumerate(classes):
        starts = np.flatnonzero(changes[:, k] == 1)
        stops = np.flatnonzero(changes[:, k] == -1)
        for a, b in zip(starts, stops):
            events.append(Event(filename, round(a / frames_per_second, 6), round(b / frames_per_second, 6), label))
    return sorted(events, key=lambda e: (e.onset_seconds, e.label))


def weak_vector(labels: Iterable[str], classes: Sequence[str], where: str = "") -> np.ndarray:
    """Clip labels -> multi-hot vector (num_classes,), float32."""
    index = {c: i for i, c in enumerate(classes)}
    vector = np.zeros(len(classes), dtype=np.float32)
    for label in labels:
        if label not in index:
            raise LabelError(f"{where or 'labels'}: unknown label {label!r}; known labels: {list(classes)}")
        vector[index[label]] = 1.0
    return vector


def frames_to_weak(frames: np.ndarray) -> np.ndarray:
    """Frame matrix (frames, classes) -> clip vector (classes,): a class is present if any frame is."""
    return np.asarray(frames).max(axis=0)


def resample_frames(matrix: np.ndarray, pooling: int) -> np.ndarray:
    """Frame matrix at rate r -> rate r / pooling by max over each block (drops a ragged tail)."""
    frames = (matrix.shape[0] // pooling) * pooling
    return matrix[:frames].reshape(frames // pooling, pooling, *matrix.shape[1:]).max(axis=1)
