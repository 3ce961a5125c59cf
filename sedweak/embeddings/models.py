"""The embedding CNN of Turpault et al. (E) and their small classifier (G).

E: the input is cut into non-overlapping 200 ms patches (20 frames at a 10 ms hop) and
each patch goes through the CNN on its own: four conv blocks
(:class:`sedweak.models.layers.ConvBlock`: conv, batch norm, ReLU, pooling) whose time
pooling multiplies to 20, then a dense layer to ``embedding_dim`` (130). The patch vectors
are averaged and L2-normalised. A 200 ms input gives one patch, a 1 s input five, averaged
-- the paper's rule for longer segments (so a 1 s embedding is exactly the normalised mean
of its five patch vectors). The paper fixes the depth (4), the patch
(200 ms) and the size (130) but not the filter counts: 64-64-128-128 here, with dropout 0.1.

G: dense 32 with leaky ReLU, then one sigmoid per class.

Outputs are dicts with fixed keys: ``{"embedding"}`` for E, ``{"embedding", "tags"}`` for
the end-to-end classifier E + G.
"""

from __future__ import annotations

import keras
from keras import layers

from sedweak.models.layers import PATCH_FRAMES, ConvBlock, L2Normalize, MeanOfPatches, ToPatches


def build_patch_embedding(n_mels: int = 64, embedding_dim: int = 130, filters=(64, 64, 128, 128),
                          pool_time=(2, 2, 5, 1), pool_freq=(2, 2, 2, 2), dropout_rate: float = 0.1,
                          name: str = "patch_embedding") -> keras.Model:
    """E: ``(batch, frames, n_mels)`` log-mel, frames a multiple of 20 -> ``{"embedding": (batch, dim)}``."""
    if len(filters) != 4 or len(pool_time) != 4 or len(pool_freq) != 4:
        raise ValueError("the embedding CNN has 4 conv blocks: give 4 filters / pool_time / pool_freq")
    patch = 1
    for p in pool_time:
        patch *= p
    if patch != PATCH_FRAMES:
        raise ValueError(f"pool_time {pool_time} pools {patch} frames per output, expected {PATCH_FRAMES} (200 ms)")
    bands = n_mels
    for p in pool_freq:
        bands //= p
    if bands < 1:
        raise ValueError(f"pool_freq {pool_freq} pools {n_mels} mel bands to nothing")
    logmel = keras.Input((None, n_mels), name="logmel")                          # (B, T, F)
    x = layers.BatchNormalization(name="input_norm")(logmel)
    x = ToPatches(PATCH_FRAMES, name="patches")(x)                               # (B * P, 20, F)
    x = layers.Reshape((PATCH_FRAMES, n_mels, 1), name="add_channel")(x)
    for i, (f, pt, pf) in enumerate(zip(filters, pool_time, pool_freq)):
        x = ConvBlock(f, 3, pool_time=pt, pool_freq=pf, activation="relu", dropout_rate=dropout_rate,
                      name=f"conv_block_{i}")(x)                                # (B * P, 1, F', C)
    x = layers.Reshape((bands * filters[-1],), name="flatten")(x)                # (B * P, F'C)
    x = layers.Dense(embedding_dim, name="patch_dense")(x)                        # (B * P, dim)
    embedding = L2Normalize(name="embedding")(MeanOfPatches(name="mean_patches")([logmel, x]))
    return keras.Model(logmel, {"embedding": embedding}, name=name)


def build_g(embedding_dim: int, num_classes: int, name: str = "g") -> keras.Model:
    """G: ``(batch, embedding_dim)`` -> ``(batch, num_classes)`` sigmoids, via dense 32 (leaky ReLU)."""
    embedding = keras.Input((embedding_dim,), name="embedding")
    hidden = layers.LeakyReLU(name="g_leaky_relu")(layers.Dense(32, name="g_hidden")(embedding))
    tags = layers.Dense(num_classes, activation="sigmoid", name="tags")(hidden)
    return keras.Model(embedding, tags, name=name)


def build_tagger(embedding_model: keras.Model, num_classes: int, name: str = "embedding_tagger") -> keras.Model:
    """E + G end to end: ``{"embedding", "tags"}``; G (:func:`build_g`) is its own sub-model,
    so it scores frozen embeddings alone too."""
    logmel = keras.Input(embedding_model.input_shape[1:], name="logmel")
    embedding = embedding_model(logmel)["embedding"]
    g = build_g(int(embedding.shape[-1]), num_classes)
    return keras.Model(logmel, {"embedding": embedding, "tags": g(embedding)}, name=name)
