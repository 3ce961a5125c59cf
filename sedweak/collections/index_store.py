"""The on-disk store behind :mod:`sedweak.collections.index`: manifest, shards, lock, model identity.

Layout of INDEX (a folder)::

    manifest.json          model identity, hop, DIR, shards, files, failed files (JSON)
    shards/shard-NNNNNN.npz  vectors (n, dim) float32, file_index (n,) int32 into files (F,),
                           start_seconds, end_seconds (n,) float64
    .lock                  pid of the process updating the index (only while it runs)

Shards and the manifest are written to a temporary name and renamed, so a reader sees the
old file or the new one, never half of one. A file's live rows are in the shard its manifest
entry names; its rows in any other shard are dead (:func:`load_index` skips them).

The manifest keeps the model's path, the SHA-256 of its ``.keras`` file, its feature
settings, clip length, time pooling and embedding size (:class:`ModelIdentity`): vectors of
another model are refused (:func:`check_same_model`, :class:`IndexModelError`).

How the store is filled and kept up to date (which files, resume, compaction) is
:mod:`sedweak.collections.index`; search reads it through :func:`load_index`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from sedweak.errors import DataError, UserError

FORMAT = "sedweak-index-1"
MANIFEST_NAME = "manifest.json"
SHARD_FOLDER = "shards"
LOCK_NAME = ".lock"


class IndexFileError(DataError):
    """An index folder that is missing, or whose manifest or shards are unreadable."""


class IndexModelError(UserError, ValueError):
    """A model, hop or folder other than the ones an index was built with."""


class IndexBusyError(UserError, RuntimeError):
    """Another live process is updating the index."""


@dataclass(frozen=True)
class ModelIdentity:
    """What makes two models' vectors comparable: the same weights and the same front end."""

    path: str                # absolute path when indexed (informative: a moved model still matches)
    sha256: str              # of the .keras file
    features: Mapping        # FeatureConfig as a dict
    clip_seconds: float
    time_pooling: int
    embedding_dim: int

    def differences(self, other: "ModelIdentity") -> list[str]:
        """Names of the fields (path aside) that differ."""
        return [f.name for f in dataclasses.fields(self)
                if f.name != "path" and getattr(self, f.name) != getattr(other, f.name)]


@dataclass(frozen=True)
class FileEntry:
    """An embedded file: its stat when embedded and where its rows are."""

    size_bytes: int
    mtime_ns: int
    shard: str
    rows: int
    embedded_unix_seconds: float


@dataclass(frozen=True)
class FailedEntry:
    """A file that could not be stat'ed or embedded: its stat then, and why (retried on every update)."""

    size_bytes: int
    mtime_ns: int
    reason: str


@dataclass(frozen=True)
class ShardEntry:
    """A shard listed in the manifest."""

    name: str         # file name under shards/
    rows: int         # all rows, dead ones included
    size_bytes: int   # of the .npz: a shard of another size is treated as lost


@dataclass(frozen=True)
class Manifest:
    """The contents of ``manifest.json`` (:data:`FORMAT`); ``files`` and ``failed`` keyed by path relative to ``root``."""

    root: str                              # the indexed folder (absolute)
    model: ModelIdentity
    hop_seconds: float
    window_seconds: float
    shards: tuple[ShardEntry, ...] = ()
    files: Mapping[str, FileEntry] = dataclasses.field(default_factory=dict)
    failed: Mapping[str, FailedEntry] = dataclasses.field(default_factory=dict)
    next_shard: int = 0
    updated_unix_seconds: float = 0.0

    def to_json(self) -> dict:
        return {"format": FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: dict) -> "Manifest":
        return cls(root=str(data["root"]), model=ModelIdentity(**data["model"]),
                   hop_seconds=float(data["hop_seconds"]), window_seconds=float(data["window_seconds"]),
                   shards=tuple(ShardEntry(**s) for s in data["shards"]),
                   files={k: FileEntry(**v) for k, v in data["files"].items()},
                   failed={k: FailedEntry(**v) for k, v in data["failed"].items()},
                   next_shard=int(data["next_shard"]), updated_unix_seconds=float(data["updated_unix_seconds"]))


@dataclass(frozen=True)
class IndexData:
    """The live rows of an index, in manifest order (shard by shard)."""

    manifest: Manifest
    vectors: np.ndarray        # (N, dim) float32, unit length
    file_ids: np.ndarray       # (N,) int32 into files
    files: tuple[str, ...]     # (F,) keys relative to manifest.root
    start_seconds: np.ndarray  # (N,) float64
    end_seconds: np.ndarray    # (N,) float64

    def __len__(self) -> int:
        return len(self.vectors)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_identity(model_path: str | Path, info, embedding_dim: int) -> ModelIdentity:
    """The :class:`ModelIdentity` of a ``.keras`` file and its ModelInfo."""
    return ModelIdentity(str(Path(model_path).resolve()), file_sha256(model_path), dataclasses.asdict(info.features),
                         float(info.clip_seconds), int(info.time_pooling), int(embedding_dim))


def check_same_model(manifest: Manifest, identity: ModelIdentity, index_dir: Path) -> None:
    """:class:`IndexModelError` unless ``identity`` is the model the index was built with."""
    changed = manifest.model.differences(identity)
    if changed:
        raise IndexModelError(
            f"{index_dir}: built with {manifest.model.path} (sha256 {manifest.model.sha256[:12]}); "
            f"{identity.path} differs in {', '.join(changed)}: its vectors cannot be mixed with the index's. "
            f"Give that model, or build a new index with another --out")


def manifest_path(index_dir: str | Path) -> Path:
    return Path(index_dir) / MANIFEST_NAME


def read_manifest(index_dir: str | Path) -> Manifest:
    """The index's manifest; :class:`IndexFileError` naming the folder or file and the problem."""
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise IndexFileError(f"{index_dir}: no such index folder "
                             f"(build one with `sedweak index DIR --model M --out {index_dir}`)")
    path = manifest_path(index_dir)
    if not path.is_file():
        raise IndexFileError(f"{index_dir}: not a sedweak index (no {MANIFEST_NAME})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
        return Manifest.from_json(data)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise IndexFileError(f"{path}: corrupt index manifest ({type(err).__name__}: {err}); "
                             "delete the folder and build the index again") from None


def write_manifest(index_dir: Path, manifest: Manifest) -> Manifest:
    """Write atomically, stamped with the time; returns the stamped manifest."""
    from sedweak.io_utils import atomic_write_json

    manifest = dataclasses.replace(manifest, updated_unix_seconds=time.time())
    atomic_write_json(manifest_path(index_dir), manifest.to_json())
    return manifest


@contextmanager
def index_lock(index_dir: Path) -> Iterator[None]:
    """``INDEX/.lock`` holding our pid while we write; a lock whose process is gone is stale."""
    lock = index_dir / LOCK_NAME
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            pid = _lock_owner(lock)
            if pid is not None and pid != os.getpid() and _alive(pid):
                raise IndexBusyError(f"{index_dir}: being updated by process {pid} (remove {lock} if it is not)")
            lock.unlink(missing_ok=True)
    else:
        raise IndexBusyError(f"{index_dir}: could not take {lock}")
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _lock_owner(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_shard(index_dir: Path, name: str, rows: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]]
                ) -> ShardEntry:
    """One shard of ``rows`` ((key, vectors (n, dim), start_seconds (n,), end_seconds (n,)) per
    file), written to a temporary name and renamed."""
    from sedweak.io_utils import atomic_path

    path = index_dir / SHARD_FOLDER / name
    keys = np.array([key for key, *_ in rows], dtype=str)
    file_index = np.concatenate([np.full(len(v), i, np.int32) for i, (_, v, _, _) in enumerate(rows)])
    with atomic_path(path) as tmp:
        np.savez(tmp, vectors=np.concatenate([v for _, v, _, _ in rows]).astype(np.float32), files=keys,
                 file_index=file_index, start_seconds=np.concatenate([s for _, _, s, _ in rows]).astype(np.float64),
                 end_seconds=np.concatenate([e for *_, e in rows]).astype(np.float64))
    return ShardEntry(name, int(len(file_index)), path.stat().st_size)


def read_shard(index_dir: Path, entry: ShardEntry) -> dict[str, np.ndarray]:
    """A listed shard's arrays; :class:`IndexFileError` naming it if missing or unreadable."""
    path = index_dir / SHARD_FOLDER / entry.name
    again = "rerun `sedweak index` on the folder to embed its files again"
    if not path.is_file():
        raise IndexFileError(f"{path}: listed in {MANIFEST_NAME} but missing; {again}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("vectors", "files", "file_index", "start_seconds", "end_seconds")}
    except Exception as err:  # zip, pickle or key errors: all mean a damaged shard
        raise IndexFileError(f"{path}: unreadable index shard ({type(err).__name__}: {err}); {again}") from None
    n = len(arrays["file_index"])
    if n != entry.rows or arrays["vectors"].shape[0] != n or len(arrays["start_seconds"]) != n:
        raise IndexFileError(f"{path}: {arrays['vectors'].shape[0]} vectors, {n} rows, manifest says {entry.rows}; "
                             f"{again}")
    return arrays


def load_index(index_dir: str | Path) -> IndexData:
    """The live rows of every shard (rows of files the manifest points elsewhere are dead)."""
    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    keys: list[str] = []
    parts = []
    for entry in manifest.shards:
        arrays = read_shard(index_dir, entry)
        local = np.full(len(arrays["files"]), -1, np.int32)   # shard's file -> global id, -1: dead
        for j, key in enumerate(map(str, arrays["files"])):
            if key in manifest.files and manifest.files[key].shard == entry.name:
                local[j] = len(keys)
                keys.append(key)
        rows = local[arrays["file_index"]]
        keep = rows >= 0
        parts.append((arrays["vectors"][keep], rows[keep], arrays["start_seconds"][keep], arrays["end_seconds"][keep]))
    dim = manifest.model.embedding_dim
    return IndexData(manifest, np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, dim), np.float32),
                     np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int32), tuple(keys),
                     np.concatenate([p[2] for p in parts]) if parts else np.zeros(0),
                     np.concatenate([p[3] for p in parts]) if parts else np.zeros(0))
