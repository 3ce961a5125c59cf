"""Query-by-example over an index (``sedweak search QUERY.wav --index INDEX -k 10``).

The query is embedded with the index's model (the ``.keras`` file whose SHA-256 the manifest
keeps), cut into windows as the indexed files were (the index's hop). A query longer than one
window gives several vectors, combined by ``query_windows``:

* ``mean`` (default): one query, the mean of its windows re-normalised (as ``sedweak embed``
  gives one vector per file): "sounds like this recording as a whole";
* ``each``: every query window searches; an indexed window's score is its best cosine over
  the query windows: "contains something like any part of this recording".

Scores are cosines (all vectors are unit length, so inner products). ``per_file`` keeps the
best window of each file, so one long file cannot fill the list.

Backends share one interface (``search(queries (q, dim), k) -> (scores (q, k), rows (q, k))``):

* ``exact``: numpy, blockwise matrix products and a running top-k (memory: one block);
* ``faiss``: faiss IVF-Flat, inner product (``ivf_lists`` k-means cells, ``ivf_probes`` of
  them searched per query);
* ``hnsw``: faiss's HNSW graph (``IndexHNSWFlat``; the hnswlib package has no binary wheel
  for this platform, faiss-cpu has);
* ``auto``: exact up to :data:`AUTO_EXACT_MAX_ROWS` rows (a few ms per query), faiss above.

An ANN structure is saved under ``INDEX/ann/`` keyed by the index's shards and the settings,
and rebuilt when the index changes (or in memory when INDEX is read-only).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from sedweak.collections.index_store import IndexData, IndexModelError, file_sha256
from sedweak.errors import UserError

BACKENDS = ("auto", "exact", "faiss", "hnsw")
QUERY_WINDOWS = ("mean", "each")
AUTO_EXACT_MAX_ROWS = 200_000
ANN_FOLDER = "ann"
_log = logging.getLogger(__name__)


class SearchBackendError(UserError, ValueError):
    """An unknown backend, or an ANN backend whose library is not installed."""


@dataclass(frozen=True)
class Match:
    """One search result: a window of an indexed file and its cosine with the query."""

    file: str              # key relative to the index's folder
    start_seconds: float
    end_seconds: float
    score: float           # cosine, in [-1, 1]


@dataclass(frozen=True)
class AnnSettings:
    """Approximate search settings (faiss)."""

    ivf_lists: int = 0              # k-means cells; 0: sqrt(rows) (1000 at 1 M), at most rows / 39
    ivf_probes: int = 64            # cells visited per query (recall@10 ~0.9 at 1024 lists, bench)
    hnsw_neighbours: int = 32       # graph degree (M)
    hnsw_ef_construction: int = 40
    hnsw_ef_search: int = 64


class Backend(Protocol):
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries (q, dim) float32 -> (scores (q, k'), rows (q, k')), best first, k' = min(k, N)."""


class ExactSearch:
    """Cosine top-k by blockwise matrix products: exact, no build, memory of one block."""

    def __init__(self, vectors: np.ndarray, block_rows: int = 65_536, query_block: int = 256):
        self.vectors = np.ascontiguousarray(vectors, np.float32)   # (N, dim)
        self.block_rows, self.query_block = block_rows, query_block

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.asarray(queries, np.float32)
        parts = [self._search_block(queries[i:i + self.query_block], k)
                 for i in range(0, len(queries), self.query_block)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _search_block(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self.vectors))
        best = np.full((len(queries), 0), -np.inf, np.float32)
        rows = np.zeros((len(queries), 0), np.int64)
        for start in range(0, len(self.vectors), self.block_rows):
            scores = queries @ self.vectors[start:start + self.block_rows].T     # (q, block)
            found = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
            if scores.shape[1] > k:   # the block's top k, then merged with the running top k
                found = np.argpartition(-scores, k - 1, axis=1)[:, :k]
                scores = np.take_along_axis(scores, found, 1)
            best, rows = np.concatenate([best, scores], axis=1), np.concatenate([rows, found + start], axis=1)
            if best.shape[1] > k:
                keep = np.argpartition(-best, k - 1, axis=1)[:, :k]
                best, rows = np.take_along_axis(best, keep, 1), np.take_along_axis(rows, keep, 1)
        order = np.argsort(-best, axis=1, kind="stable")
        return np.take_along_axis(best, order, 1), np.take_along_axis(rows, order, 1)


class FaissSearch:
    """A faiss index (inner product) behind the :class:`Backend` interface."""

    def __init__(self, index):
        self.index = index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.index.ntotal)
        scores, rows = self.index.search(np.ascontiguousarray(queries, np.float32), k)
        return scores, rows.astype(np.int64)   # -1 where the index found fewer than k


def _faiss():
    try:
        import faiss
    except ImportError:
        raise SearchBackendError("the faiss and hnsw backends need faiss-cpu (pip install faiss-cpu); "
                                 "use --backend exact") from None
    return faiss


def build_faiss(vectors: np.ndarray, kind: str, settings: AnnSettings = AnnSettings()):
    """A trained, filled faiss index of ``vectors`` (N, dim): ``kind`` ``faiss`` (IVF-Flat) or ``hnsw``."""
    faiss = _faiss()
    vectors = np.ascontiguousarray(vectors, np.float32)
    rows, dim = vectors.shape
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_neighbours, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.hnsw_ef_construction
        index.add(vectors)
        return with_search_settings(index, kind, settings)
    lists = settings.ivf_lists or int(np.sqrt(rows))   # few lists, many probed: recall over build speed
    lists = max(1, min(lists, rows // 39))   # faiss wants >= 39 training points per cell
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
    sample = vectors[np.random.default_rng(0).choice(rows, min(rows, 256 * lists), replace=False)]
    index.train(sample)
    index.add(vectors)
    return with_search_settings(index, kind, settings)


def with_search_settings(index, kind: str, settings: AnnSettings):
    """Set the query-time knobs (not all survive ``write_index``): HNSW efSearch, IVF nprobe."""
    if kind == "hnsw":
        index.hnsw.efSearch = settings.hnsw_ef_search
    else:
        index.nprobe = min(settings.ivf_probes, index.nlist)
    return index


def resolve_backend(name: str, rows: int) -> str:
    if name not in BACKENDS:
        raise SearchBackendError(f"unknown backend {name!r}; one of {', '.join(BACKENDS)}")
    if name != "auto":
        return name
    if rows <= AUTO_EXACT_MAX_ROWS:
        return "exact"
    try:
        _faiss()
    except SearchBackendError:
        return "exact"
    return "faiss"


def make_backend(index: IndexData, name: str = "auto", settings: AnnSettings = AnnSettings(),
                 index_dir: str | Path | None = None) -> tuple[str, Backend]:
    """(resolved name, backend) over ``index.vectors``; an ANN structure is cached under ``index_dir``."""
    name = resolve_backend(name, len(index))
    if name == "exact":
        return name, ExactSearch(index.vectors)
    if index_dir is None:
        return name, FaissSearch(build_faiss(index.vectors, name, settings))
    return name, FaissSearch(_cached_faiss(Path(index_dir), index, name, settings))


def _cached_faiss(index_dir: Path, index: IndexData, kind: str, settings: AnnSettings):
    """Read ``INDEX/ann/<kind>-<signature>.faiss`` or build and write it (old ones removed)."""
    from sedweak.io_utils import atomic_path

    faiss = _faiss()
    signature = hashlib.sha1(json.dumps([asdict(s) for s in index.manifest.shards] + [sorted(index.manifest.files),
                                         asdict(settings), len(index)]).encode()).hexdigest()[:16]
    path = index_dir / ANN_FOLDER / f"{kind}-{signature}.faiss"
    if path.is_file():
        try:
            return with_search_settings(faiss.read_index(str(path)), kind, settings)
        except RuntimeError as err:   # damaged cache: rebuild it
            _log.warning("%s: unreadable (%s); rebuilding", path, err)
    built = build_faiss(index.vectors, kind, settings)
    try:
        with atomic_path(path) as tmp:
            faiss.write_index(built, str(tmp))
        for old in path.parent.glob(f"{kind}-*.faiss"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError as err:   # a read-only index: search from memory
        _log.warning("%s: not cached (%s)", path, err)
    return built


def top_matches(index: IndexData, backend: Backend, queries: np.ndarray, k: int, per_file: bool = False
                ) -> list[Match]:
    """The ``k`` best rows for ``queries`` (q, dim): a row's score is its best over the queries;
    ``per_file``: one row per file (its best), fetching more candidates until ``k`` files are found."""
    if k < 1:
        raise UserError(f"k must be >= 1, got {k}")
    fetch = min(len(index), 4 * k if per_file else k)
    while True:
        scores, rows = backend.search(queries, fetch)
        best: dict[int, float] = {}
        for score, row in zip(scores.ravel(), rows.ravel()):
            if row >= 0 and score > best.get(int(row), -np.inf):
                best[int(row)] = float(score)
        ranked = sorted(best.items(), key=lambda item: (-item[1], item[0]))
        if per_file:
            ranked = _best_per_file(ranked, index.file_ids)
        if len(ranked) >= k or fetch >= len(index):
            break
        fetch = min(len(index), 2 * fetch)
    return [Match(index.files[index.file_ids[r]], float(index.start_seconds[r]), float(index.end_seconds[r]), s)
            for r, s in ranked[:k]]


def _best_per_file(ranked: list[tuple[int, float]], file_ids: np.ndarray) -> list[tuple[int, float]]:
    """The first (best) of each file's rows in ``ranked`` ((row, score), best first)."""
    seen, out = set(), []
    for row, score in ranked:
        if int(file_ids[row]) not in seen:
            seen.add(int(file_ids[row]))
            out.append((row, score))
    return out


def check_index_model(model_path: str | Path, index: IndexData) -> None:
    """:class:`IndexModelError` unless ``model_path`` is the file the index was built with (SHA-256)."""
    if file_sha256(model_path) != index.manifest.model.sha256:
        raise IndexModelError(f"{model_path}: not the model this index was built with "
                              f"({index.manifest.model.path}, sha256 {index.manifest.model.sha256[:12]}); "
                              "its vectors would not be comparable")


def embed_query(model, info, query_path: str | Path, hop_seconds: float, query_windows: str = "mean") -> np.ndarray:
    """Query vectors (q, dim), unit length: one (``mean``) or one per window (``each``)."""
    from sedweak.embeddings import extract

    if query_windows not in QUERY_WINDOWS:
        raise UserError(f"query_windows must be one of {', '.join(QUERY_WINDOWS)}, got {query_windows!r}")
    embeddings, failed = extract.embed_files(model, info, [(Path(query_path), Path(query_path).name)], hop_seconds)
    if failed:
        reason = failed[0][1]
        raise UserError(f"cannot embed the query: {reason}" if str(query_path) in reason
                        else f"cannot embed the query {query_path}: {reason}")
    vectors = embeddings.vectors
    if query_windows == "mean":
        mean = vectors.mean(axis=0, keepdims=True)
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
    return vectors


def matches_json(query_path: str | Path, index: IndexData, backend: str, k: int, per_file: bool,
                 query_windows: str, matches: list[Match]) -> dict:
    """The ``--json`` record: the query, the settings and the matches (file keys relative to ``root``)."""
    return {"query": str(query_path), "root": index.manifest.root, "model": index.manifest.model.path,
            "backend": backend, "k": k, "per_file": per_file, "query_windows": query_windows,
            "rows": len(index), "matches": [asdict(m) for m in matches]}
