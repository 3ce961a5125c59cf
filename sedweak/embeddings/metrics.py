"""Quality of embeddings with numpy and scikit-learn only (no TensorFlow needed to score).

* :func:`nearest_centroid_accuracy`: Turpault et al.'s measure F -- a test point counts 1 when
  the nearest class centroid (computed on the training set) is its own class.
* :func:`query_by_example_map`: Jansen et al.'s retrieval test -- each example queries all
  the others ranked by cosine similarity; average precision of the same-class items, averaged
  per class and then over classes.
* :func:`shallow_classifier_map`: their classification test -- a shallow classifier on the
  frozen embeddings, one-vs-rest average precision per class.
* :func:`classifier_g_f1`: their classifier G (dense 32) on frozen embeddings, macro F1.
* :func:`tsne_png`: a t-SNE map coloured by class (matplotlib).
* :func:`centroid_monitor`: F on validation data after every epoch, as a Keras callback
  (an early-stopping / checkpoint monitor).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _unit(embeddings: np.ndarray) -> np.ndarray:
    embeddings = np.asarray(embeddings, np.float64)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (examples, dim), got shape {embeddings.shape}")
    if not np.isfinite(embeddings).all():
        raise ValueError("embeddings contain NaN or infinite values")
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def nearest_centroid_accuracy(train: np.ndarray, train_labels: Sequence, test: np.ndarray,
                              test_labels: Sequence) -> float:
    """Fraction of ``test`` whose nearest training-class centroid (Euclidean, L2-normalised
    embeddings) is its own class. A test class absent from training can never be right."""
    train, test = _unit(train), _unit(test)
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    if len(train) != len(train_labels) or len(test) != len(test_labels):
        raise ValueError("one label per embedding")
    if len(test) == 0 or len(train) == 0:
        raise ValueError("need at least one training and one test embedding")
    classes = np.unique(train_labels)
    centroids = np.stack([train[train_labels == c].mean(axis=0) for c in classes])
    distances = ((test[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    return float(np.mean(classes[np.argmin(distances, axis=1)] == test_labels))


def query_by_example_map(embeddings: np.ndarray, labels: Sequence) -> tuple[float, dict]:
    """(mAP over classes, {class: mean AP of its queries}) of cosine-ranked retrieval.

    Every example with at least one other example of its class is a query; the others are
    ranked by cosine similarity and scored by scikit-learn's average precision.
    """
    from sklearn.metrics import average_precision_score

    unit, labels = _unit(embeddings), np.asarray(labels)
    if len(unit) != len(labels):
        raise ValueError("one label per embedding")
    similarity = unit @ unit.T
    per_class: dict = {}
    for i in range(len(unit)):
        others = np.arange(len(unit)) != i
        relevant = labels[others] == labels[i]
        if not relevant.any():
            continue
        per_class.setdefault(labels[i].item(), []).append(average_precision_score(relevant, similarity[i, others]))
    if not per_class:
        raise ValueError("no class has two examples: nothing to retrieve")
    means = {c: float(np.mean(v)) for c, v in per_class.items()}
    return float(np.mean(list(means.values()))), means


def shallow_classifier_map(train: np.ndarray, train_labels: Sequence, test: np.ndarray, test_labels: Sequence,
                           kind: str = "logistic", seed: int = 0) -> tuple[float, dict]:
    """(macro mAP, {class: AP}) of a shallow classifier trained on frozen embeddings (Jansen
    et al.'s classification test): ``"logistic"`` (multinomial logistic regression) or
    ``"mlp"`` (one hidden layer of 512 ReLU units); the test scores are its class
    probabilities, ranked per class against every other test example (one-vs-rest AP)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = _unit(train), _unit(test)
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    if len(train) != len(train_labels) or len(test) != len(test_labels):
        raise ValueError("one label per embedding")
    if len(np.unique(train_labels)) < 2:
        raise ValueError("a classifier needs at least two training classes")
    if kind == "logistic":
        model = LogisticRegression(max_iter=2000, random_state=seed)
    elif kind == "mlp":
        model = MLPClassifier((512,), max_iter=500, random_state=seed)
    else:
        raise ValueError(f"kind must be 'logistic' or 'mlp', got {kind!r}")
    classifier = make_pipeline(StandardScaler(), model).fit(train, train_labels)
    scores = classifier.predict_proba(test)
    per_class = {c.item(): float(average_precision_score(test_labels == c, scores[:, i]))
                 for i, c in enumerate(classifier.classes_) if (test_labels == c).any()}
    if not per_class:
        raise ValueError("no test example belongs to a training class")
    return float(np.mean(list(per_class.values()))), per_class


def classifier_g_f1(train: np.ndarray, train_labels: Sequence, test: np.ndarray, test_labels: Sequence,
                    seed: int = 0) -> float:
    """Macro F1 on ``test`` of Turpault et al.'s classifier G trained on frozen embeddings:
    one dense layer of 32 units, then a softmax over classes (scikit-learn's MLPClassifier).
    Their G uses a leaky ReLU; scikit-learn offers ReLU, which is what runs here."""
    from sklearn.metrics import f1_score
    from sklearn.neural_network import MLPClassifier

    train, test = _unit(train), _unit(test)
    if len(np.unique(np.asarray(train_labels))) < 2:
        raise ValueError("a classifier needs at least two training classes")
    g = MLPClassifier((32,), max_iter=1000, random_state=seed).fit(train, np.asarray(train_labels))
    return float(f1_score(np.asarray(test_labels), g.predict(test), average="macro", zero_division=0))


def tsne_png(embeddings: np.ndarray, labels: Sequence, path, title: str = "", seed: int = 0):
    """A 2-D t-SNE map (cosine distances) of ``embeddings`` coloured by class, as a PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    unit, labels = _unit(embeddings), np.asarray(labels)
    if len(unit) < 3:
        raise ValueError("t-SNE needs at least 3 embeddings")
    points = TSNE(2, metric="cosine", init="random", random_state=seed,
                  perplexity=min(30.0, (len(unit) - 1) / 3)).fit_transform(unit)
    figure, axes = plt.subplots(figsize=(6, 5))
    for c in sorted(set(labels.tolist())):
        chosen = labels == c
        axes.scatter(points[chosen, 0], points[chosen, 1], s=12, label=str(c))
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(title)
    axes.legend(fontsize=7, loc="best", markerscale=1.5)
    figure.tight_layout()
    from sedweak.io_utils import atomic_write_bytes

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    return atomic_write_bytes(path, buffer.getvalue())


def centroid_monitor(reference, reference_labels: Sequence, validation, validation_labels: Sequence,
                     output: str | None = "embedding", batch_size: int = 32):
    """A Keras callback adding Turpault et al.'s F on validation data to each epoch's logs:
    ``val_centroid_f`` (nearest-centroid accuracy of ``validation`` against the class
    centroids of ``reference``, both embedded by the model being trained) and
    ``val_centroid_error`` = 1 - F, a loss-like value that early stopping and checkpoint
    selection can minimise (``ResumableCheckpoint(monitor=("val_centroid_error",))``).
    ``output``: the model's output to read (``None``: its only output). Added logs come
    before the callbacks listed after this one see them."""
    import keras

    def embed(model, x):
        out = model.predict(x, batch_size=batch_size, verbose=0)
        return np.asarray(out[output] if output is not None else out)

    class CentroidMonitor(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs is None:
                return
            value = nearest_centroid_accuracy(embed(self.model, reference), reference_labels,
                                              embed(self.model, validation), validation_labels)
            logs["val_centroid_f"], logs["val_centroid_error"] = value, 1.0 - value

    return CentroidMonitor()
