"""Embedding losses with ``keras.ops`` only (any backend): triplet and prototypical.

Both take ``y_true`` = integer class ids ``(batch,)`` (one class per example, the WAA
setting of Turpault et al.) and ``y_pred`` = L2-normalised embeddings ``(batch, dim)``;
distances are squared Euclidean, as in their equations (2)-(4).

:class:`TripletLoss` also takes multi-label clip tags, ``y_true`` = ``(batch, classes)``
in {0, 1} (a soundscape's weak labels, the CRNN's joint training): two clips are a positive
pair when they share a tag and negatives when they share none; a row with a MASKED (< 0)
entry (an unlabelled clip) is neither. ``(batch, 1)`` is read as class ids.

* :class:`TripletLoss` mines the triplets inside the batch: every (anchor, positive) pair
  of one class, with its negative chosen by ``mining``:

  - ``"random"``: the expected hinge over a uniformly random negative, i.e. the mean over
    all of the anchor's negatives (deterministic, so a batch always costs the same);
  - ``"semihard"``: the closest negative that is still farther than the positive
    (FaceNet); an anchor without one takes its farthest negative (TensorFlow Addons' rule);
  - ``"hard"``: the closest negative.

  ``[d(a, p) - d(a, n) + margin]_+`` averaged over the pairs; a batch without a pair costs 0.

* :class:`PrototypicalLoss` reads the batch as one episode of ``J`` classes x ``m`` points
  laid out class by class (``sedweak.embeddings.sampling.EpisodeBatches`` builds them): the
  first ``n_support`` points of each class make its prototype (their mean), the other
  ``m - n_support`` are queries, scored by a softmax over negative squared distances to
  the prototypes; the loss is the queries' mean cross-entropy.
"""

from __future__ import annotations

import keras
from keras import ops

from sedweak.config.schema import TRIPLET_MININGS as MININGS


def pairwise_squared_distances(embeddings):
    """(batch, dim) -> (batch, batch) squared Euclidean distances, >= 0."""
    squared = ops.sum(ops.square(embeddings), axis=1)
    gram = ops.matmul(embeddings, ops.transpose(embeddings))
    return ops.maximum(ops.expand_dims(squared, 1) - 2.0 * gram + ops.expand_dims(squared, 0), 0.0)


def pair_relations(y_true):
    """(same, different): (batch, batch) booleans from class ids ``(batch,)`` / ``(batch, 1)``
    (same id / another id) or multi-label tags ``(batch, classes)`` (a shared tag / both
    labelled and none shared; rows with a MASKED entry are in neither)."""
    if len(y_true.shape) == 2 and y_true.shape[-1] is not None and y_true.shape[-1] > 1:
        tags = ops.cast(ops.greater(y_true, 0.5), "float32")                   # (B, C)
        known = ops.all(ops.greater_equal(y_true, 0.0), axis=1)                # (B,)
        both = ops.logical_and(ops.expand_dims(known, 1), ops.expand_dims(known, 0))
        shared = ops.greater(ops.matmul(tags, ops.transpose(tags)), 0.0)
        return ops.logical_and(shared, both), ops.logical_and(ops.logical_not(shared), both)
    labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
    same = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0))
    return same, ops.logical_not(same)


@keras.saving.register_keras_serializable(package="sedweak")
class TripletLoss(keras.losses.Loss):
    """Batch-mined triplet loss (module docstring). Returns a scalar per batch."""

    def __init__(self, margin: float = 0.5, mining: str = "semihard", name: str = "triplet", **kwargs):
        super().__init__(name=name, reduction=None, **kwargs)
        if mining not in MININGS:
            raise ValueError(f"mining must be one of {MININGS}, got {mining!r}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin, self.mining = float(margin), mining

    def call(self, y_true, y_pred):
        d = pairwise_squared_distances(ops.cast(y_pred, "float32"))
        same, different = pair_relations(y_true)
        eye = ops.cast(ops.eye(ops.shape(d)[0]), "bool")
        positive = ops.logical_and(same, ops.logical_not(eye))                 # (a, p)
        negative = ops.cast(different, "float32")                              # (a, n)
        has_negative = ops.sum(negative, axis=1, keepdims=True) > 0            # (a, 1)
        d_ap = ops.expand_dims(d, 2)                                           # (a, p, 1)
        d_an = ops.expand_dims(d, 1)                                           # (a, 1, n)
        neg = ops.expand_dims(negative, 1)                                     # (a, 1, n)
        big = ops.max(d) + 1.0
        if self.mining == "random":
            hinge = ops.relu(d_ap - d_an + self.margin) * neg
            per_pair = ops.sum(hinge, axis=2) / ops.maximum(ops.sum(neg, axis=2), 1.0)
        else:
            closest = ops.min(d_an + (1.0 - neg) * big, axis=2)               # (a, 1): hardest
            if self.mining == "hard":
                chosen = closest
            else:
                outside = ops.logical_and(ops.greater(d_an, d_ap), neg > 0)   # (a, p, n): semi-hard
                semihard = ops.min(ops.where(outside, d_an, big), axis=2)      # (a, p)
                farthest = ops.max(d_an * neg, axis=2)                         # (a, 1)
                chosen = ops.where(ops.any(outside, axis=2), semihard, farthest)
            per_pair = ops.relu(d - chosen + self.margin)                      # (a, p)
        valid = ops.cast(ops.logical_and(positive, has_negative), "float32")
        return ops.sum(per_pair * valid) / ops.maximum(ops.sum(valid), 1.0)

    def get_config(self):
        return {"margin": self.margin, "mining": self.mining, "name": self.name}


@keras.saving.register_keras_serializable(package="sedweak")
class PrototypicalLoss(keras.losses.Loss):
    """Episode loss of a prototypical network (module docstring). Returns a scalar per batch.

    Args:
        n_way: classes per episode (J); n_support: support points per class (m_s); the
            batch size must be J x m with m > n_support.
    """

    def __init__(self, n_way: int, n_support: int, name: str = "prototypical", **kwargs):
        super().__init__(name=name, reduction=None, **kwargs)
        if n_way < 2 or n_support < 1:
            raise ValueError(f"need n_way >= 2 and n_support >= 1, got {n_way}, {n_support}")
        self.n_way, self.n_support = int(n_way), int(n_support)

    def call(self, y_true, y_pred):
        embeddings = ops.cast(y_pred, "float32")
        dim = ops.shape(embeddings)[-1]
        episode = ops.reshape(embeddings, (self.n_way, -1, dim))               # (J, m, D)
        prototypes = ops.mean(episode[:, :self.n_support], axis=1)             # (J, D)
        queries = ops.reshape(episode[:, self.n_support:], (-1, dim))          # (J * m_q, D)
        d = (ops.expand_dims(ops.sum(ops.square(queries), axis=1), 1)
             - 2.0 * ops.matmul(queries, ops.transpose(prototypes))
             + ops.expand_dims(ops.sum(ops.square(prototypes), axis=1), 0))    # (J * m_q, J)
        m_query = ops.shape(queries)[0] // self.n_way
        target = ops.repeat(ops.arange(self.n_way), m_query)
        log_p = ops.log_softmax(-d, axis=1)
        picked = ops.take_along_axis(log_p, ops.expand_dims(target, 1), axis=1)
        return -ops.mean(picked)

    def get_config(self):
        return {"n_way": self.n_way, "n_support": self.n_support, "name": self.name}
