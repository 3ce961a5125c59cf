"""Transfer learning the scikit-learn way: shallow classifiers on frozen per-file vectors.

Pons & Favory's lab: embed each file once, then train a logistic regression, a linear SVM,
a k-NN or a small MLP on a few labelled examples per class. :func:`learning_curve` measures
how accuracy grows with the number ``n`` of labelled examples per class:

* Splits (:func:`cv_splits`): with predefined folds (UrbanSound8K style) each fold is the
  test set once and the training pool is every other fold (scikit-learn's
  ``PredefinedSplit`` semantics: files of one recording share a fold, so none leaks into its
  own test set); without, a seeded stratified k-fold.
* Draws (:func:`draw_per_class`): for each split, ``n`` and repeat, ``n`` files of each class
  drawn without replacement from the training pool, seeded by (seed, split, n, repeat).
  ``n = None`` is "all": the whole pool, drawn once.
* Scores on the split's test set: accuracy, macro F1 over the test classes, and macro
  one-vs-rest average precision (mAP) of the classifier's scores (probabilities, or the
  SVM's decision values: AP needs a ranking, not calibrated probabilities).

Every classifier sits in a Pipeline behind a StandardScaler: regularised linear models,
k-NN distances and MLP training all depend on the scale of each dimension, and MFCC
statistics span orders of magnitude. The scaler is fit on the split's whole training pool
(it needs no labels), the classifier on the drawn examples only (:func:`fit_on_draw`): fit
on one example per class, a scaler would blow every noise dimension up to unit variance.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from sedweak.labels import LabelError

CLASSIFIERS = ("logistic", "svm", "knn", "mlp")
DEFAULT_EXAMPLES_PER_CLASS = (1, 2, 5, 10, 20, None)  # None: every training example


@dataclass(frozen=True)
class TransferSettings:
    """What :func:`learning_curve` runs."""

    classifiers: tuple[str, ...] = CLASSIFIERS
    examples_per_class: tuple[int | None, ...] = DEFAULT_EXAMPLES_PER_CLASS
    repeats: int = 5             # draws per (split, n); "all" is drawn once
    stratified_folds: int = 5    # k of the stratified k-fold when the labels have no folds
    knn_neighbors: int = 5       # capped at n: 1-NN with one example per class
    mlp_hidden_units: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [c for c in self.classifiers if c not in CLASSIFIERS]
        if unknown or not self.classifiers:
            raise ValueError(f"classifiers must be among {CLASSIFIERS}, got {list(self.classifiers)}")
        if any(n is not None and n < 1 for n in self.examples_per_class) or not self.examples_per_class:
            raise ValueError(f"examples per class must be >= 1 (or all), got {list(self.examples_per_class)}")
        if self.repeats < 1 or self.stratified_folds < 2 or self.knn_neighbors < 1:
            raise ValueError("need repeats >= 1, stratified_folds >= 2 and knn_neighbors >= 1")


@dataclass(frozen=True)
class Split:
    """One train/test split: ``name`` (``fold 3``), indices into the labelled files."""

    name: str
    train: np.ndarray
    test: np.ndarray


def cv_splits(labels: Sequence[str], folds: Sequence[int] | None, stratified_folds: int = 5,
              seed: int = 0) -> list[Split]:
    """Predefined folds (each fold tested once, in fold order) or a seeded stratified k-fold."""
    labels = np.asarray(labels)
    if folds is not None:
        folds = np.asarray(folds)
        if len(np.unique(folds)) < 2:
            raise LabelError(f"all labelled files are in fold {folds[0]}: cross-validation needs two folds")
        return [Split(f"fold {f}", np.flatnonzero(folds != f), np.flatnonzero(folds == f)) for f in np.unique(folds)]
    from sklearn.model_selection import StratifiedKFold

    label, count = min(Counter(labels.tolist()).items(), key=lambda item: (item[1], item[0]))
    if count < stratified_folds:
        raise LabelError(f"class {label!r} has {count} labelled file(s), fewer than the {stratified_folds} folds "
                         f"of the stratified cross-validation: label more, or use fewer folds")
    splitter = StratifiedKFold(stratified_folds, shuffle=True, random_state=seed)
    return [Split(f"split {i + 1}", train, test)
            for i, (train, test) in enumerate(splitter.split(np.zeros(len(labels)), labels))]


def smallest_pool(labels: Sequence[str], splits: Sequence[Split]) -> tuple[int, str, str]:
    """(count, class, split) of the class with the fewest training examples in any split;
    every class must have at least one in every split."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    worst = (np.inf, "", "")
    for split in splits:
        counts = Counter(labels[split.train].tolist())
        for c in classes:
            if counts.get(c, 0) < worst[0]:
                worst = (counts.get(c, 0), str(c), split.name)
    if worst[0] == 0:
        raise LabelError(f"class {worst[1]!r} has no labelled file outside {worst[2]}: no classifier "
                         f"tested on {worst[2]} could know it")
    return int(worst[0]), worst[1], worst[2]


def feasible_sizes(labels: Sequence[str], splits: Sequence[Split], sizes: Sequence[int | None],
                   strict: bool) -> tuple[tuple[int | None, ...], list[str]]:
    """(the sizes every split can draw, notes on those left out). ``strict``: a size too large
    is a :class:`LabelError` naming the class and split instead of a note."""
    count, label, split = smallest_pool(labels, splits)
    kept, notes = [], []
    for n in sizes:
        if n is None or n <= count:
            kept.append(n)
            continue
        message = (f"n={n} examples per class: class {label!r} has only {count} training file(s) "
                   f"when testing on {split}")
        if strict:
            raise LabelError(message)
        notes.append(message + ": left out")
    return tuple(kept), notes


def draw_per_class(labels: Sequence[str], pool: np.ndarray, n: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``n`` files of each class of ``labels[pool]``, drawn without
    replacement (``None``: all of ``pool``)."""
    if n is None:
        return np.sort(pool)
    labels = np.asarray(labels)
    chosen = [rng.choice(pool[labels[pool] == c], n, replace=False) for c in np.unique(labels[pool])]
    return np.sort(np.concatenate(chosen))


def make_classifier(name: str, settings: TransferSettings, examples_per_class: int):
    """A scikit-learn Pipeline (StandardScaler + ``name``); k-NN's k is capped at the
    smallest class's training count."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    models = {
        "logistic": lambda: LogisticRegression(max_iter=2000, random_state=settings.seed),
        "svm": lambda: LinearSVC(C=1.0, max_iter=5000, random_state=settings.seed),
        "knn": lambda: KNeighborsClassifier(min(settings.knn_neighbors, examples_per_class), weights="distance"),
        "mlp": lambda: MLPClassifier((settings.mlp_hidden_units,), max_iter=500, random_state=settings.seed),
    }
    return make_pipeline(StandardScaler(), models[name]())


def fit_on_draw(pipeline, x_pool: np.ndarray, x_train: np.ndarray, y_train: np.ndarray):
    """``pipeline`` (scaler, classifier) with the scaler fit on ``x_pool`` (N, dim) -- the
    unlabelled training pool -- and the classifier on the scaled draw ``x_train``."""
    from sklearn.exceptions import ConvergenceWarning

    scaler, classifier = pipeline[0], pipeline[-1]
    scaler.fit(x_pool)
    with warnings.catch_warnings():   # tiny training sets: a few iterations short is fine
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier.fit(scaler.transform(x_train), y_train)
    return pipeline


def class_scores(classifier, x: np.ndarray) -> np.ndarray:
    """(N, classes) ranking scores in ``classifier.classes_`` order: probabilities where the
    model has them, else decision values."""
    if hasattr(classifier, "predict_proba"):
        return np.asarray(classifier.predict_proba(x))
    scores = np.asarray(classifier.decision_function(x))
    return np.stack([-scores, scores], axis=1) if scores.ndim == 1 else scores


def score(classifier, x_test: np.ndarray, y_test: np.ndarray) -> dict[str, float]:
    """Accuracy, macro F1 (over the test classes) and mAP (one-vs-rest AP per test class)."""
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score

    predicted = classifier.predict(x_test)
    scores = class_scores(classifier, x_test)
    present = np.unique(y_test)
    ap = [average_precision_score(y_test == c, scores[:, i]) for i, c in enumerate(classifier.classes_) if c in present]
    return {"accuracy": float(accuracy_score(y_test, predicted)),
            "macro_f1": float(f1_score(y_test, predicted, labels=present, average="macro", zero_division=0)),
            "map": float(np.mean(ap))}


def learning_curve(vectors: np.ndarray, labels: Sequence[str], splits: Sequence[Split],
                   settings: TransferSettings, sizes: Sequence[int | None]) -> list[dict]:
    """One record per (split, n, repeat, classifier): ``{"split", "n", "repeat", "classifier",
    "train_files", "accuracy", "macro_f1", "map"}``; ``vectors`` (N, dim), ``labels`` (N,);
    ``sizes``: examples per class (None: all), each feasible in every split."""
    from sedweak.collections.vectors import single_threaded

    x, y = np.asarray(vectors, np.float64), np.asarray(labels)
    with single_threaded():
        return _learning_curve(x, y, splits, settings, sizes)


def _learning_curve(x: np.ndarray, y: np.ndarray, splits: Sequence[Split], settings: TransferSettings,
                    sizes: Sequence[int | None]) -> list[dict]:
    records = []
    for split_index, split in enumerate(splits):
        smallest = min(Counter(y[split.train].tolist()).values())
        for n in sizes:
            for repeat in range(1 if n is None else settings.repeats):
                rng = np.random.default_rng([settings.seed, split_index, n or 0, repeat])
                train = draw_per_class(y, split.train, n, rng)
                for name in settings.classifiers:
                    classifier = fit_on_draw(make_classifier(name, settings, n or smallest), x[split.train],
                                             x[train], y[train])
                    records.append({"split": split.name, "n": n, "repeat": repeat, "classifier": name,
                                    "train_files": len(train), **score(classifier, x[split.test], y[split.test])})
    return records


@dataclass(frozen=True)
class TransferResult:
    """What :func:`run_transfer` measured, with what it left out and why."""

    records: list[dict]                 # :func:`learning_curve`'s
    sizes: tuple[int | None, ...]       # examples per class measured (None: all)
    splits: tuple[str, ...]
    class_counts: dict[str, int]        # labelled files per class
    notes: tuple[str, ...]              # sizes left out
    dropped: tuple[str, ...]            # label rows whose file could not be read
    skipped: tuple[tuple[str, str], ...]  # (path, reason) of unreadable files
    source: str
    labels_source: str
    settings: TransferSettings


def run_transfer(file_vectors, table, settings: TransferSettings, strict_sizes: bool = False) -> TransferResult:
    """Learning curves of ``file_vectors`` (:class:`~sedweak.collections.vectors.FileVectors`)
    labelled by ``table`` (:class:`~sedweak.collections.labels.LabelTable`); labelled files
    that could not be read are dropped and reported. ``strict_sizes``: an ``n`` some class
    cannot supply is an error, not a note."""
    from sedweak.collections.labels import match_files

    skipped_keys = [path for path, _ in file_vectors.skipped]
    rows, indices, dropped = match_files(table, file_vectors.files, skipped_keys)
    labels = np.asarray([table.labels[r] for r in rows])
    folds = None if table.folds is None else [table.folds[r] for r in rows]
    if len(np.unique(labels)) < 2:
        raise LabelError(f"{table.source}: a classifier needs two classes, found {sorted(set(labels.tolist()))}")
    splits = cv_splits(labels, folds, settings.stratified_folds, settings.seed)
    sizes, notes = feasible_sizes(labels, splits, settings.examples_per_class, strict_sizes)
    if not sizes:
        raise LabelError(f"{table.source}: no requested number of examples per class fits: {'; '.join(notes)}")
    records = learning_curve(file_vectors.vectors[indices], labels, splits, settings, sizes)
    return TransferResult(records, sizes, tuple(s.name for s in splits), dict(sorted(Counter(labels.tolist()).items())),
                          tuple(notes), tuple(dropped), tuple(file_vectors.skipped), file_vectors.source,
                          table.source, settings)
