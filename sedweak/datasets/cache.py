"""Log-mel feature cache in HDF5: computed once, in parallel, resumable, checked against the config.

Build. Worker processes (``spawn``; ``num_workers``, 1 = in this process) featurise clips;
the parent alone writes them into ``.<name>.partial``, one row per clip of the split, in split
order, plus a status per row (pending / ok / failed + reason). The datasets are contiguous and
allocated when the file is created, so later writes change raw bytes only, never HDF5
metadata: a ``kill -9`` leaves a readable file. Rows are flushed before their status, so a
status that says "ok" always has its row on disk. Re-running resumes: only pending rows are
computed. When no row is pending the partial is renamed to the cache path (atomic).

Identity. The file records the feature config + clip length (``signature``: another one is
refused with :class:`CacheError`, for the cache and the partial alike) and the audio's names,
sizes and modification times (``content``: a change means rebuild). Clips that fail to load are
skipped and listed (``CacheResult.failed``) so a long run reports them instead of dying.

Read. A split whose features fit in ``in_memory_max_mb`` is loaded (a NumPy array, as before);
a larger one is an :class:`H5Features`, an array-like that reads the rows asked for, so
training streams batches from the file instead of holding the split in memory.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import h5py
import numpy as np

from sedweak.audio import AudioError, fit_length, load_audio
from sedweak.config import FeatureConfig
from sedweak.errors import UserError

log = logging.getLogger(__name__)
FORMAT = 2
PENDING, OK, FAILED = 0, 1, 2
REASON_BYTES = 240


class CacheError(UserError, RuntimeError):
    """A cache built with a different configuration, unreadable, or being built by another process."""


class H5Features:
    """Rows ``rows`` of a cache file's ``logmel``: a read-only (clips, frames, n_mels) float32 array-like.

    Indexing with an int, a slice or an integer array reads just those rows (any order,
    repeats allowed). Iteration reads blocks of 64 rows. Picklable: the file handle is
    reopened lazily in each process.
    """

    dtype = np.dtype(np.float32)
    ndim = 3

    def __init__(self, path: Path, rows: np.ndarray, row_shape: tuple[int, int]):
        self.path, self.rows, self.row_shape = Path(path), np.asarray(rows, np.int64), tuple(row_shape)
        self._file = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.rows), *self.row_shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return len(self.rows)

    def _dataset(self) -> h5py.Dataset:
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return self._file["logmel"]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self._dataset()[self.rows[key]]
        if isinstance(key, tuple):
            raise TypeError("H5Features takes one index (clips); slice the returned array further")
        wanted = self.rows[key] if isinstance(key, slice) else self.rows[np.asarray(key, np.int64)]
        if len(wanted) == 0:
            return np.zeros((0, *self.row_shape), np.float32)
        unique, inverse = np.unique(wanted, return_inverse=True)
        if unique[-1] - unique[0] + 1 == len(unique):  # one contiguous read beats a point selection
            block = self._dataset()[unique[0]:unique[-1] + 1]
        else:
            block = self._dataset()[unique]
        return block[inverse]

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self), 64):
            yield from self[start:start + 64]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None}

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass(frozen=True)
class CacheResult:
    features: np.ndarray | H5Features  # (clips, frames, n_mels) float32, for the clips in ``filenames``
    filenames: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]  # (filename, reason)
    path: Path | None = None  # the cache file behind ``features``
    computed: int = 0  # clips featurised by the call that returned this (0: all read back)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.features, np.ndarray)

    def load(self) -> "CacheResult":
        """The same result with every feature in memory (a NumPy array)."""
        return self if self.in_memory else replace(self, features=np.asarray(self.features))


def cache_signature(config: FeatureConfig, clip_seconds: float) -> str:
    return json.dumps({"features": asdict(config), "clip_seconds": clip_seconds}, sort_keys=True)


def _content_key(paths: Sequence[Path]) -> str:
    """Identity of the audio behind a cache: names, sizes and modification times."""
    import hashlib

    digest = hashlib.sha1()
    for path in paths:
        stat = Path(path).stat() if Path(path).exists() else None
        digest.update(f"{Path(path).name}:{stat.st_size if stat else -1}:{stat.st_mtime_ns if stat else -1}\n".encode())
    return digest.hexdigest()


def resolve_workers(num_workers: int) -> int:
    """``cache.num_workers``: 0 means min(4, cpu_count)."""
    return num_workers if num_workers > 0 else min(4, os.cpu_count() or 1)


# ----------------------------------------------------------------------------- featurising


def featurise_clip(path: Path, config: FeatureConfig, clip_seconds: float) -> np.ndarray:
    """(frames, n_mels) float32 log-mel of ``path`` padded/cut to ``clip_seconds``; raises AudioError."""
    from sedweak.features import logmel_librosa

    num_samples = int(round(clip_seconds * config.sample_rate_hz))
    waveform = fit_length(load_audio(path, config.sample_rate_hz), num_samples)
    return logmel_librosa(waveform, config).astype(np.float32)


def _featurise_task(index: int, path: str, config: FeatureConfig, clip_seconds: float):
    """Worker entry point: (index, features or None, failure reason or None)."""
    try:
        return index, featurise_clip(Path(path), config, clip_seconds), None
    except AudioError as err:
        return index, None, str(err)


def iter_featurised(paths: Sequence[Path], todo: Sequence[int], config: FeatureConfig, clip_seconds: float,
                    num_workers: int = 1) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
    """Featurise ``paths[i] for i in todo``; yields (i, features, reason) in completion order.

    ``num_workers`` <= 1 runs here; more start ``spawn`` worker processes (no fork: the
    parent may hold TensorFlow threads), with at most 2 clips in flight per worker.
    """
    if num_workers <= 1:
        for i in todo:
            yield _featurise_task(i, str(paths[i]), config, clip_seconds)
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from itertools import islice

    queue = iter(todo)
    with ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = {pool.submit(_featurise_task, i, str(paths[i]), config, clip_seconds)
                   for i in islice(queue, 2 * num_workers)}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            pending |= {pool.submit(_featurise_task, i, str(paths[i]), config, clip_seconds)
                        for i in islice(queue, len(done))}
            for future in done:
                yield future.result()


def compute_logmels(paths: Sequence[Path], config: FeatureConfig, clip_seconds: float,
                    progress: bool = False) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """In memory, one process, no cache: (features (ok_clips, frames, n_mels), ok indices, failures)."""
    out, ok, failed = [], [], []
    iterator = iter_featurised(paths, range(len(paths)), config, clip_seconds)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=len(paths), desc="log-mel", unit="clip")
    for i, features, reason in iterator:
        if features is None:
            failed.append((Path(paths[i]).name, reason))
        else:
            out.append(features)
            ok.append(i)
    frames = config.num_frames(int(round(clip_seconds * config.sample_rate_hz)))
    array = np.stack(out) if out else np.zeros((0, frames, config.n_mels), np.float32)
    return array.astype(np.float32), ok, failed


# ----------------------------------------------------------------------------- building


def partial_path(cache_path: Path) -> Path:
    return Path(cache_path).with_name(f".{Path(cache_path).name}.partial")


def _create_partial(path: Path, signature: str, content: str, filenames: Sequence[str],
                    row_shape: tuple[int, int]) -> h5py.File:
    """A new partial file: every dataset contiguous and allocated now (see the module docstring)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h5 = h5py.File(path, "w")
    h5.attrs.update(signature=signature, content=content, format=FORMAT)
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)  # sparse until written; status says what is valid
    h5.create_dataset("logmel", shape=(len(filenames), *row_shape), dtype="f4", dcpl=dcpl)
    h5.create_dataset("status", data=np.full(len(filenames), PENDING, np.uint8))
    h5.create_dataset("reason", data=np.zeros(len(filenames), f"S{REASON_BYTES}"))
    h5.create_dataset("filenames", data=np.array([n.encode() for n in filenames], dtype="S"))
    h5.flush()
    return h5


def _open_partial(path: Path, signature: str, content: str, filenames: Sequence[str],
                  row_shape: tuple[int, int]) -> h5py.File:
    """The partial left by an interrupted build of the same clips, else a new one."""
    if path.is_file():
        try:
            h5 = h5py.File(path, "r+")
        except OSError as err:
            if "lock" in str(err).lower():
                raise CacheError(f"{path}: being written by another process") from None
            log.warning("%s: unreadable partial cache (%s); starting again", path, err)
        else:
            if h5.attrs.get("signature") != signature:
                stored = h5.attrs.get("signature")
                h5.close()
                raise CacheError(f"{path}: partial cache of another feature config or clip length; delete "
                                 f"it or use another workdir.\n  partial: {stored}\n  now:     {signature}")
            names = tuple(n.decode() for n in h5["filenames"][:])
            if (h5.attrs.get("content") == content and names == tuple(filenames)
                    and h5["logmel"].shape[1:] == row_shape):
                return h5
            h5.close()
            log.info("%s: partial cache of other audio; starting again", path)
    return _create_partial(path, signature, content, filenames, row_shape)


def _commit(h5: h5py.File, finished: list[tuple[int, np.ndarray | None, str | None]]) -> None:
    """Write finished clips: rows first and flushed, then their status (crash ordering)."""
    for i, features, _ in finished:
        if features is not None:
            h5["logmel"][i] = features
    h5.flush()
    for i, features, reason in finished:
        if features is None:
            h5["reason"][i] = reason.encode()[:REASON_BYTES]
        h5["status"][i] = OK if features is not None else FAILED
    h5.flush()


def build_cache(cache_path: Path, paths: Sequence[Path], filenames: Sequence[str], config: FeatureConfig,
                clip_seconds: float, num_workers: int = 1, progress: bool = False,
                flush_every_clips: int = 1, min_clips_per_worker: int = 16) -> int:
    """Compute the pending clips into the partial file, then rename it to ``cache_path``.

    Starting a worker costs about a second of imports, so at most one worker per
    ``min_clips_per_worker`` pending clips is started (a few clips run here).
    Returns the number of clips featurised by this call (those a previous, interrupted
    call finished are not computed again).
    """
    cache_path, partial = Path(cache_path), partial_path(cache_path)
    row_shape = (config.num_frames(int(round(clip_seconds * config.sample_rate_hz))), config.n_mels)
    h5 = _open_partial(partial, cache_signature(config, clip_seconds), _content_key(paths), filenames, row_shape)
    try:
        todo = np.flatnonzero(h5["status"][:] == PENDING).tolist()
        if len(todo) < len(filenames):
            log.info("%s: resuming, %d of %d clips already done", partial, len(filenames) - len(todo), len(filenames))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(filenames), initial=len(filenames) - len(todo), desc="log-mel", unit="clip")
        finished = []
        workers = max(1, min(num_workers, len(todo) // max(1, min_clips_per_worker)))
        for item in iter_featurised(paths, todo, config, clip_seconds, workers):
            finished.append(item)
            if bar is not None:
                bar.update()
            if len(finished) >= flush_every_clips:
                _commit(h5, finished)
                finished = []
        _commit(h5, finished)
        if bar is not None:
            bar.close()
    finally:
        h5.close()
    os.replace(partial, cache_path)
    return len(todo)


# ----------------------------------------------------------------------------- reading


def _read(cache_path: Path, signature: str, filenames: Sequence[str],
          in_memory_max_mb: float | None) -> tuple[CacheResult, str] | None:
    """The cached result and its content key; None when it is of another clip list or format."""
    try:
        with h5py.File(cache_path, "r") as h5:
            stored = h5.attrs["signature"]
            if stored != signature:
                raise CacheError(f"{cache_path}: built with another feature config or clip length; "
                                 f"delete it or use another workdir.\n  cache: {stored}\n  now:   {signature}")
            if h5.attrs.get("format") != FORMAT or set(filenames) != {n.decode() for n in h5["filenames"][:]}:
                return None
            names = [n.decode() for n in h5["filenames"][:]]
            status, reasons = h5["status"][:], h5["reason"][:]
            content, row_shape = str(h5.attrs["content"]), h5["logmel"].shape[1:]
            ok = np.flatnonzero(status == OK)
            size_mb = len(ok) * int(np.prod(row_shape)) * 4 / 2 ** 20
            features = None
            if in_memory_max_mb is None or size_mb <= in_memory_max_mb:
                features = h5["logmel"][:] if len(ok) == len(names) else np.zeros((0, *row_shape), np.float32)
                if 0 < len(ok) < len(names):
                    features = h5["logmel"][ok]
    except (OSError, KeyError) as err:
        raise CacheError(f"{cache_path}: unreadable feature cache ({err}); delete it to rebuild") from None
    if np.any(status == PENDING):
        return None
    if features is None:
        features = H5Features(cache_path, ok, row_shape)
    failed = tuple((names[i], reasons[i].decode(errors="replace")) for i in np.flatnonzero(status == FAILED))
    return CacheResult(features, tuple(names[i] for i in ok), failed, Path(cache_path)), content


def cached_logmels(cache_path: Path, paths: Sequence[Path], filenames: Sequence[str],
                   config: FeatureConfig, clip_seconds: float, progress: bool = False, num_workers: int = 1,
                   in_memory_max_mb: float | None = None, flush_every_clips: int = 1) -> CacheResult:
    """Features for ``paths`` (named ``filenames``), from ``cache_path`` when valid, else built there.

    ``num_workers``: feature processes (0: min(4, cpu_count)). ``in_memory_max_mb``: load the
    features when they fit, else return an :class:`H5Features` (None: always load).
    """
    cache_path = Path(cache_path)
    signature = cache_signature(config, clip_seconds)
    if cache_path.is_file():
        cached = _read(cache_path, signature, filenames, in_memory_max_mb)
        if cached is not None and cached[1] == _content_key(paths):
            return cached[0]
    # Missing, or stale (the audio changed, e.g. re-synthesized): (re)compute, resuming a partial.
    computed = build_cache(cache_path, paths, filenames, config, clip_seconds, resolve_workers(num_workers),
                           progress, flush_every_clips)
    result, _ = _read(cache_path, signature, filenames, in_memory_max_mb)
    return replace(result, computed=computed)
