"""Embeddings of audio files from a trained model: one vector per file, or one per window.

``sedweak embed MODEL AUDIO_OR_DIR --out emb.h5 [--hop SECONDS]``. The model is any sedweak
``.keras`` file whose outputs include ``embedding`` (the CRNN's L2-normalised head, trained
with ``loss.embedding_weight`` > 0) or whose single output is ``(batch, dim)``.

Windows are the model's input clip (``info.clip_frames`` log-mel frames); a window running
past the end of a file is padded with the silence floor, as ``sedweak predict`` pads.

* Per file (no hop): the file is cut as ``predict`` cuts it (:class:`WindowGrid`, ~50 %
  overlap); its vector is the mean of its windows' vectors, re-normalised to unit length.
* ``hop_seconds``: a window every ``hop_seconds`` from 0 while it starts inside the file;
  each row has the window's start and end (the end clipped to the file's duration).

The HDF5 layout (:func:`write_embeddings`, :func:`read_embeddings`): datasets
``embeddings`` (N, dim) float32, ``file`` (N,) UTF-8 keys (as ``predict`` keys files),
``start_seconds`` and ``end_seconds`` (N,) float64; attributes ``model``, ``hop_seconds``
(0: one vector per file), ``window_seconds``, ``dim``. Written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from sedweak.errors import DataError, UserError
from sedweak.models.saving import ModelInfo


class EmbeddingModelError(UserError, ValueError):
    """A model with no embedding output."""


class EmbeddingFileError(DataError):
    """An embeddings file that is missing or not in sedweak's layout."""


@dataclass(frozen=True)
class Embeddings:
    """Rows of vectors with the file and times each comes from."""

    vectors: np.ndarray       # (N, dim) float32, unit length
    files: tuple[str, ...]    # (N,)
    start_seconds: np.ndarray  # (N,)
    end_seconds: np.ndarray    # (N,)
    hop_seconds: float = 0.0  # 0: one vector per file
    window_seconds: float = 0.0
    model: str = ""

    def __len__(self) -> int:
        return len(self.files)


def embedding_function(model, path: str = "the model"):
    """``windows (n, frames, mels) -> (n, dim)`` for a model with an embedding output."""
    outputs = model.output
    if isinstance(outputs, dict):
        if "embedding" not in outputs:
            raise EmbeddingModelError(f"{path}: the model has no 'embedding' output (outputs: {sorted(outputs)})")
        key = "embedding"
    elif len(getattr(outputs, "shape", ())) == 2:
        key = None
    else:
        raise EmbeddingModelError(f"{path}: the model's output is not an embedding (batch, dim): "
                                  f"{getattr(outputs, 'shape', outputs)}")

    def run(windows: np.ndarray) -> np.ndarray:
        out = model.predict_on_batch(windows)
        return np.asarray(out[key] if key else out, np.float32)

    return run


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def _windows(logmel: np.ndarray, starts: Sequence[int], frames: int, floor: float) -> np.ndarray:
    out = np.full((len(starts), frames, logmel.shape[1]), floor, np.float32)
    for i, start in enumerate(starts):
        piece = logmel[start:start + frames]
        out[i, :len(piece)] = piece
    return out


def embed_logmel(run, logmel: np.ndarray, info: ModelInfo, hop_seconds: float | None = None,
                 batch_size: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors (n, dim), start_seconds (n,), end_seconds (n,)) of one file's log-mel
    (frames, n_mels); see the module docstring for the two modes."""
    from sedweak_runtime.windows import WindowGrid

    frames, fps = logmel.shape[0], info.features.frames_per_second
    duration = frames / fps
    floor = 10.0 * np.log10(info.features.amin_power)
    if hop_seconds is None:
        starts = WindowGrid(info.clip_frames, info.time_pooling).starts(frames)
    else:
        hop = max(1, int(round(hop_seconds * fps)))
        starts = list(range(0, max(frames, 1), hop))
    vectors = np.concatenate([run(_windows(logmel, starts[i:i + batch_size], info.clip_frames, floor))
                              for i in range(0, len(starts), batch_size)])
    if hop_seconds is None:
        return _unit(vectors.mean(axis=0, keepdims=True)), np.zeros(1), np.array([duration])
    begin = np.asarray(starts, np.float64) / fps
    return _unit(vectors), begin, np.minimum(begin + info.clip_frames / fps, duration)


def embed_files(model, info: ModelInfo, items: Sequence[tuple[Path, str]], hop_seconds: float | None = None,
                model_path: str = "", progress: bool = False) -> tuple[Embeddings, list[tuple[str, str]]]:
    """Embeddings of ``items`` ((path, key) pairs) and the files skipped, as (path, reason):
    a bad file is reported, never the end of the run."""
    from sedweak.features import logmel_file

    if hop_seconds is not None and not hop_seconds > 0:
        raise UserError(f"--hop must be > 0 seconds, got {hop_seconds}")
    run = embedding_function(model, model_path or "the model")
    rows, failed = [], []
    iterator = items
    if progress:
        from tqdm import tqdm

        iterator = tqdm(items, desc="embed", unit="file")
    for path, key in iterator:
        try:
            vectors, begin, end = embed_logmel(run, logmel_file(path, info.features), info, hop_seconds)
        except Exception as err:  # unreadable audio or a failing window: reported, the rest go on
            failed.append((str(path), str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"))
            continue
        rows.append((key, vectors, begin, end))
    dim = int(run(np.zeros((1, info.clip_frames, info.features.n_mels), np.float32)).shape[-1]) if not rows \
        else rows[0][1].shape[1]
    embeddings = Embeddings(
        vectors=np.concatenate([r[1] for r in rows]) if rows else np.zeros((0, dim), np.float32),
        files=tuple(key for key, vectors, _, _ in rows for _ in range(len(vectors))),
        start_seconds=np.concatenate([r[2] for r in rows]) if rows else np.zeros(0),
        end_seconds=np.concatenate([r[3] for r in rows]) if rows else np.zeros(0),
        hop_seconds=float(hop_seconds or 0.0), window_seconds=info.clip_frames / info.features.frames_per_second,
        model=str(model_path))
    return embeddings, failed


def write_embeddings(path: str | Path, embeddings: Embeddings) -> Path:
    """The HDF5 file of the module docstring, written to a temporary name then renamed."""
    import h5py

    from sedweak.io_utils import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("embeddings", data=np.asarray(embeddings.vectors, np.float32))
        h5.create_dataset("file", data=np.array(embeddings.files, dtype=object), dtype=h5py.string_dtype("utf-8"))
        h5.create_dataset("start_seconds", data=np.asarray(embeddings.start_seconds, np.float64))
        h5.create_dataset("end_seconds", data=np.asarray(embeddings.end_seconds, np.float64))
        h5.attrs.update({"model": embeddings.model, "hop_seconds": embeddings.hop_seconds,
                         "window_seconds": embeddings.window_seconds,
                         "dim": int(np.asarray(embeddings.vectors).shape[1]), "format": "sedweak-embeddings-1"})
    return path


def read_embeddings(path: str | Path) -> Embeddings:
    """An embeddings file back; :class:`EmbeddingFileError` naming the file and the problem."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise EmbeddingFileError(f"{path}: embeddings file not found")
    try:
        with h5py.File(path, "r") as h5:
            missing = [k for k in ("embeddings", "file", "start_seconds", "end_seconds") if k not in h5]
            if missing:
                raise EmbeddingFileError(f"{path}: not a sedweak embeddings file (no {', '.join(missing)})")
            vectors = np.asarray(h5["embeddings"], np.float32)
            files = tuple(f.decode() if isinstance(f, bytes) else str(f) for f in h5["file"][()])
            begin, end = np.asarray(h5["start_seconds"]), np.asarray(h5["end_seconds"])
            attrs = dict(h5.attrs)
    except OSError as err:
        raise EmbeddingFileError(f"{path}: not a readable HDF5 file ({err})") from None
    if vectors.ndim != 2 or not len(files) == len(vectors) == len(begin) == len(end):
        raise EmbeddingFileError(f"{path}: {vectors.shape} vectors for {len(files)} file names, "
                                 f"{len(begin)} starts and {len(end)} ends")
    if not np.isfinite(vectors).all():
        raise EmbeddingFileError(f"{path}: embeddings contain NaN or infinity")
    return Embeddings(vectors, files, begin, end, float(attrs.get("hop_seconds", 0.0)),
                      float(attrs.get("window_seconds", 0.0)), str(attrs.get("model", "")))
