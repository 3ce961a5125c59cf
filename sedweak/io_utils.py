"""Small file-system helpers: atomic writes so a crash never leaves half a file."""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from sedweak.errors import OutputPathError


def default_file_mode() -> int:
    """The mode ``open()`` gives a new file under the process umask (e.g. 0o644). ``mkstemp``
    creates 0o600 files, which other users and containers could not read once renamed."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place (with the
    umask's normal mode, as a plain ``open()`` would create it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) for a writer that needs a file name
    (h5py, numpy): renamed onto ``path`` when the block ends, removed if it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """Replace non-finite floats by None: strict JSON has no inf/NaN (an error rate
    with no reference event and some detections is undefined -> ``null``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: Path, obj: Any) -> Path:
    """Strict JSON (non-finite floats as null), written atomically."""
    return atomic_write_text(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


def check_writable(path: str | Path, option: str = "--out") -> Path:
    """Fail now, before any work, if ``path`` could not be written later: a folder in its
    place, an existing file where a parent folder must go, or a folder we may not write in.
    Returns ``path``."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{option} {path}: is a folder, expected a file path")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputPathError(f"{option} {path}: {parent} is a file, so no folder can be made there")
    if not os.access(parent, os.W_OK):
        raise OutputPathError(f"{option} {path}: no permission to write in {parent}")
    return path


def check_writable_folder(path: str | Path, option: str) -> Path:
    """:func:`check_writable` for an output folder: a file in its place is the error."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{option} {path}: is a file, expected a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK):
            raise OutputPathError(f"{option} {path}: no permission to write in it")
        return path
    return check_writable(path, option)
