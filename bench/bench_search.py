"""Search backends of ``sedweak search`` on synthetic embeddings: exact (numpy) vs faiss IVF and HNSW.

Data: ``--rows`` unit vectors of ``--dim`` (64: the CRNN's ``embedding_dim``) drawn around
``--clusters`` random unit centres (default 10 000: more than the IVF lists, so a cell holds
several clusters and cuts some; Gaussian noise of ``--spread`` per dimension, then
normalised: cosine to the centre ~0.78 at the default 0.1), so nearest neighbours are
meaningful and recall is not that of uniform noise. Queries are fresh points of the same
distribution. Ground truth is :class:`~sedweak.collections.search.ExactSearch`.

For each backend and setting: build seconds, index bytes (the vectors for exact, the
serialised faiss index otherwise), queries/s with all ``--queries`` in one call (batch) and
ms per query one at a time (as the CLI asks, first ``--single`` queries), recall@k against
exact search. The JSON also has the process's peak RSS.

    python bench/bench_search.py                  # 1 M x 64, 1000 queries (12 min on 2 busy cores)
    python bench/bench_search.py --backends faiss --ivf-probes 64,128 --out bench/results/search-ivf.json
    python bench/bench_search.py --rows 100000    # quicker

Prints a Markdown table and writes JSON to ``bench/results/search.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

from _common import versions, write_record  # bench/ is on sys.path when run as a script

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "search.json"


def unit_centres(clusters: int, dim: int, seed: int = 0) -> np.ndarray:
    centres = np.random.default_rng(seed).standard_normal((clusters, dim)).astype(np.float32)
    return centres / np.linalg.norm(centres, axis=1, keepdims=True)


def clustered_unit_vectors(rows: int, centres: np.ndarray, spread: float, seed: int) -> np.ndarray:
    """(rows, dim) float32 unit vectors around random ``centres`` (clusters, dim), built in chunks."""
    rng = np.random.default_rng(seed)
    out = np.empty((rows, centres.shape[1]), np.float32)
    for start in range(0, rows, 100_000):
        n = min(100_000, rows - start)
        chunk = centres[rng.integers(0, len(centres), n)] + spread * rng.standard_normal((n, centres.shape[1]),
                                                                                          dtype=np.float32)
        out[start:start + n] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def _timed_queries(backend, queries: np.ndarray, k: int, single: int) -> tuple[np.ndarray, float, float]:
    """(rows (q, k), batch queries/s, ms per query one at a time over the first ``single``)."""
    start = time.perf_counter()
    _, found = backend.search(queries, k)
    batch_qps = len(queries) / (time.perf_counter() - start)
    start = time.perf_counter()
    for query in queries[:single]:
        backend.search(query[None], k)
    return found, batch_qps, 1000 * (time.perf_counter() - start) / single


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / k (both (q, k) row ids)."""
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth)]))


def _row(backend: str, setting: str, build_seconds: float, index_bytes: int, timed, truth) -> dict:
    found, batch_qps, single_ms = timed
    return {"backend": backend, "setting": setting, "build_seconds": round(build_seconds, 2),
            "index_mb": round(index_bytes / 2**20, 1), "batch_queries_per_second": round(batch_qps, 1),
            "single_query_ms": round(single_ms, 3), "recall_at_k": round(recall_at_k(found, truth), 4)}


def run(args) -> list[dict]:
    import faiss

    from sedweak.collections.search import AnnSettings, ExactSearch, FaissSearch, build_faiss

    start = time.perf_counter()
    centres = unit_centres(args.clusters, args.dim)
    vectors = clustered_unit_vectors(args.rows, centres, args.spread, seed=1)
    queries = clustered_unit_vectors(args.queries, centres, args.spread, seed=2)   # not in the index
    print(f"data: {args.rows} x {args.dim} in {time.perf_counter() - start:.1f} s")
    exact = _timed_queries(ExactSearch(vectors), queries, args.k, args.single)
    truth, rows = exact[0], []
    rows.append(_row("exact", "numpy blocks of 65536", 0.0, vectors.nbytes, exact, truth))
    print(rows[-1])
    for kind, settings in (("faiss", AnnSettings(ivf_lists=args.ivf_lists)), ("hnsw", AnnSettings())):
        if kind not in args.backends:
            continue
        start = time.perf_counter()
        index = build_faiss(vectors, kind, settings)
        build_seconds, index_bytes = time.perf_counter() - start, len(faiss.serialize_index(index))
        for probe in (args.ivf_probes if kind == "faiss" else args.ef_search):
            if kind == "faiss":
                index.nprobe, setting = probe, f"IVF-Flat {index.nlist} lists, nprobe {probe}"
            else:
                index.hnsw.efSearch, setting = probe, f"HNSW M {settings.hnsw_neighbours}, efSearch {probe}"
            rows.append(_row(kind, setting, build_seconds, index_bytes,
                             _timed_queries(FaissSearch(index), queries, args.k, args.single), truth))
            print(rows[-1])
        del index
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=10_000)
    parser.add_argument("--spread", type=float, default=0.1, help="Noise per dimension around a centre.")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single", type=int, default=100, help="Queries timed one at a time.")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--ivf-lists", type=int, default=1024)
    parser.add_argument("--ivf-probes", type=lambda s: [int(v) for v in s.split(",")], default=[8, 16, 32])
    parser.add_argument("--ef-search", type=lambda s: [int(v) for v in s.split(",")], default=[32, 64, 128])
    parser.add_argument("--backends", type=lambda s: s.split(","), default=["faiss", "hnsw"],
                        help="ANN backends besides exact: the HNSW build is most of the run (~9 min of 12 at 1 M "
                             "on 2 busy cores); `--backends faiss` takes ~2 min.")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH)
    args = parser.parse_args()
    import faiss

    load_before = os.getloadavg()[0]
    rows = run(args)
    print(f"\n{args.rows} x {args.dim} unit vectors ({args.clusters} clusters), {args.queries} queries, "
          f"k={args.k}, {os.cpu_count()} CPUs, faiss {faiss.__version__}, "
          f"1-min load {load_before:.1f} before / {os.getloadavg()[0]:.1f} after\n")
    print("| backend | setting | build s | index MB | queries/s (batch) | ms/query (single) | recall@10 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['backend']} | {r['setting']} | {r['build_seconds']} | {r['index_mb']} | "
              f"{r['batch_queries_per_second']} | {r['single_query_ms']} | {r['recall_at_k']} |")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    write_record(args.out, {"bench": "search", "args": {k: v if not isinstance(v, Path) else str(v)
                                                          for k, v in vars(args).items()},
                            "rows": rows, "peak_rss_mb": round(peak_mb, 1), "cpu_count": os.cpu_count(),
                            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                            "machine": platform.platform(), "versions": {**versions(), "faiss": faiss.__version__}})


if __name__ == "__main__":
    main()
