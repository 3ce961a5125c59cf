"""An incrementally updated index of per-window embeddings of a sound folder (``sedweak index``).

``sedweak index DIR --model M.keras --out INDEX [--hop SECONDS]`` embeds every audio file
under DIR window by window (:func:`sedweak.embeddings.extract.embed_files` with a hop): a
window of the model's clip length every ``hop_seconds``, each row with its file key (the
path relative to DIR) and start / end seconds. The default hop is half the clip window; a
file shorter than one window is one window padded with the silence floor, so it gets one row
(per file, as ``sedweak embed`` would give it).

Layout of INDEX (a folder)::

    manifest.json          model identity, hop, DIR, shards, files, failed files (JSON)
    shards/shard-NNNNNN.npz  vectors (n, dim) float32, file_index (n,) int32 into files (F,),
                           start_seconds, end_seconds (n,) float64

* **Resumable.** Files are embedded in order and written in shards (every
  ``files_per_shard`` files or ``rows_per_shard`` rows): a shard goes to a temporary name and
  is renamed, then the manifest listing it is written the same way. A killed build keeps
  every shard the manifest lists; a shard file it does not list (half written, or written
  just before the kill) is deleted on the next run and its files embedded again.
* **Incremental.** A file is embedded again when its size or modification time (ns) differ
  from the manifest's: ``stat`` costs nothing, while a content hash would read every file of
  the folder on every update (as much I/O as decoding it). An edit that keeps both (same
  size within one mtime tick) is missed, as ``make`` misses it; ``touch`` re-embeds a file.
  Files gone from DIR are dropped; files that failed are listed under ``failed`` with the
  reason and retried on every update. Rows of dropped or re-embedded files stay dead in
  their shard until it is less than half alive, then it is rewritten (compaction).
* **One model per index.** The manifest keeps the model's path, the SHA-256 of its
  ``.keras`` file, its feature settings, clip length, time pooling and embedding size; an
  update or a search with another model is refused (:class:`IndexModelError`), as is
  another hop or another folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
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
_log = logging.getLogger(__name__)


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
    size_bytes: int
    mtime_ns: int
    reason: str


@dataclass(frozen=True)
class ShardEntry:
    name: str         # file name under shards/
    rows: int         # all rows, dead ones included
    size_bytes: int   # of the .npz: a shard of another size is treated as lost


@dataclass(frozen=True)
class Manifest:
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
class IndexReport:
    """What one ``update_index`` did."""

    embedded: tuple[str, ...]               # keys embedded in this run
    unchanged: int                          # files kept from before
    removed: tuple[str, ...]                # keys dropped (gone from the folder)
    failed: tuple[tuple[str, str], ...]     # (key, reason), to be retried next time
    rows: int                               # live rows in the index
    shards: int


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


def update_index(audio_dir: str | Path, index_dir: str | Path, model_path: str | Path,
                 hop_seconds: float | None = None, *, model=None, info=None, files_per_shard: int = 256,
                 rows_per_shard: int = 20_000, progress: bool = False) -> IndexReport:
    """Build INDEX for the audio under ``audio_dir``, or bring it up to date (module docstring).

    ``model``/``info``: the loaded ``model_path`` (loaded here when None). A shard is written
    every ``files_per_shard`` files or ``rows_per_shard`` rows, whichever comes first."""
    from sedweak.embeddings.extract import embedding_function

    audio_dir, index_dir = Path(audio_dir), Path(index_dir)
    if hop_seconds is not None and not hop_seconds > 0:
        raise UserError(f"--hop must be > 0 seconds, got {hop_seconds}")
    items = folder_items(audio_dir)
    if model is None:
        from sedweak.models.saving import load_model

        model, info = load_model(model_path)
    run = embedding_function(model, str(model_path))   # EmbeddingModelError before any work
    dim = int(run(np.zeros((1, info.clip_frames, info.features.n_mels), np.float32)).shape[-1])
    identity = model_identity(model_path, info, dim)
    index_dir.mkdir(parents=True, exist_ok=True)
    with index_lock(index_dir):
        manifest = _open_manifest(index_dir, audio_dir, identity, hop_seconds, info)
        manifest = _drop_lost_shards(index_dir, manifest)
        _remove_orphans(index_dir, manifest)
        stats, unreadable = _stat_items(items)
        todo = [(key, path) for key, (path, size, mtime) in stats.items()
                if key not in manifest.files or (manifest.files[key].size_bytes, manifest.files[key].mtime_ns)
                != (size, mtime)]
        removed = sorted((set(manifest.files) | set(manifest.failed)) - set(stats) - set(unreadable))
        manifest = write_manifest(index_dir, dataclasses.replace(
            manifest, files={k: v for k, v in manifest.files.items() if k not in removed},
            failed={k: v for k, v in manifest.failed.items() if k not in removed}))
        manifest = _embed_in_shards(index_dir, manifest, model, info, todo, stats, unreadable,
                                    (files_per_shard, rows_per_shard), progress)
        manifest = _compact(index_dir, manifest)
    return IndexReport(tuple(k for k, _ in todo if k in manifest.files), len(stats) - len(todo), tuple(removed),
                       tuple((k, v.reason) for k, v in sorted(manifest.failed.items())),
                       sum(e.rows for e in manifest.files.values()), len(manifest.shards))


def folder_items(audio_dir: Path) -> list[tuple[Path, str]]:
    """(path, key) of the audio files under ``audio_dir``; :class:`DataError` for none."""
    from sedweak.inference import keyed_audio_files

    if not audio_dir.is_dir():
        raise DataError(f"{audio_dir}: not a folder (sedweak index takes one folder of audio files)")
    items = keyed_audio_files([audio_dir])
    if not items:
        raise DataError(f"{audio_dir}: no audio files in this folder")
    return items


def _open_manifest(index_dir: Path, audio_dir: Path, identity: ModelIdentity, hop_seconds: float | None,
                   info) -> Manifest:
    """The existing manifest, checked against this model, hop and folder; or a new one."""
    root = str(audio_dir.resolve())
    if not manifest_path(index_dir).exists():
        if any(p.name != LOCK_NAME for p in index_dir.iterdir()):
            raise IndexFileError(f"{index_dir}: not empty and not a sedweak index (no {MANIFEST_NAME}); "
                                 "give a new or empty folder as --out")
        hop = float(hop_seconds) if hop_seconds is not None else info.clip_seconds / 2
        window = info.clip_frames / info.features.frames_per_second
        return write_manifest(index_dir, Manifest(root, identity, hop, window))
    manifest = read_manifest(index_dir)
    check_same_model(manifest, identity, index_dir)
    if hop_seconds is not None and abs(hop_seconds - manifest.hop_seconds) > 1e-9:
        raise IndexModelError(f"{index_dir}: built with --hop {manifest.hop_seconds:g}, not {hop_seconds:g}; "
                              "omit --hop to update it, or build a new index with another --out")
    if manifest.root != root:
        raise IndexModelError(f"{index_dir}: an index of {manifest.root}, not {root}; "
                              "build a new index with another --out")
    return dataclasses.replace(manifest, model=identity)   # a moved model file keeps its new path


def _stat_items(items: Sequence[tuple[Path, str]]) -> tuple[dict, dict[str, FailedEntry]]:
    """({key: (path, size_bytes, mtime_ns)}, {key: FailedEntry} for files that cannot be stat'ed)."""
    stats, unreadable = {}, {}
    for path, key in items:
        try:
            st = os.stat(path)
        except OSError as err:
            unreadable[key] = FailedEntry(0, 0, f"{type(err).__name__}: {err}")
            continue
        stats[key] = (path, int(st.st_size), int(st.st_mtime_ns))
    return stats, unreadable


def _drop_lost_shards(index_dir: Path, manifest: Manifest) -> Manifest:
    """Shards missing or of another size than listed are forgotten: their files are embedded again."""
    lost = set()
    for entry in manifest.shards:
        path = index_dir / SHARD_FOLDER / entry.name
        if not path.is_file() or path.stat().st_size != entry.size_bytes:
            _log.warning("%s: missing or changed; its files will be embedded again", path)
            lost.add(entry.name)
    if not lost:
        return manifest
    return write_manifest(index_dir, dataclasses.replace(
        manifest, shards=tuple(s for s in manifest.shards if s.name not in lost),
        files={k: v for k, v in manifest.files.items() if v.shard not in lost}))


def _remove_orphans(index_dir: Path, manifest: Manifest) -> None:
    """Delete shard files the manifest does not list: written by a killed run, never read."""
    listed = {s.name for s in manifest.shards}
    for path in (index_dir / SHARD_FOLDER).glob("*") if (index_dir / SHARD_FOLDER).is_dir() else ():
        if path.name not in listed:
            path.unlink(missing_ok=True)


def _embed_in_shards(index_dir: Path, manifest: Manifest, model, info, todo: Sequence[tuple[str, Path]],
                     stats: dict, failed_now: dict[str, FailedEntry], shard_limits: tuple[int, int],
                     progress: bool) -> Manifest:
    """Embed ``todo`` ((key, path)) file by file; a shard (and the manifest) every so many files or rows."""
    from sedweak.embeddings import extract

    pending: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
    iterator = todo
    if progress:
        from tqdm import tqdm

        iterator = tqdm(todo, desc="index", unit="file")
    for key, path in iterator:
        embeddings, failed = extract.embed_files(model, info, [(path, key)], manifest.hop_seconds,
                                                 model_path=manifest.model.path)
        if failed:
            failed_now[key] = FailedEntry(*stats[key][1:], failed[0][1])
        else:
            pending.append((key, embeddings.vectors, embeddings.start_seconds, embeddings.end_seconds))
        if len(pending) >= shard_limits[0] or sum(len(p[1]) for p in pending) >= shard_limits[1]:
            manifest, pending, failed_now = _flush(index_dir, manifest, pending, stats, failed_now), [], {}
    return _flush(index_dir, manifest, pending, stats, failed_now) if pending or failed_now else manifest


def _flush(index_dir: Path, manifest: Manifest, pending: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
           stats: dict, failed_now: Mapping[str, FailedEntry]) -> Manifest:
    """Write ``pending`` as the next shard, then the manifest listing it and ``failed_now``."""
    files, failed = dict(manifest.files), dict(manifest.failed)
    shards, next_shard = manifest.shards, manifest.next_shard
    if pending:
        name = f"shard-{next_shard:06d}.npz"
        shards, next_shard = shards + (write_shard(index_dir, name, pending),), next_shard + 1
        now = time.time()
        for key, vectors, _, _ in pending:
            files[key] = FileEntry(stats[key][1], stats[key][2], name, int(len(vectors)), now)
            failed.pop(key, None)
        _log.info("%s: %d files, %d rows", name, len(pending), shards[-1].rows)
    for key, entry in failed_now.items():   # a file that now fails loses its old rows too
        failed[key] = entry
        files.pop(key, None)
    return write_manifest(index_dir, dataclasses.replace(manifest, shards=shards, files=files, failed=failed,
                                                         next_shard=next_shard))


def _compact(index_dir: Path, manifest: Manifest) -> Manifest:
    """Drop shards with no live row; rewrite those less than half alive; then delete the old files."""
    live: dict[str, int] = {}
    for entry in manifest.files.values():
        live[entry.shard] = live.get(entry.shard, 0) + entry.rows
    stale = [s for s in manifest.shards if 2 * live.get(s.name, 0) < s.rows]
    if not stale:
        return manifest
    files, next_shard = dict(manifest.files), manifest.next_shard
    shards = [s for s in manifest.shards if s not in stale]
    for shard in stale:
        if not live.get(shard.name):
            continue
        arrays, name = read_shard(index_dir, shard), f"shard-{next_shard:06d}.npz"
        rows = [(key, *(arrays[a][arrays["file_index"] == j] for a in ("vectors", "start_seconds", "end_seconds")))
                for j, key in enumerate(map(str, arrays["files"]))
                if key in files and files[key].shard == shard.name]
        shards.append(write_shard(index_dir, name, rows))
        next_shard += 1
        for key, *_ in rows:
            files[key] = dataclasses.replace(files[key], shard=name)
    manifest = write_manifest(index_dir, dataclasses.replace(manifest, shards=tuple(shards), files=files,
                                                             next_shard=next_shard))
    for shard in stale:
        (index_dir / SHARD_FOLDER / shard.name).unlink(missing_ok=True)
    return manifest
