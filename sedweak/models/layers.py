"""Building blocks of the CRNN, written with ``keras.ops`` only (backend-portable).

Every layer takes plain keyword arguments, keeps one attribute per argument and
returns them from ``get_config()``, so ``.keras`` files round-trip.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from sedweak.config import CONV_ACTIVATIONS, WEAK_POOLINGS


@keras.saving.register_keras_serializable(package="sedweak")
class ConvBlock(layers.Layer):
    """Conv2D -> BatchNorm -> ReLU|GLU -> MaxPool(time, freq) -> Dropout.

    Input (batch, frames, bands, channels) -> (batch, frames // pool_time,
    bands // pool_freq, filters). Pooling over frequency only keeps the frame rate
    (Adavanne & Virtanen); ``pool_time`` > 1 trades time resolution for speed.
    """

    def __init__(self, filters: int, kernel_size: int = 3, pool_time: int = 1, pool_freq: int = 2,
                 activation: str = "relu", dropout_rate: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if activation not in CONV_ACTIVATIONS:
            raise ValueError(f"activation must be one of {CONV_ACTIVATIONS}, got {activation!r}")
        self.filters = filters
        self.kernel_size = kernel_size
        self.pool_time = pool_time
        self.pool_freq = pool_freq
        self.activation = activation
        self.dropout_rate = dropout_rate
        conv_filters = 2 * filters if activation == "glu" else filters
        self.conv = layers.Conv2D(conv_filters, kernel_size, padding="same", use_bias=False, name="conv")
        self.norm = layers.BatchNormalization(name="bn")
        self.pool = layers.MaxPooling2D((pool_time, pool_freq), name="pool")
        self.dropout = layers.Dropout(dropout_rate, name="dropout")

    def build(self, input_shape):
        self.conv.build(input_shape)
        conv_shape = self.conv.compute_output_shape(input_shape)
        self.norm.build(conv_shape)
        self.built = True

    def call(self, x, training=None):
        x = self.norm(self.conv(x), training=training)
        if self.activation == "glu":
            linear, gate = ops.split(x, 2, axis=-1)
            x = linear * ops.sigmoid(gate)
        else:
            x = ops.relu(x)
        return self.dropout(self.pool(x), training=training)

    def compute_output_shape(self, input_shape):
        batch, frames, bands, _ = input_shape
        frames = None if frames is None else frames // self.pool_time
        return (batch, frames, bands // self.pool_freq, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "pool_time": self.pool_time, "pool_freq": self.pool_freq,
                "activation": self.activation, "dropout_rate": self.dropout_rate}


@keras.saving.register_keras_serializable(package="sedweak")
class WeakPooling(layers.Layer):
    """Frame probabilities -> clip probabilities.

    Inputs: ``strong`` (batch, frames, classes) in [0, 1] and, for ``attention``,
    the frame features (batch, frames, features). Output (batch, classes).

    * ``max`` / ``mean``: over frames.
    * ``linear_softmax``: sum(p^2) / sum(p) (Wang et al. 2019) -- gradients reach the
      frames that carry the event, which lets weak labels teach localisation.
    * ``attention``: softmax-over-time weights from a dense layer on the features.
    """

    def __init__(self, mode: str = "linear_softmax", num_classes: int = 1, **kwargs):
        super().__init__(**kwargs)
        if mode not in WEAK_POOLINGS:
            raise ValueError(f"pooling mode must be one of {WEAK_POOLINGS}, got {mode!r}")
        self.mode = mode
        self.num_classes = num_classes
        self.attention = layers.Dense(num_classes, name="attention") if mode == "attention" else None

    def build(self, input_shape):
        if self.attention is not None:
            self.attention.build(input_shape[1])
        self.built = True

    def call(self, inputs):
        strong, features = inputs
        if self.mode == "max":
            return ops.max(strong, axis=1)
        if self.mode == "mean":
            return ops.mean(strong, axis=1)
        if self.mode == "linear_softmax":
            return ops.sum(strong * strong, axis=1) / ops.maximum(ops.sum(strong, axis=1), 1e-7)
        weights = ops.softmax(self.attention(features), axis=1)
        return ops.sum(weights * strong, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], input_shape[0][2])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="sedweak")
class MeanOverTime(layers.Layer):
    """(batch, frames, features) -> (batch, features)."""

    def call(self, x):
        return ops.mean(x, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package="sedweak")
class L2Normalize(layers.Layer):
    """Unit-length rows along the last axis (embeddings for triplet/prototype losses)."""

    def __init__(self, epsilon: float = 1e-12, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, x):
        return x / ops.sqrt(ops.maximum(ops.sum(x * x, axis=-1, keepdims=True), self.epsilon))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


# The WAA study's patch CNN (sedweak.embeddings.models): here, with the other layers, so that
# load_model registers them without importing a module above sedweak.models.
PATCH_FRAMES = 20   # 200 ms at a 10 ms hop


@keras.saving.register_keras_serializable(package="sedweak")
class ToPatches(layers.Layer):
    """(batch, frames, bands) -> (batch * frames // patch, patch, bands); frames must be a
    multiple of ``patch_frames`` (a ragged tail is dropped)."""

    def __init__(self, patch_frames: int = PATCH_FRAMES, **kwargs):
        super().__init__(**kwargs)
        self.patch_frames = patch_frames

    def call(self, x):
        usable = (ops.shape(x)[1] // self.patch_frames) * self.patch_frames
        return ops.reshape(x[:, :usable], (-1, self.patch_frames, ops.shape(x)[2]))

    def get_config(self):
        return {**super().get_config(), "patch_frames": self.patch_frames}


@keras.saving.register_keras_serializable(package="sedweak")
class MeanOfPatches(layers.Layer):
    """[(batch, frames, bands), (batch * patches, dim)] -> (batch, dim): each clip's patch mean."""

    def call(self, inputs):
        clips, patches = inputs
        return ops.mean(ops.reshape(patches, (ops.shape(clips)[0], -1, ops.shape(patches)[-1])), axis=1)
