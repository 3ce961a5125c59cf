"""One vector per audio file, from any of the representations ``transfer`` and ``cluster`` take.

``source`` is one of:

* an embeddings file written by ``sedweak embed`` (``.h5``/``.hdf5``); per-window rows
  (``--hop``) are pooled to one vector per file (mean, re-normalised to unit length);
* a sedweak ``.keras`` model with an ``embedding`` output, run over audio files or folders
  (:func:`sedweak.embeddings.extract.embed_files`: one vector per file);
* ``mfcc``: MFCC statistics of the audio (:mod:`sedweak.collections.mfcc_stats`).

A file that cannot be read is skipped and listed, the rest go on; no audio at all, or no file
readable, is a :class:`~sedweak.errors.DataError` naming the inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from sedweak.errors import DataError, UserError

MFCC_SOURCE = "mfcc"
EMBEDDING_SUFFIXES = (".h5", ".hdf5")


@dataclass(frozen=True)
class FileVectors:
    """``vectors`` (N, dim) float32, one row per file key; ``standardise``: whether the
    dimensions have unrelated scales (MFCC statistics) and distances need z-scores, rather
    than unit-length embeddings compared as they are."""

    vectors: np.ndarray
    files: tuple[str, ...]
    source: str
    standardise: bool
    skipped: tuple[tuple[str, str], ...] = ()  # (path, reason) of files that could not be read

    def __len__(self) -> int:
        return len(self.files)

    def for_distances(self) -> np.ndarray:
        """(N, dim) float64 ready for Euclidean distances: z-scored when ``standardise``,
        else rows scaled to unit length."""
        x = np.asarray(self.vectors, np.float64)
        if self.standardise:
            return (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-12)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def single_threaded():
    """A context where OpenMP and BLAS run one thread: per-file vectors are small problems, and
    on a busy machine spinning OpenMP threads cost far more than the work (a 300-point t-SNE:
    60 s with threads, 2 s without, on two shared cores)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def is_embeddings_file(source: str | Path) -> bool:
    return Path(source).suffix.lower() in EMBEDDING_SUFFIXES


def pooled_embeddings(path: str | Path) -> FileVectors:
    """An ``sedweak embed`` file as one unit vector per file (windows averaged), in the order
    the files first appear."""
    from sedweak.embeddings.extract import read_embeddings

    embeddings = read_embeddings(path)
    if not len(embeddings):
        raise DataError(f"{path}: holds no embedding")
    order = list(dict.fromkeys(embeddings.files))
    position = {f: i for i, f in enumerate(order)}
    rows = np.array([position[f] for f in embeddings.files])
    sums = np.zeros((len(order), embeddings.vectors.shape[1]), np.float64)
    np.add.at(sums, rows, embeddings.vectors)
    unit = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return FileVectors(unit.astype(np.float32), tuple(order), str(path), standardise=False)


def audio_items(inputs: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """(path, key) of every audio file in ``inputs`` (files or folders, keyed as ``sedweak
    embed`` keys them); :class:`DataError` when there is none."""
    from sedweak.inference import keyed_audio_files

    if not inputs:
        raise DataError("no audio given: name audio files or folders")
    items = keyed_audio_files(inputs)
    if not items:
        raise DataError(f"no audio files in {', '.join(map(str, inputs))}")
    return items


def audio_vectors(source: str | Path, inputs: Sequence[str | Path],
                  keep: Callable[[str], bool] | None = None, progress: bool = False) -> FileVectors:
    """Vectors of the audio files in ``inputs`` from a ``.keras`` model or ``"mfcc"``;
    ``keep(key)``: embed only the files it accepts (e.g. the labelled ones)."""
    items = audio_items(inputs)
    if keep is not None:
        items = [(p, k) for p, k in items if keep(k)]
        if not items:
            raise DataError(f"none of the audio files in {', '.join(map(str, inputs))} is labelled")
    progress = progress and len(items) > 20   # a bar only when there is something to wait for
    if str(source) == MFCC_SOURCE:
        from sedweak.collections.mfcc_stats import mfcc_files

        vectors, keys, failed = mfcc_files(items)
        standardise = True
    else:
        vectors, keys, failed = _model_vectors(Path(source), items, progress)
        standardise = False
    if not keys:
        raise DataError(f"no file could be read ({len(failed)} skipped; first: {failed[0][0]}: {failed[0][1]})")
    return FileVectors(vectors, keys, str(source), standardise, tuple(failed))


def _model_vectors(path: Path, items, progress: bool):
    from sedweak.embeddings.extract import embed_files
    from sedweak.models.saving import load_model

    if path.suffix != ".keras":
        raise UserError(f"{path}: expected a .keras model, an embeddings .h5 or '{MFCC_SOURCE}'")
    model, info = load_model(path)
    embeddings, failed = embed_files(model, info, items, None, model_path=str(path), progress=progress)
    return embeddings.vectors, embeddings.files, failed


def file_vectors(source: str | Path, inputs: Sequence[str | Path] = (),
                 keep: Callable[[str], bool] | None = None, progress: bool = False) -> FileVectors:
    """:func:`pooled_embeddings` of an ``.h5`` source (``inputs`` must then be empty), else
    :func:`audio_vectors`."""
    if is_embeddings_file(source):
        if inputs:
            raise UserError(f"{source} already holds the embeddings: give no audio with it")
        return pooled_embeddings(source)
    return audio_vectors(source, inputs, keep, progress)
