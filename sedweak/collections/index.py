"""An incrementally updated index of per-window embeddings of a sound folder (``sedweak index``).

``sedweak index DIR --model M.keras --out INDEX [--hop SECONDS]`` embeds every audio file
under DIR window by window (:func:`sedweak.embeddings.extract.embed_files` with a hop): a
window of the model's clip length every ``hop_seconds``, each row with its file key (the
path relative to DIR) and start / end seconds. The default hop is half the clip window; a
file shorter than one window is one window padded with the silence floor, so it gets one row
(per file, as ``sedweak embed`` would give it).

The folder INDEX holds ``manifest.json`` and ``shards/*.npz``; the format, the lock and the
model identity are :mod:`sedweak.collections.index_store`, whose public names are also
importable from here.

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
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from sedweak.collections.index_store import (
    FORMAT,
    LOCK_NAME,
    MANIFEST_NAME,
    SHARD_FOLDER,
    FailedEntry,
    FileEntry,
    IndexBusyError,
    IndexData,
    IndexFileError,
    IndexModelError,
    Manifest,
    ModelIdentity,
    ShardEntry,
    check_same_model,
    file_sha256,
    index_lock,
    load_index,
    manifest_path,
    model_identity,
    read_manifest,
    read_shard,
    write_manifest,
    write_shard,
)
from sedweak.errors import DataError, UserError

__all__ = [   # the store's names are re-exported: callers import everything from here
    "FORMAT", "LOCK_NAME", "MANIFEST_NAME", "SHARD_FOLDER", "FailedEntry", "FileEntry", "IndexBusyError", "IndexData",
    "IndexFileError", "IndexModelError", "IndexReport", "Manifest", "ModelIdentity", "ShardEntry", "check_same_model",
    "file_sha256", "folder_items", "index_lock", "load_index", "manifest_path", "model_identity", "read_manifest",
    "read_shard", "update_index", "write_manifest", "write_shard",
]
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexReport:
    """What one ``update_index`` did."""

    embedded: tuple[str, ...]               # keys embedded in this run
    unchanged: int                          # files kept from before
    removed: tuple[str, ...]                # keys dropped (gone from the folder)
    failed: tuple[tuple[str, str], ...]     # (key, reason), to be retried next time
    rows: int                               # live rows in the index
    shards: int



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
