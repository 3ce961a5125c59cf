"""Training targets and batches (``keras.utils.PyDataset``: no tf.data, any backend).

Targets live at the model's frame rate (feature rate / time pooling):
  strong (clips, model_frames, classes) in {0, 1} or ``losses.MASKED``
  weak   (clips, classes) in {0, 1}
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np

from sedweak.config import AugmentConfig
from sedweak.datasets.folder import ClipSet
from sedweak.labels import events_to_frames, weak_vector
from sedweak.losses import MASKED


def build_targets(clips: ClipSet, filenames: Sequence[str], classes: Sequence[str], model_frames: int,
                  model_frames_per_second: float, label_type: str = "strong",
                  weak_clip_strong_target: str = "repeat") -> tuple[np.ndarray, np.ndarray]:
    """Strong and weak targets for ``filenames`` (a subset/order of ``clips``).

    A clip without strong labels -- or every clip when ``label_type == "weak"`` --
    gets its clip label repeated on every frame (``"repeat"``, Adavanne & Virtanen)
    or a fully masked strong target (``"mask"``, DESED practice).
    """
    strong = np.zeros((len(filenames), model_frames, len(classes)), np.float32)
    weak = np.zeros((len(filenames), len(classes)), np.float32)
    for i, name in enumerate(filenames):
        weak[i] = weak_vector(clips.weak[name], classes, where=name)
        events = clips.strong.get(name)
        if label_type == "strong" and events is not None:
            strong[i] = events_to_frames(events, classes, model_frames, model_frames_per_second)
        elif weak_clip_strong_target == "repeat":
            strong[i] = weak[i][None, :]
        else:
            strong[i] = MASKED
    return strong, weak


def unite_targets(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Targets of a mixture: union of events; unknown (masked) wins over anything."""
    return np.where((a < 0) | (b < 0), MASKED, np.maximum(a, b)).astype(np.float32)


def mix_logmels(a_db: np.ndarray, b_db: np.ndarray, b_gain_db: float) -> np.ndarray:
    """Log-mel of the sum of two signals' mel powers (b scaled by ``b_gain_db``)."""
    return (10.0 * np.logaddexp(a_db * np.log(10) / 10, (b_db + b_gain_db) * np.log(10) / 10) / np.log(10)
            ).astype(np.float32)


class ClipBatches(keras.utils.PyDataset):
    """Batches ``(logmel, {"strong", "weak"})`` with seeded shuffling and augmentation.

    Args:
        features: (clips, frames, n_mels) log-mel in dB.
        strong, weak: targets from :func:`build_targets`.
        time_pooling: model frames = frames // time_pooling (time shifts respect it).
        augment: None for validation / evaluation.
        max_batches: cap per epoch (``--fast-dev-run``).
    """

    def __init__(self, features: np.ndarray, strong: np.ndarray, weak: np.ndarray, batch_size: int,
                 time_pooling: int = 1, shuffle: bool = False, augment: AugmentConfig | None = None,
                 seed: int = 0, max_batches: int | None = None):
        super().__init__(workers=1, use_multiprocessing=False)
        if not (len(features) == len(strong) == len(weak)):
            raise ValueError("features, strong and weak need the same number of clips")
        self.features, self.strong, self.weak = features, strong, weak
        self.batch_size, self.time_pooling = batch_size, time_pooling
        self.shuffle, self.augment, self.seed = shuffle, augment, seed
        self.max_batches = max_batches
        self.epoch = 0
        self.order = self._order()

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.features))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.features))

    def __len__(self) -> int:
        batches = int(np.ceil(len(self.features) / self.batch_size))
        return min(batches, self.max_batches) if self.max_batches else batches

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        x = self.features[rows].copy()
        strong, weak = self.strong[rows].copy(), self.weak[rows].copy()
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            for j in range(len(rows)):
                x[j], strong[j], weak[j] = self._augment_one(rng, x[j], strong[j], weak[j])
        return x, {"strong": strong, "weak": weak}

    def _augment_one(self, rng, x, strong, weak):
        aug = self.augment
        if aug.mix_probability > 0 and rng.random() < aug.mix_probability:
            other = rng.integers(len(self.features))
            x = mix_logmels(x, self.features[other], rng.uniform(-6.0, 0.0))
            strong = unite_targets(strong, self.strong[other])
            weak = np.maximum(weak, self.weak[other])
        if aug.time_shift:
            # Roll only the frames behind model frames, so features and targets stay aligned.
            shift_model = int(rng.integers(strong.shape[0]))
            covered = strong.shape[0] * self.time_pooling
            x = x.copy()
            x[:covered] = np.roll(x[:covered], shift_model * self.time_pooling, axis=0)
            strong = np.roll(strong, shift_model, axis=0)
        if aug.gain_db_max > 0:
            x = x + rng.uniform(-aug.gain_db_max, aug.gain_db_max)
        if aug.freq_mask_bands_max > 0:
            width = int(rng.integers(0, min(aug.freq_mask_bands_max, x.shape[1]) + 1))
            start = int(rng.integers(0, x.shape[1] - width + 1))
            x[:, start:start + width] = x.mean()
        return x.astype(np.float32), strong, weak
