"""MFCC statistics of a file: the baseline representation of Pons & Favory's transfer lab.

One 40-d vector per file: the mean and the standard deviation over time of 20 MFCCs. The
MFCCs are the DCT of sedweak's own log-mel (:func:`sedweak.features.logmel_file`, the
front end every sedweak model reads), not of a separate librosa pipeline, so the baseline
and the learned embeddings see the same signal and differ only in what is learned.

This is its own small module because ``sedweak transfer``, ``sedweak cluster`` and
``bench/bench_transfer.py`` all need the baseline, and it must stay free of TensorFlow
(numpy + librosa only): the baseline then runs where no model can be loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from sedweak.baselines import N_MFCC

MFCC_STATS_DIM = 2 * N_MFCC


def mfcc_statistics(logmel_db: np.ndarray) -> np.ndarray:
    """Log-mel (frames, n_mels) in dB -> (2 * N_MFCC,) float32: the mean of each of the
    N_MFCC (20) MFCCs over the frames, then their standard deviations."""
    import librosa

    logmel_db = np.asarray(logmel_db, np.float32)
    if logmel_db.ndim != 2 or logmel_db.shape[0] == 0:
        raise ValueError(f"log-mel must be (frames >= 1, n_mels), got shape {logmel_db.shape}")
    mfcc = librosa.feature.mfcc(S=logmel_db.T, n_mfcc=N_MFCC)   # (20, frames)
    return np.concatenate([mfcc.mean(axis=1), mfcc.std(axis=1)]).astype(np.float32)


def mfcc_files(items: Sequence[tuple[Path, str]], features=None
               ) -> tuple[np.ndarray, tuple[str, ...], list[tuple[str, str]]]:
    """(vectors (N, 40) float32, keys (N,), skipped files as (path, reason)) of ``items``
    ((path, key) pairs); ``features``: a :class:`sedweak.config.FeatureConfig` (default:
    sedweak's 16 kHz, 64-band front end). A bad file is reported, never the end of the run."""
    from sedweak.config import FeatureConfig
    from sedweak.errors import UserError
    from sedweak.features import logmel_file

    features = features or FeatureConfig()
    vectors, keys, failed = [], [], []
    for path, key in items:
        try:
            vectors.append(mfcc_statistics(logmel_file(path, features)))
        except Exception as err:  # unreadable audio: reported, the rest go on
            failed.append((str(path), str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"))
            continue
        keys.append(key)
    stacked = np.stack(vectors) if vectors else np.zeros((0, MFCC_STATS_DIM), np.float32)
    return stacked, tuple(keys), failed
