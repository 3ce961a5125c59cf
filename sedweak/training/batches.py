"""Training batches (``keras.utils.PyDataset``: no tf.data, any backend) of log-mels and
the targets of :mod:`sedweak.training.targets`, seeded order and augmentation.

Features may be a NumPy array or the cache's ``H5Features``: then each batch reads its rows
from the HDF5 file (streaming) and the split never sits in memory.

Augmentation rule for masks: time and frequency masks change features only, never targets;
a time mask that would cover every frame of a labelled event (a run of 1s of one class in
the strong target) is skipped, so no positive target is left without any evidence.
"""

from __future__ import annotations

import keras
import numpy as np

from sedweak.config import AugmentConfig
from sedweak.features import mix_logmels, shift_bands
from sedweak.losses import MASKED
from sedweak.training.sampling import balanced_order, positive_mean_weights
from sedweak.training.targets import unite_targets


class ClipBatches(keras.utils.PyDataset):
    """Batches ``(logmel, {"strong", "weak"}[, sample_weight])``, seeded order and augmentation.

    Args:
        features: (clips, frames, n_mels) log-mel in dB: an array, or ``H5Features`` to stream.
        strong, weak: targets from :func:`build_targets` (kept in memory: they are small).
        time_pooling: model frames = frames // time_pooling (time shifts respect it).
        shuffle: a new order each epoch; ``sampling="balanced"`` draws by class instead
            (:func:`sedweak.training.sampling.balanced_order`, as many draws as clips).
        class_weights: (classes,) per-class weights; each batch then carries a sample weight
            per clip, ``{"strong": (batch,), "weak": (batch,)}`` (see ``sampling``).
        augment: None for validation / evaluation.
        max_batches: cap per epoch (``--fast-dev-run``).
        unlabelled: (clips, frames, n_mels) log-mels without labels (the mean teacher's):
            ``unlabelled_per_batch`` of them, drawn by (seed, epoch, batch), are appended to
            every batch with MASKED strong and weak targets, and augmented like the rest.
        embedding_targets: add ``"embedding"``: the weak targets again (the triplet loss of
            ``loss.embedding_weight`` pairs clips by their tags).
    """

    def __init__(self, features, strong: np.ndarray, weak: np.ndarray, batch_size: int,
                 time_pooling: int = 1, shuffle: bool = False, augment: AugmentConfig | None = None,
                 seed: int = 0, max_batches: int | None = None, sampling: str = "shuffle",
                 class_weights: np.ndarray | None = None, workers: int = 1, unlabelled=None,
                 unlabelled_per_batch: int = 0, embedding_targets: bool = False):
        super().__init__(workers=workers, use_multiprocessing=False)
        if not (len(features) == len(strong) == len(weak)):
            raise ValueError("features, strong and weak need the same number of clips")
        if sampling not in ("shuffle", "balanced"):
            raise ValueError(f"sampling must be 'shuffle' or 'balanced', got {sampling!r}")
        self.features, self.strong, self.weak = features, strong, weak
        self.batch_size, self.time_pooling = batch_size, time_pooling
        self.shuffle, self.augment, self.seed, self.sampling = shuffle, augment, seed, sampling
        self.max_batches, self.embedding_targets = max_batches, embedding_targets
        if unlabelled_per_batch and (unlabelled is None or len(unlabelled) == 0):
            raise ValueError("unlabelled_per_batch > 0 needs unlabelled clips")
        self.unlabelled, self.unlabelled_per_batch = unlabelled, int(unlabelled_per_batch if unlabelled is not None
                                                                      else 0)
        self.class_weights = None if class_weights is None else np.asarray(class_weights, np.float32)
        if self.class_weights is not None:
            self._weight_norm = float(positive_mean_weights(weak, self.class_weights).mean() or 1.0)
        self.epoch = 0
        self.order = self._order()

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.features))
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.sampling == "balanced":
            return balanced_order(self.weak, len(self.features), rng)
        return rng.permutation(len(self.features))

    def __len__(self) -> int:
        batches = int(np.ceil(len(self.features) / self.batch_size))
        return min(batches, self.max_batches) if self.max_batches else batches

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)

    def set_epoch(self, epoch: int) -> None:
        """Serve epoch ``epoch``'s order and augmentation (both keyed by (seed, epoch)):
        a resumed run starts where the interrupted one stopped."""
        self.epoch = int(epoch)
        self.order = self._order()

    def _rows(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(features, strong, weak) of batch ``index`` before augmentation, copies."""
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        # fancy indexing copies: ours to augment
        return np.asarray(self.features[rows], np.float32), self.strong[rows].copy(), self.weak[rows].copy()

    def __getitem__(self, index: int):
        x, strong, weak = self._rows(index)
        if self.unlabelled_per_batch:
            x, strong, weak = self._with_unlabelled(index, x, strong, weak)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            for j in range(len(x)):
                x[j], strong[j], weak[j] = self._augment_one(rng, x[j], strong[j], weak[j])
            if self.augment.mixup_probability > 0 and rng.random() < self.augment.mixup_probability:
                x, strong, weak = mixup(rng, x, strong, weak, self.augment.mixup_alpha, self.augment.mixup_labels)
        y = {"strong": strong, "weak": weak}
        if self.embedding_targets:
            y["embedding"] = weak
        if self.class_weights is None:
            return x, y
        # Weights from the (possibly mixed) clip labels, on the scale of the whole split; the
        # triplet loss is one value per batch, unweighted.
        w = positive_mean_weights(weak, self.class_weights) / self._weight_norm
        weights = {"strong": w, "weak": w}
        if self.embedding_targets:
            weights["embedding"] = np.ones_like(w)
        return x, y, weights

    def _with_unlabelled(self, index: int, x, strong, weak):
        """The batch with ``unlabelled_per_batch`` unlabelled clips appended (targets MASKED)."""
        rng = np.random.default_rng([self.seed, self.epoch, index, 0x756E6C])   # "unl": its own stream
        rows = np.sort(rng.choice(len(self.unlabelled), min(self.unlabelled_per_batch, len(self.unlabelled)),
                                  replace=False))
        extra = np.asarray(self.unlabelled[rows], np.float32)
        masked_strong = np.full((len(rows), *strong.shape[1:]), MASKED, np.float32)
        masked_weak = np.full((len(rows), *weak.shape[1:]), MASKED, np.float32)
        return (np.concatenate([x, extra]), np.concatenate([strong, masked_strong]),
                np.concatenate([weak, masked_weak]))

    def _augment_one(self, rng, x, strong, weak):
        aug = self.augment
        if aug.mix_probability > 0 and rng.random() < aug.mix_probability:
            other = rng.integers(len(self.features))
            x = mix_logmels(x, self.features[other], rng.uniform(-6.0, 0.0))
            strong = unite_targets(strong, self.strong[other])
            weak = unite_targets(weak, self.weak[other])  # an unlabelled clip's mix stays unlabelled
        if aug.time_shift:
            # Roll only the frames behind model frames, so features and targets stay aligned.
            shift_model = int(rng.integers(strong.shape[0]))
            covered = strong.shape[0] * self.time_pooling
            x = x.copy()
            x[:covered] = np.roll(x[:covered], shift_model * self.time_pooling, axis=0)
            strong = np.roll(strong, shift_model, axis=0)
        if aug.gain_db_max > 0:
            x = x + rng.uniform(-aug.gain_db_max, aug.gain_db_max)
        if aug.freq_shift_bands_max > 0:
            limit = min(aug.freq_shift_bands_max, x.shape[1] - 1)
            x = shift_bands(x, int(rng.integers(-limit, limit + 1)))
        if aug.freq_mask_bands_max > 0:
            width = int(rng.integers(0, min(aug.freq_mask_bands_max, x.shape[1]) + 1))
            start = int(rng.integers(0, x.shape[1] - width + 1))
            x[:, start:start + width] = x.mean()
        if aug.time_mask_frames_max > 0:
            width = int(rng.integers(0, min(aug.time_mask_frames_max, x.shape[0]) + 1))
            start = int(rng.integers(0, x.shape[0] - width + 1))
            if not erases_an_event(strong, start, width, self.time_pooling):
                x[start:start + width] = x.mean()
        return x.astype(np.float32), strong, weak


def mixup(rng: np.random.Generator, x: np.ndarray, strong: np.ndarray, weak: np.ndarray, alpha: float,
          labels: str = "soft") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch mixup (DESED baseline): clip i with clip perm[i], one lambda ~ Beta(alpha, alpha).

    Features are log-mels in dB, mixed as mel power: ``10 log10(lambda P_i + (1 - lambda) P_j)``.
    Labels: ``"soft"`` lambda-weighted, ``"hard"`` their union; a masked target (< 0, strong
    or weak) stays masked. Shapes as given: x (batch, frames, mels), strong (batch, T, C), weak (batch, C).
    """
    lam = float(np.clip(rng.beta(alpha, alpha), 1e-6, 1 - 1e-6))
    perm = rng.permutation(len(x))
    mixed = mix_logmels(x + 10.0 * np.log10(lam), x[perm], 10.0 * np.log10(1.0 - lam))
    if labels == "soft":
        new_strong = lam * strong + (1 - lam) * strong[perm]
        new_weak = lam * weak + (1 - lam) * weak[perm]
    else:
        new_strong, new_weak = np.maximum(strong, strong[perm]), np.maximum(weak, weak[perm])
    new_strong = np.where((strong < 0) | (strong[perm] < 0), MASKED, new_strong)
    new_weak = np.where((weak < 0) | (weak[perm] < 0), MASKED, new_weak)
    return mixed.astype(np.float32), new_strong.astype(np.float32), new_weak.astype(np.float32)


def erases_an_event(strong: np.ndarray, start: int, width: int, time_pooling: int) -> bool:
    """Whether masking feature frames [start, start + width) hides every model frame of some
    event: a maximal run of 1s of one class in ``strong`` (model_frames, classes)."""
    if width == 0:
        return False
    model_frames = np.arange(strong.shape[0])
    masked = (model_frames * time_pooling >= start) & ((model_frames + 1) * time_pooling <= start + width)
    if not masked.any():
        return False
    positive = np.pad(strong.T == 1, ((0, 0), (1, 0))).ravel()  # (classes * (model_frames + 1),)
    visible = np.pad((strong.T == 1) & ~masked[None, :], ((0, 0), (1, 0))).ravel()
    run_id = np.cumsum(positive & ~np.roll(positive, 1)) * positive  # a leading 0 splits the classes
    return bool(set(run_id[positive]) - set(run_id[visible]))


class DynamicBatches(ClipBatches):
    """:class:`ClipBatches` whose clips are fresh soundscapes from a
    :class:`sedweak.training.dynamic_mix.DynamicMixer`, seeded by (seed, epoch, batch), as
    many per epoch as the fixed split has clips; the other augmentations then apply as
    usual (``mix_probability`` mixes with a clip of the fixed split, ``features``)."""

    def __init__(self, mixer, features, strong: np.ndarray, weak: np.ndarray, batch_size: int, **kwargs):
        super().__init__(features, strong, weak, batch_size, **kwargs)
        self.mixer = mixer

    def _rows(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        count = len(self.order[index * self.batch_size:(index + 1) * self.batch_size])
        rng = np.random.default_rng([self.seed, self.epoch, index, 0x6D6978])   # "mix": its own stream
        clips = [self.mixer.mix(rng) for _ in range(count)]
        return tuple(np.stack(parts) for parts in zip(*clips))
