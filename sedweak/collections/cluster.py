"""Organise a sound library by similarity: cluster one vector per file.

:func:`cluster_vectors` runs k-means or Ward agglomerative clustering on (N, dim) vectors
prepared for Euclidean distances (:meth:`FileVectors.for_distances`: unit-length embeddings,
or z-scored MFCC statistics). With ``clusters=None`` (``-k auto``) k is the one with the
highest mean silhouette over 2..min(``max_auto_clusters``, N - 1) (the silhouette needs at
least two clusters and one file more than clusters).

Each cluster's representatives are its files closest to its centroid (the mean of its
members, for either method). :func:`write_cluster_report` writes ``clusters.md``,
``clusters.json``, ``clusters.csv`` (file, cluster) and ``map.png`` (t-SNE, coloured by
cluster), each atomically.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from sedweak.collections.vectors import single_threaded
from sedweak.errors import DataError

METHODS = ("kmeans", "agglomerative")


@dataclass(frozen=True)
class ClusterSettings:
    """What :func:`cluster_vectors` runs."""

    method: str = "kmeans"
    clusters: int | None = None     # None: chosen by silhouette
    max_auto_clusters: int = 20
    representatives_per_cluster: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.clusters is not None and self.clusters < 1:
            raise ValueError(f"the number of clusters must be >= 1, got {self.clusters}")
        if self.max_auto_clusters < 2 or self.representatives_per_cluster < 1:
            raise ValueError("need max_auto_clusters >= 2 and representatives_per_cluster >= 1")


@dataclass(frozen=True)
class Clustering:
    """``assignments`` (N,) cluster of each file, numbered by decreasing size; ``distances``
    (N,) Euclidean distance of each file to its cluster's centroid; ``silhouettes``: mean
    silhouette of each k tried (``-k auto``) or of the k given (None for k = 1)."""

    assignments: np.ndarray
    distances: np.ndarray
    clusters: int
    silhouettes: dict[int, float | None]
    settings: ClusterSettings


def assign(x: np.ndarray, k: int, method: str, seed: int) -> np.ndarray:
    """(N,) cluster ids in 0..k-1 of ``x`` (N, dim)."""
    from sklearn.cluster import AgglomerativeClustering, KMeans

    if k == 1:
        return np.zeros(len(x), int)
    if method == "kmeans":
        return KMeans(k, n_init=10, random_state=seed).fit_predict(x)
    return AgglomerativeClustering(k, linkage="ward").fit_predict(x)


def silhouette(x: np.ndarray, assignments: np.ndarray) -> float | None:
    """Mean silhouette (Euclidean), None when it is undefined (one cluster, or one per file)."""
    from sklearn.metrics import silhouette_score

    found = len(np.unique(assignments))
    return float(silhouette_score(x, assignments)) if 2 <= found <= len(x) - 1 else None


def choose_k(x: np.ndarray, settings: ClusterSettings) -> tuple[int, dict[int, float | None]]:
    """(k with the best silhouette, {k: silhouette}) over 2..min(max_auto_clusters, N - 1)."""
    top = min(settings.max_auto_clusters, len(x) - 1)
    if top < 2:
        raise DataError(f"choosing k needs at least 3 files, got {len(x)}: give -k")
    scores = {k: silhouette(x, assign(x, k, settings.method, settings.seed)) for k in range(2, top + 1)}
    defined = {k: s for k, s in scores.items() if s is not None}
    if not defined:
        raise DataError(f"no k in 2..{top} gives a defined silhouette ({len(x)} files, many identical?): give -k")
    return max(defined, key=lambda k: (defined[k], -k)), scores


def _by_size(assignments: np.ndarray) -> np.ndarray:
    """Renumber clusters 0.. by decreasing size (ties: first file first), for stable reports."""
    ids, first, counts = np.unique(assignments, return_index=True, return_counts=True)
    order = ids[np.lexsort((first, -counts))]
    rank = np.zeros(int(ids.max()) + 1, int)
    rank[order] = np.arange(len(order))
    return rank[assignments]


def cluster_vectors(x: np.ndarray, settings: ClusterSettings) -> Clustering:
    """Cluster ``x`` (N, dim), prepared for Euclidean distances; see the module docstring."""
    with single_threaded():
        return _cluster_vectors(np.asarray(x, np.float64), settings)


def _cluster_vectors(x: np.ndarray, settings: ClusterSettings) -> Clustering:
    if x.ndim != 2 or len(x) == 0:
        raise DataError(f"nothing to cluster: vectors of shape {x.shape}")
    if settings.clusters is None:
        k, scores = choose_k(x, settings)
    else:
        if settings.clusters > len(x):
            raise DataError(f"-k {settings.clusters} is more clusters than the {len(x)} files")
        k, scores = settings.clusters, {}
    assignments = _by_size(assign(x, k, settings.method, settings.seed))
    if settings.clusters is not None:
        scores = {k: silhouette(x, assignments)}
    centroids = np.stack([x[assignments == c].mean(axis=0) for c in range(k)])
    distances = np.linalg.norm(x - centroids[assignments], axis=1)
    return Clustering(assignments, distances, k, scores, settings)


def cluster_members(clustering: Clustering, files: Sequence[str]) -> list[dict]:
    """Per cluster: ``{"cluster", "size", "representatives": [file...], "members": [{"file",
    "distance"}...]}``, members sorted by distance to the centroid."""
    out = []
    for c in range(clustering.clusters):
        members = sorted(np.flatnonzero(clustering.assignments == c), key=lambda i: (clustering.distances[i], files[i]))
        out.append({"cluster": c, "size": len(members),
                    "representatives": [files[i] for i in members[:clustering.settings.representatives_per_cluster]],
                    "members": [{"file": files[i], "distance": round(float(clustering.distances[i]), 6)}
                                for i in members]})
    return out


def markdown(clustering: Clustering, clusters: Sequence[dict], source: str, skipped: Sequence) -> str:
    settings = clustering.settings
    chosen = clustering.silhouettes.get(clustering.clusters)
    lines = [f"# Clusters: {source}", "",
             (f"{sum(c['size'] for c in clusters)} files, {settings.method}, k = {clustering.clusters} "
              f"({'chosen by silhouette' if settings.clusters is None else 'given'}; silhouette "
              f"{'undefined' if chosen is None else f'{chosen:.3f}'})"), ""]
    if settings.clusters is None:
        lines += ["| k | silhouette |", "|---:|---:|"]
        lines += [f"| {k} | {'-' if s is None else f'{s:.3f}'} |" for k, s in clustering.silhouettes.items()] + [""]
    lines += [f"Skipped (unreadable): {path}: {why}" for path, why in skipped]
    for c in clusters:
        lines += ["", f"## Cluster {c['cluster']} ({c['size']} files)", "",
                  "Representatives (closest to the centroid):", ""] + [f"- {f}" for f in c["representatives"]]
    return "\n".join(lines) + "\n"


def write_cluster_report(out_dir: str | Path, clustering: Clustering, x: np.ndarray, files: Sequence[str],
                         source: str, skipped: Sequence = ()) -> dict[str, Path]:
    """The four files of the module docstring in ``out_dir``; ``map.png`` only with >= 3 files
    (t-SNE needs them). Returns their paths by kind."""
    import csv
    import io

    from sedweak.embeddings.metrics import tsne_png
    from sedweak.io_utils import atomic_write_json, atomic_write_text

    out_dir = Path(out_dir)
    clusters = cluster_members(clustering, files)
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["file", "cluster", "distance"])
    writer.writerows([m["file"], c["cluster"], m["distance"]] for c in clusters for m in c["members"])
    paths = {"markdown": atomic_write_text(out_dir / "clusters.md", markdown(clustering, clusters, source, skipped)),
             "json": atomic_write_json(out_dir / "clusters.json", {
                 "source": source, "settings": asdict(clustering.settings), "clusters_found": clustering.clusters,
                 "silhouettes": {str(k): s for k, s in clustering.silhouettes.items()},
                 "skipped": [{"path": p, "reason": why} for p, why in skipped], "clusters": clusters}),
             "csv": atomic_write_text(out_dir / "clusters.csv", table.getvalue())}
    if len(files) >= 3:
        width = len(str(clustering.clusters - 1))   # " 2" sorts before "10" in the legend
        names = np.array([f"cluster {c:>{width}}" for c in clustering.assignments])
        with single_threaded():
            paths["png"] = tsne_png(x, names, out_dir / "map.png", title=f"{source}: {clustering.clusters} clusters",
                                    seed=clustering.settings.seed)
    return paths
