"""The CRNN of Adavanne & Virtanen with strong, weak and embedding outputs.

Input: log-mel (batch, frames, n_mels). Outputs, a dict with fixed keys:
  strong     (batch, frames // time_pooling, classes)  frame probabilities
  weak       (batch, classes)                          clip probabilities
  embedding  (batch, embedding_dim)                    L2-normalised clip embedding
"""

from __future__ import annotations

import dataclasses

import keras
from keras import layers

from sedweak.config import ConfigError, ModelConfig
from sedweak.models.layers import ConvBlock, L2Normalize, MeanOverTime, WeakPooling

OUTPUT_KEYS = ("strong", "weak", "embedding")


def build_crnn(config: ModelConfig, num_classes: int, n_mels: int = 64,
               num_frames: int | None = None, name: str = "crnn") -> keras.Model:
    """Functional CRNN. ``num_frames=None`` accepts clips of any length."""
    if num_classes < 1:
        raise ValueError("num_classes must be >= 1")
    bands = config.pooled_bands(n_mels)
    if bands < 1:
        raise ConfigError(f"conv_pool_freq {config.conv_pool_freq} pools {n_mels} mel bands to nothing")

    logmel = keras.Input((num_frames, n_mels), name="logmel")        # (B, T, F)
    x = layers.BatchNormalization(name="input_norm")(logmel)          # per-band standardisation
    x = layers.Reshape((-1, n_mels, 1), name="add_channel")(x)        # (B, T, F, 1)
    for i, (filters, pool_f, pool_t) in enumerate(
            zip(config.conv_filters, config.conv_pool_freq, config.conv_pool_time)):
        x = ConvBlock(filters, config.conv_kernel_size, pool_time=pool_t, pool_freq=pool_f,
                      activation=config.conv_activation, dropout_rate=config.dropout_rate,
                      name=f"conv_block_{i}")(x)                      # (B, T', F', C)
    x = layers.Reshape((-1, bands * config.conv_filters[-1]), name="flatten_freq")(x)  # (B, T', F'C)
    for i, units in enumerate(config.rnn_units):
        if config.rnn_bidirectional:
            x = layers.Bidirectional(layers.GRU(units, return_sequences=True), name=f"bigru_{i}")(x)
        else:
            x = layers.GRU(units, return_sequences=True, name=f"gru_{i}")(x)
    for i, units in enumerate(config.dense_units):
        # A plain Dense on (B, T', D) is time-distributed maths without TimeDistributed's
        # per-frame op expansion in Keras 3 (README.md, "Dependency notes").
        x = layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
        x = layers.Dropout(config.dropout_rate, name=f"dense_dropout_{i}")(x)
    strong = layers.Dense(num_classes, activation="sigmoid", name="strong")(x)          # (B, T', K)
    weak = WeakPooling(config.weak_pooling, num_classes, name="weak")([strong, x])       # (B, K)
    embedding = layers.Dense(config.embedding_dim, name="embedding_dense")(MeanOverTime(name="mean_time")(x))
    embedding = L2Normalize(name="embedding")(embedding)                                 # (B, E)
    return keras.Model(logmel, {"strong": strong, "weak": weak, "embedding": embedding}, name=name)


def forward_crnn(config, num_classes: int, n_mels: int = 64, name: str = "forward_crnn"):
    """A CRNN whose recurrences are forward GRUs: a model that streams exactly."""
    return build_crnn(dataclasses.replace(config, rnn_bidirectional=False), num_classes, n_mels, name=name)
