"""Embedding quality measures (numpy / scikit-learn) on hand-built points."""

from __future__ import annotations

import numpy as np
import pytest

from sedweak.embeddings.metrics import (
    nearest_centroid_accuracy,
    query_by_example_map,
    shallow_classifier_map,
    tsne_png,
)


def test_nearest_centroid_accuracy_by_hand():
    train = np.array([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0], [0.2, 1.0]])
    test = np.array([[1.0, 0.1], [0.1, 1.0], [1.0, 0.05]])
    assert nearest_centroid_accuracy(train, ["a", "a", "b", "b"], test, ["a", "b", "b"]) == pytest.approx(2 / 3)
    # scale does not matter (embeddings are L2-normalised first); an unknown test class never scores
    assert nearest_centroid_accuracy(5 * train, ["a", "a", "b", "b"], test, ["a", "c", "a"]) == pytest.approx(2 / 3)


def test_query_by_example_map_by_hand():
    # Dog queries, others ranked by cosine: [1, 0] -> dog (0.995), cat (0.8), dog (0.6): AP
    # (1 + 2/3) / 2 = 5/6; [0.995, 0.1] -> dog, cat (0.856), dog (0.677): 5/6; [0.6, 0.8] ->
    # cat (0.96), dog (0.677), dog (0.6): (1/2 + 2/3) / 2 = 7/12. Dog: 27/36; cat has no pair.
    points = np.array([[1.0, 0.0], [0.995, 0.0999], [0.8, 0.6], [0.6, 0.8]])
    mean_ap, per_class = query_by_example_map(points, ["dog", "dog", "cat", "dog"])
    assert per_class == {"dog": pytest.approx(27 / 36)} and mean_ap == pytest.approx(0.75)
    separated = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    mean_ap, per_class = query_by_example_map(separated, [0, 0, 1, 1])
    assert mean_ap == 1.0 and per_class == {0: 1.0, 1: 1.0}


def test_bad_embeddings_are_refused():
    with pytest.raises(ValueError, match="NaN or infinite"):
        query_by_example_map(np.array([[np.nan, 1.0], [1.0, 0.0]]), [0, 0])
    with pytest.raises(ValueError, match="no class has two examples"):
        query_by_example_map(np.eye(3), [0, 1, 2])
    with pytest.raises(ValueError, match="one label per embedding"):
        nearest_centroid_accuracy(np.eye(2), [0], np.eye(2), [0, 1])


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_shallow_classifier_map_separable_and_uninformative(kind):
    """Two classes on opposite axes: every test example ranked right (mAP 1). Embeddings that
    carry no class (the same vector for all) rank the classes by chance: AP = class prior."""
    rng = np.random.default_rng(0)
    a = np.array([1.0, 0.0]) + 0.05 * rng.standard_normal((20, 2))
    b = np.array([0.0, 1.0]) + 0.05 * rng.standard_normal((20, 2))
    train, labels = np.concatenate([a[:10], b[:10]]), ["a"] * 10 + ["b"] * 10
    test, test_labels = np.concatenate([a[10:], b[10:13]]), ["a"] * 10 + ["b"] * 3
    value, per_class = shallow_classifier_map(train, labels, test, test_labels, kind=kind)
    assert value == pytest.approx(1.0) and per_class == pytest.approx({"a": 1.0, "b": 1.0})
    flat = np.ones((13, 2))
    _, per_class = shallow_classifier_map(train, labels, flat, test_labels, kind=kind)
    assert per_class == pytest.approx({"a": 10 / 13, "b": 3 / 13})
    with pytest.raises(ValueError, match="two training classes"):
        shallow_classifier_map(train[:10], labels[:10], test, test_labels, kind=kind)


def test_tsne_png_writes_an_image(tmp_path):
    rng = np.random.default_rng(0)
    embeddings = np.concatenate([rng.normal(0, 1, (8, 4)) + 5, rng.normal(0, 1, (8, 4)) - 5])
    path = tsne_png(embeddings, ["x"] * 8 + ["y"] * 8, tmp_path / "map.png", title="two classes")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="at least 3"):
        tsne_png(embeddings[:2], ["x", "y"], tmp_path / "no.png")


def test_centroid_monitor_logs_f_each_epoch_for_early_stopping():
    """Each epoch's logs carry F (the nearest-centroid accuracy of the model's embeddings at
    that epoch) and 1 - F, before the callbacks listed after the monitor read them."""
    import keras

    from sedweak.embeddings.metrics import centroid_monitor

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(2, 0.3, (20, 4)), rng.normal(-2, 0.3, (20, 4))]).astype("float32")
    labels = np.array([0] * 20 + [1] * 20)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, {"embedding": keras.layers.Dense(2, name="embedding")(inputs)})
    model.compile(optimizer="adam", loss={"embedding": "mse"})
    seen = []
    watcher = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(dict(logs)))
    monitor = centroid_monitor(x[::2], labels[::2], x[1::2], labels[1::2])
    model.fit(x, {"embedding": np.zeros((40, 2), "float32")}, epochs=2, verbose=0, callbacks=[monitor, watcher])
    assert len(seen) == 2 and all(0.0 <= s["val_centroid_f"] <= 1.0 for s in seen)
    assert all(s["val_centroid_error"] == pytest.approx(1.0 - s["val_centroid_f"]) for s in seen)
    expected = nearest_centroid_accuracy(model.predict(x[::2], verbose=0)["embedding"], labels[::2],
                                         model.predict(x[1::2], verbose=0)["embedding"], labels[1::2])
    assert seen[-1]["val_centroid_f"] == pytest.approx(expected)


def test_classifier_g_separable_gives_f1_one_and_needs_two_classes():
    from sedweak.embeddings.metrics import classifier_g_f1

    rng = np.random.default_rng(0)
    a = np.array([1.0, 0.0, 0.0]) + 0.05 * rng.standard_normal((30, 3))
    b = np.array([0.0, 1.0, 0.0]) + 0.05 * rng.standard_normal((30, 3))
    train, labels = np.concatenate([a[:20], b[:20]]), ["a"] * 20 + ["b"] * 20
    assert classifier_g_f1(train, labels, np.concatenate([a[20:], b[20:]]), ["a"] * 10 + ["b"] * 10) == 1.0
    # a test set whose every example sits on class a's side, half labelled b: F1 of (a: 2/3, b: 0)
    assert classifier_g_f1(train, labels, a[20:], ["a"] * 5 + ["b"] * 5) == pytest.approx((2 / 3 + 0) / 2)
    with pytest.raises(ValueError, match="two training classes"):
        classifier_g_f1(train[:20], labels[:20], a[20:], ["a"] * 10)
