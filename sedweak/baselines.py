"""MFCC + k-nearest-neighbours frame classifier (the baseline of Pons & Favory).

Each frame (at the CRNN's output rate, so both systems share the post-processing)
is described by 20 MFCCs and their deltas, averaged over the pooled frames, and
labelled by the share of its k nearest training frames that carry each class.
scikit-learn does the work; nothing here needs TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from sedweak.config import ConfigError

N_MFCC = 20


def mfcc_frames(logmel_db: np.ndarray, time_pooling: int) -> np.ndarray:
    """Log-mel (frames, n_mels) -> (frames // time_pooling, 2 * N_MFCC) MFCC + delta."""
    import librosa

    mfcc = librosa.feature.mfcc(S=logmel_db.T, n_mfcc=N_MFCC)            # (20, frames)
    features = np.concatenate([mfcc, librosa.feature.delta(mfcc)]).T      # (frames, 40)
    frames = (features.shape[0] // time_pooling) * time_pooling
    return features[:frames].reshape(-1, time_pooling, features.shape[1]).mean(axis=1).astype(np.float32)


@dataclass
class MfccKnn:
    """Fitted scaler + k-NN over MFCC frames; ``predict`` returns frame probabilities."""

    time_pooling: int
    num_neighbors: int = 15
    scaler: object = None
    knn: object = None

    def fit(self, logmels: np.ndarray, strong_targets: np.ndarray, frame_stride: int = 2,
            seed: int = 0) -> "MfccKnn":
        """logmels (clips, frames, n_mels); strong_targets (clips, frames // pool, classes) in {0, 1}.

        Every ``frame_stride``-th frame is kept: neighbouring frames are near copies.
        """
        from sklearn.neighbors import KNeighborsRegressor
        from sklearn.preprocessing import StandardScaler

        x = np.concatenate([mfcc_frames(m, self.time_pooling)[::frame_stride] for m in logmels])
        y = np.concatenate([t[::frame_stride] for t in strong_targets])
        if np.any(y < 0):
            raise ConfigError("the MFCC + k-NN baseline needs strong (frame) targets, not masked ones")
        self.scaler = StandardScaler().fit(x)
        # Regression on multi-hot targets = per-class share of neighbours with the label.
        self.knn = KNeighborsRegressor(self.num_neighbors, n_jobs=-1).fit(self.scaler.transform(x), y)
        return self

    def predict(self, logmel: np.ndarray) -> np.ndarray:
        """Log-mel (frames, n_mels) -> probabilities (frames // time_pooling, classes)."""
        x = self.scaler.transform(mfcc_frames(logmel, self.time_pooling))
        return np.asarray(self.knn.predict(x), dtype=np.float32)


def predict_events(baseline: MfccKnn, logmels: np.ndarray, filenames: Sequence[str], classes: Sequence[str],
                   frames_per_second: float, postprocess) -> dict:
    """Events for each clip, with the same post-processing as the CRNN."""
    from sedweak.postprocessing import probabilities_to_events

    return {name: probabilities_to_events(baseline.predict(m), classes, frames_per_second, name, postprocess)
            for name, m in zip(filenames, logmels)}
