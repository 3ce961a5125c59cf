"""Losses for the strong (frame) and weak (clip) outputs, with ``keras.ops`` only.

Strong targets may contain ``MASKED`` (-1) where a frame has no strong label: a
clip with weak labels only, trained the DESED way. Such entries add nothing to the
loss. The paper's way (clip label repeated on every frame) needs no mask; see
``loss.weak_clip_strong_target`` and :func:`sedweak.training.targets.build_targets`.
"""

from __future__ import annotations

import keras
from keras import ops

MASKED = -1.0


@keras.saving.register_keras_serializable(package="sedweak")
class MaskedBinaryCrossentropy(keras.losses.Loss):
    """BCE averaged over the unmasked entries of each example.

    y_true, y_pred: (batch, ..., classes); y_true in {0, 1} or MASKED.
    Returns (batch,) -- an example with every entry masked contributes 0.
    """

    def __init__(self, epsilon: float = 1e-7, name: str = "masked_bce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.epsilon = epsilon

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        valid = ops.cast(ops.greater_equal(y_true, 0.0), y_pred.dtype)
        target = y_true * valid
        p = ops.clip(y_pred, self.epsilon, 1.0 - self.epsilon)
        bce = -(target * ops.log(p) + (1.0 - target) * ops.log(1.0 - p)) * valid
        axes = tuple(range(1, len(y_pred.shape)))
        return ops.sum(bce, axis=axes) / ops.maximum(ops.sum(valid, axis=axes), 1.0)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def strong_weak_losses(strong_weight: float, weak_weight: float, embedding_weight: float = 0.0,
                       embedding_margin: float = 0.5, embedding_mining: str = "semihard") -> tuple[dict, dict]:
    """``(loss, loss_weights)`` dicts for ``model.compile`` on the CRNN's outputs; the
    embedding gets a :class:`~sedweak.embeddings.losses.TripletLoss` on the weak tags when
    ``embedding_weight`` > 0 (its target is then the weak target), else no loss."""
    embedding = None
    if embedding_weight > 0:
        from sedweak.embeddings.losses import TripletLoss

        embedding = TripletLoss(embedding_margin, embedding_mining, name="embedding_triplet")
    losses = {"strong": MaskedBinaryCrossentropy(name="strong_bce"),
              "weak": MaskedBinaryCrossentropy(name="weak_bce"),
              "embedding": embedding}
    weights = {"strong": float(strong_weight), "weak": float(weak_weight), "embedding": float(embedding_weight)}
    return losses, weights
