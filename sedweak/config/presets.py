"""Named CRNN configurations. A recipe's ``model.preset`` picks one; other keys override."""

from __future__ import annotations

import dataclasses

from sedweak.config.schema import ConfigError, ModelConfig

PRESETS: dict[str, ModelConfig] = {
    # Adavanne & Virtanen (DCASE 2017 task 4): three 64-filter conv layers pooling over
    # frequency only (64 -> 2 bands), two bidirectional 64-unit GRUs, time-distributed
    # dense: 226 K trainable weights for 17 classes without the embedding head (the
    # paper reports ~218 K; its exact pooling sizes are not given).
    "adavanne": ModelConfig(
        preset="adavanne",
        conv_filters=(64, 64, 64),
        conv_pool_freq=(4, 4, 2),
        conv_pool_time=(1, 1, 1),
        conv_activation="relu",
        dropout_rate=0.25,
        rnn_units=(64, 64),
        dense_units=(),
        weak_pooling="max",
        embedding_dim=64,
    ),
    # Small and fast for 2-core CPUs: few channels in the first block (the conv stack
    # dominates the step time: bench/bench_training.py) and 4x time pooling (25 frames/s, 40 ms).
    "fast": ModelConfig(
        preset="fast",
        conv_filters=(16, 32, 64),
        conv_pool_freq=(4, 4, 4),
        conv_pool_time=(2, 2, 1),
        conv_activation="relu",
        dropout_rate=0.2,
        rnn_units=(32,),
        dense_units=(),
        weak_pooling="linear_softmax",
        embedding_dim=64,
    ),
}


# The adavanne layers (same 226 K weights) with 4x time pooling, 2x after each of the first
# two blocks: 40 ms model frames, a quarter of the GRU steps and about half the conv MACs per
# clip. The device preset: its staged int8 TFLite file meets the edge targets
# (export/README.md), and on the demo it scored at least as well as adavanne itself.
PRESETS["adavanne_edge"] = dataclasses.replace(PRESETS["adavanne"], preset="adavanne_edge", conv_pool_time=(2, 2, 1))


# Within DCASE's low-complexity budget (<= 128 KB of int8 parameters, <= 30 MMAC per second
# of audio): adavanne_edge's time pooling and head with 32/64/64-filter convs pooling the
# bands to one (64-d frames, as `fast`) and one BiGRU(64): 107 K weights, 21 MMAC/s
# (bench/bench_edge.py measures both and the F1 it costs against adavanne_edge).
PRESETS["edge_lc"] = dataclasses.replace(PRESETS["adavanne_edge"], preset="edge_lc", conv_filters=(32, 64, 64),
                                         conv_pool_freq=(4, 4, 4), rnn_units=(64,))


def get_preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ConfigError(f"model.preset: unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]
