"""Episode and class-balanced samplers, and a tiny embedding that learns with each loss."""

from __future__ import annotations

import numpy as np
import pytest

from sedweak.embeddings.losses import PrototypicalLoss, TripletLoss
from sedweak.embeddings.metrics import nearest_centroid_accuracy
from sedweak.embeddings.sampling import ClassBalancedBatches, EpisodeBatches


def _clusters(seed=0, per_class=20, classes=4, dim=8):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)) * 3
    labels = np.repeat([f"c{k}" for k in range(classes)], per_class)
    x = centres[np.repeat(np.arange(classes), per_class)] + rng.standard_normal((classes * per_class, dim))
    return x.astype(np.float32), labels


def test_episodes_are_class_by_class_seeded_and_change_with_the_epoch():
    x, labels = _clusters()
    batches = EpisodeBatches(x, labels, n_way=3, n_points=5, episodes_per_epoch=4, seed=1)
    xb, yb = batches[0]
    assert xb.shape == (15, 8) and yb.shape == (15,)
    groups = yb.reshape(3, 5)
    assert (groups == groups[:, :1]).all() and len(set(groups[:, 0])) == 3     # 3 distinct classes, 5 each
    np.testing.assert_array_equal(batches.rows(0), EpisodeBatches(x, labels, 3, 5, 4, seed=1).rows(0))
    first = batches.rows(0)
    batches.on_epoch_end()
    assert not np.array_equal(first, batches.rows(0))


def test_samplers_refuse_what_cannot_make_pairs():
    x, labels = _clusters(classes=3)
    with pytest.raises(ValueError, match="classes per batch"):
        EpisodeBatches(x, labels, n_way=4, n_points=3, episodes_per_epoch=1)
    with pytest.raises(ValueError, match="single example"):
        ClassBalancedBatches(x[:21], labels[:21], 2, 2, 1)      # c1 has one example in the first 21
    with pytest.raises(ValueError, match="60 examples but 3 labels"):
        ClassBalancedBatches(x, labels[:3], 2, 2, 1)


@pytest.mark.parametrize("loss, batches", [
    (PrototypicalLoss(n_way=4, n_support=2), lambda x, y: EpisodeBatches(x, y, 4, 6, 20, seed=0)),
    (TripletLoss(margin=0.5, mining="semihard"), lambda x, y: ClassBalancedBatches(x, y, 4, 4, 20, seed=0)),
])
def test_an_embedding_learns_with_each_loss(loss, batches):
    import keras

    x, labels = _clusters()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(4),
                              keras.layers.UnitNormalization()])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss)
    before = float(model.evaluate(batches(x, labels), verbose=0))
    model.fit(batches(x, labels), epochs=3, verbose=0)
    after = float(model.evaluate(batches(x, labels), verbose=0))
    assert after < 0.5 * before
    test_x, test_labels = _clusters(seed=0)
    emb = model.predict(test_x, verbose=0)
    assert nearest_centroid_accuracy(emb, test_labels, emb, test_labels) > 0.95
