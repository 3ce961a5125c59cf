"""Training of the WAA study's models (:mod:`sedweak.embeddings.waa`): E by each method, G.

Every fit keeps the weights of its best validation epoch (Keras ``EarlyStopping`` with
``restore_best_weights``): E on ``val_centroid_error`` (1 - Turpault et al.'s F of the
valid segments against the train centroids) for triplets and prototypes, the end-to-end
classifier and G on their validation cross-entropy.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from sedweak.config import Config
from sedweak.embeddings.waa import Segments, one_hot
from sedweak.training.input_pipeline import steady_prefetch

log = logging.getLogger(__name__)

CENTROID_REFERENCE_MAX = 400   # train segments embedded each epoch for the centroid monitor
G_PATIENCE_EPOCHS = 20


def build_embedding(config: Config, n_mels: int):
    from sedweak.embeddings.models import build_patch_embedding

    waa = config.waa
    return build_patch_embedding(n_mels, waa.embedding_dim, waa.filters, dropout_rate=waa.dropout_rate)


def embed(embedding, features: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(clips, frames, n_mels) -> (clips, embedding_dim) unit vectors."""
    return np.asarray(embedding.predict(features, batch_size=batch_size, verbose=0)["embedding"])


def _epochs(config: Config) -> int:
    return 1 if config.train.fast_dev_run else config.train.epochs


def _callbacks(config: Config, workdir: Path, monitor: str):
    import keras

    return [keras.callbacks.EarlyStopping(monitor=monitor, mode="min", restore_best_weights=True,
                                          patience=config.train.early_stopping_patience_epochs),
            keras.callbacks.CSVLogger(str(workdir / "history.csv"))]


def _epochs_run(history) -> int:
    return len(history.history.get("loss", []))


def train_embedding(config: Config, train: Segments, valid: Segments, num_classes: int, workdir: Path,
                    verbose: int = 1):
    """E trained by ``config.waa.method``. Returns (E, G or None, epochs run): the classifier
    trains G with E; the other methods leave it to :func:`train_g`."""
    import keras

    if config.waa.method == "classifier":
        return _train_classifier(config, train, valid, num_classes, workdir, verbose)
    from sedweak.embeddings.losses import PrototypicalLoss, TripletLoss
    from sedweak.embeddings.metrics import centroid_monitor
    from sedweak.embeddings.sampling import ClassBalancedBatches, EpisodeBatches

    waa, seed = config.waa, config.train.seed
    embedding = build_embedding(config, train.features.shape[2])
    batches_per_epoch = 2 if config.train.fast_dev_run else waa.batches_per_epoch
    pairable = _pairable(train)
    features, labels, n_classes = train.features[pairable], train.labels[pairable], len(set(train.labels[pairable]))
    if waa.method == "triplet":
        batches = ClassBalancedBatches(features, labels, n_classes, waa.per_class, batches_per_epoch, seed)
        loss = TripletLoss(waa.margin, waa.mining)
    else:
        batches = EpisodeBatches(features, labels, n_classes, waa.episode_points, batches_per_epoch, seed)
        loss = PrototypicalLoss(n_classes, waa.episode_support)
    trainable = keras.Model(embedding.input, embedding.output["embedding"])
    trainable.compile(optimizer=keras.optimizers.Adam(config.train.learning_rate), loss=loss,
                      jit_compile=config.train.jit_compile)
    reference = np.random.default_rng(seed).permutation(len(train.labels))[:CENTROID_REFERENCE_MAX]
    monitor = centroid_monitor(train.features[reference], train.labels[reference], valid.features, valid.labels,
                               output=None)
    with steady_prefetch():
        history = trainable.fit(batches, epochs=_epochs(config), shuffle=False, verbose=verbose,
                                callbacks=[monitor, *_callbacks(config, workdir, "val_centroid_error")])
    return embedding, None, _epochs_run(history)


def _pairable(train: Segments) -> np.ndarray:
    """Rows of the classes with two segments or more: a lone segment forms no positive pair
    (left out of triplets and episodes, with a warning; G still sees it)."""
    from sedweak.errors import DataError

    counts = np.bincount(train.labels)
    lonely = np.flatnonzero(counts == 1)
    if len(lonely):
        log.warning("class ids %s have one training segment each: left out of the embedding batches", lonely.tolist())
    keep = counts[train.labels] >= 2
    if len(set(train.labels[keep])) < 2:
        raise DataError("triplets and prototypes need two classes with two training segments or more")
    return keep


def _train_classifier(config: Config, train: Segments, valid: Segments, num_classes: int, workdir: Path,
                      verbose: int):
    import keras

    from sedweak.embeddings.models import build_tagger

    embedding = build_embedding(config, train.features.shape[2])
    tagger = build_tagger(embedding, num_classes)
    trainable = keras.Model(tagger.input, tagger.output["tags"])
    trainable.compile(optimizer=keras.optimizers.Adam(config.train.learning_rate), loss="binary_crossentropy",
                      jit_compile=config.train.jit_compile)
    limit = 2 * config.train.batch_size if config.train.fast_dev_run else None
    history = trainable.fit(train.features[:limit], one_hot(train.labels[:limit], num_classes),
                            batch_size=config.train.batch_size, epochs=_epochs(config), verbose=verbose,
                            validation_data=(valid.features, one_hot(valid.labels, num_classes)),
                            callbacks=_callbacks(config, workdir, "val_loss"))
    return embedding, tagger.get_layer("g"), _epochs_run(history)


def train_g(config: Config, train_vectors: np.ndarray, train_labels: np.ndarray, valid_vectors: np.ndarray,
            valid_labels: np.ndarray, num_classes: int):
    """G on frozen embeddings (binary cross-entropy, the best validation epoch kept)."""
    import keras

    from sedweak.embeddings.models import build_g

    g = build_g(train_vectors.shape[1], num_classes)
    g.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=G_PATIENCE_EPOCHS, restore_best_weights=True)
    g.fit(train_vectors, one_hot(train_labels, num_classes), batch_size=32, verbose=0,
          epochs=2 if config.train.fast_dev_run else config.waa.g_epochs,
          validation_data=(valid_vectors, one_hot(valid_labels, num_classes)), callbacks=[stop])
    return g
