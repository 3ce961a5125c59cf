"""Batches for embedding losses (``keras.utils.PyDataset``, seeded by (seed, epoch, batch)).

* :class:`EpisodeBatches`: prototypical episodes -- ``n_way`` distinct classes x ``n_points``
  examples each, laid out class by class as :class:`sedweak.embeddings.losses.PrototypicalLoss`
  reads them.
* :class:`ClassBalancedBatches`: ``classes_per_batch`` classes x ``per_class`` examples, so
  that :class:`sedweak.embeddings.losses.TripletLoss` always finds positives and negatives in
  the batch (a plain shuffled batch of many classes often holds no pair of one class).

A class with fewer examples than a batch asks for is drawn with replacement (its points
then repeat inside the episode); a class with one example can never form a pair and is
refused.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np


class EpochBatches(keras.utils.PyDataset):
    """A fixed number of batches per epoch and an epoch counter that seeds them (a resumed
    run calls :meth:`set_epoch` to serve that epoch's batches again)."""

    batches_per_epoch: int = 1
    epoch: int = 0

    def __len__(self) -> int:
        return self.batches_per_epoch

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)


class _ClassGroupBatches(EpochBatches):
    def __init__(self, features, labels: Sequence, classes_per_batch: int, per_class: int, batches_per_epoch: int,
                 seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        labels = np.asarray(labels)
        if len(features) != len(labels):
            raise ValueError(f"{len(features)} examples but {len(labels)} labels")
        self.classes = np.unique(labels)
        self.members = {c: np.flatnonzero(labels == c) for c in self.classes}
        lonely = [c.item() for c in self.classes if len(self.members[c]) < 2]
        if lonely:
            raise ValueError(f"classes {lonely} have a single example: they can form no pair")
        if classes_per_batch > len(self.classes) or classes_per_batch < 2:
            raise ValueError(f"need 2 <= classes per batch <= {len(self.classes)} classes, got {classes_per_batch}")
        if per_class < 2 or batches_per_epoch < 1:
            raise ValueError("need per_class >= 2 and batches_per_epoch >= 1")
        self.features, self.labels = features, labels
        self.classes_per_batch, self.per_class = classes_per_batch, per_class
        self.batches_per_epoch, self.seed, self.epoch = batches_per_epoch, seed, 0
        self.class_ids = {c: i for i, c in enumerate(self.classes)}

    def rows(self, index: int) -> np.ndarray:
        """Example indices of batch ``index``, class by class."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        chosen = rng.choice(len(self.classes), self.classes_per_batch, replace=False)
        out = []
        for k in chosen:
            members = self.members[self.classes[k]]
            out.append(rng.choice(members, self.per_class, replace=len(members) < self.per_class))
        return np.concatenate(out)

    def __getitem__(self, index: int):
        rows = self.rows(index)
        x = np.stack([np.asarray(self.features[r], np.float32) for r in rows])
        y = np.array([self.class_ids[c] for c in self.labels[rows]], np.int32)
        return x, y


class EpisodeBatches(_ClassGroupBatches):
    """Prototypical episodes: ``n_way`` classes x ``n_points`` (support first, then queries)."""

    def __init__(self, features, labels: Sequence, n_way: int, n_points: int, episodes_per_epoch: int,
                 seed: int = 0, **kwargs):
        super().__init__(features, labels, n_way, n_points, episodes_per_epoch, seed, **kwargs)


class ClassBalancedBatches(_ClassGroupBatches):
    """``classes_per_batch`` classes x ``per_class`` examples: triplets always have pairs."""
