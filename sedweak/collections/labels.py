"""Which class each file belongs to, and (optionally) its cross-validation fold.

Three sources, each read into a :class:`LabelTable` whose ``where`` names the file and row of
every entry, so later errors (an unknown file, too few examples) can point at it:

* a CSV with header ``file,label`` or ``file,label,fold`` (fold: a positive integer);
* an UrbanSound8K metadata CSV (``slice_file_name,fsID,start,end,salience,fold,classID,class``),
  parsed by :func:`sedweak.datasets.urbansound8k.read_metadata`;
* a folder of class-named subfolders (``dog/a.wav`` is a ``dog``), no folds.

:func:`match_files` pairs the table with the keys of embedded files (keys as ``sedweak embed``
writes them: a folder's files by their path relative to it): a row matches a key equal to its
``file``, else the one key with the same file name (so ``x.wav`` finds ``fold1/x.wav``).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

from sedweak.labels import LabelError

LABEL_COLUMNS = ("file", "label")
FOLD_COLUMN = "fold"


@dataclass(frozen=True)
class LabelTable:
    """Rows of (file, label[, fold]); ``where`` is ``path:line`` (or the path) of each row."""

    files: tuple[str, ...]
    labels: tuple[str, ...]
    folds: tuple[int, ...] | None
    where: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.files)


def read_label_csv(path: str | Path) -> LabelTable:
    """A ``file,label[,fold]`` CSV, or an UrbanSound8K metadata CSV (told apart by its header)."""
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"{path}: label file not found")
    try:
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as err:
        raise LabelError(f"{path}: not a readable CSV ({err})") from None
    header = [c.strip() for c in rows[0]] if rows else []
    if "slice_file_name" in header:
        return _read_urbansound8k(path)
    if header[:2] != list(LABEL_COLUMNS) or header[2:] not in ([], [FOLD_COLUMN]):
        raise LabelError(f"{path}:1: expected the header file,label or file,label,fold "
                         f"(or UrbanSound8K's metadata columns), got {','.join(header) or 'an empty file'}")
    files, labels, folds, where, seen = [], [], [], [], {}
    for line, cells in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in cells):
            continue
        here = f"{path}:{line}"
        if len(cells) != len(header):
            raise LabelError(f"{here}: expected {len(header)} columns ({','.join(header)}), got {len(cells)}")
        name, label = cells[0].strip(), cells[1].strip()
        if not name or not label:
            raise LabelError(f"{here}: empty {'file' if not name else 'label'}")
        if name in seen:
            raise LabelError(f"{here}: {name} is already listed on line {seen[name]}")
        seen[name] = line
        if len(header) == 3:
            folds.append(_fold(here, cells[2]))
        files.append(name)
        labels.append(label)
        where.append(here)
    if not files:
        raise LabelError(f"{path}: no labelled file (only a header)")
    return LabelTable(tuple(files), tuple(labels), tuple(folds) if len(header) == 3 else None, tuple(where),
                      str(path))


def _fold(where: str, cell: str) -> int:
    try:
        fold = int(cell.strip())
    except ValueError:
        raise LabelError(f"{where}: fold must be a positive integer, got {cell!r}") from None
    if fold < 1:
        raise LabelError(f"{where}: fold must be a positive integer, got {fold}")
    return fold


def _read_urbansound8k(path: Path) -> LabelTable:
    from sedweak.datasets.urbansound8k import read_metadata

    rows = read_metadata(path, None)
    if not rows:
        raise LabelError(f"{path}: no labelled file (only a header)")
    return LabelTable(tuple(r[0] for r in rows), tuple(r[3] for r in rows), tuple(r[1] for r in rows),
                      tuple(f"{path} ({r[0]})" for r in rows), str(path))


def read_label_folders(root: str | Path) -> LabelTable:
    """Audio under class-named subfolders of ``root``: ``<root>/<class>/**/<file>``; files are
    keyed by their path relative to ``root`` (as ``sedweak embed ROOT`` keys them)."""
    from sedweak_runtime.inputs import folder_audio

    root = Path(root)
    if not root.is_dir():
        raise LabelError(f"{root}: not a folder")
    keys = [p.relative_to(root).as_posix() for p in folder_audio(root)]
    if not keys:
        raise LabelError(f"{root}: no audio files in this folder or its subfolders")
    loose = [k for k in keys if "/" not in k]
    if loose:
        raise LabelError(f"{root}: {loose[0]} (and {len(loose) - 1} more) lie outside any class-named subfolder")
    return LabelTable(tuple(keys), tuple(k.split("/")[0] for k in keys), None,
                      tuple(str(root / k) for k in keys), str(root))


def read_labels(path: str | Path) -> LabelTable:
    """:func:`read_label_folders` for a folder, :func:`read_label_csv` for a file."""
    return read_label_folders(path) if Path(path).is_dir() else read_label_csv(path)


def match_files(table: LabelTable, keys: Sequence[str], skipped: Sequence[str] = ()
                ) -> tuple[list[int], list[int], list[str]]:
    """(table rows, matching indices into ``keys``, ``where`` of rows dropped) -- a row whose
    file is in ``skipped`` (keys of files that could not be read) is dropped and reported;
    a row matching nothing, or a name shared by several keys, is a :class:`LabelError`."""
    exact = {k: i for i, k in enumerate(keys)}
    by_name: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        by_name.setdefault(PurePosixPath(k).name, []).append(i)
    skipped_names = set(skipped) | {PurePosixPath(s).name for s in skipped}
    rows, indices, dropped = [], [], []
    for row, (name, where) in enumerate(zip(table.files, table.where)):
        if name in exact:
            rows.append(row)
            indices.append(exact[name])
            continue
        candidates = by_name.get(PurePosixPath(name).name, [])
        if len(candidates) == 1:
            rows.append(row)
            indices.append(candidates[0])
        elif name in skipped_names or PurePosixPath(name).name in skipped_names:
            dropped.append(where)
        elif candidates:
            raise LabelError(f"{where}: {name} matches {len(candidates)} files "
                             f"({', '.join(keys[i] for i in candidates[:3])}): give its path relative to the folder")
        else:
            raise LabelError(f"{where}: {name} is not among the {len(keys)} audio files given"
                             + (f" (e.g. {keys[0]})" if keys else ""))
    counts = Counter(indices)
    if len(counts) != len(indices):
        twice = next(keys[i] for i, n in counts.items() if n > 1)
        raise LabelError(f"{table.source}: {twice} is labelled by two rows")
    return rows, indices, dropped
