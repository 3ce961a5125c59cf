"""Parameters and MACs of the exported graph (sedweak.models.complexity), golden values
counted by hand."""

from __future__ import annotations

import dataclasses

import pytest

from sedweak.models.complexity import crnn_complexity
from sedweak.models.crnn import build_crnn
from sedweak.config import get_preset


def test_a_tiny_crnn_counted_by_hand():
    config = dataclasses.replace(get_preset("fast"), conv_filters=(4,), conv_pool_freq=(4,), conv_pool_time=(2,),
                                 rnn_units=(3,), dense_units=())
    model = build_crnn(config, 2, n_mels=8)
    c = crnn_complexity(model, clip_frames=10, n_mels=8, clip_seconds=0.1)
    # conv 10 x 8 x 3^2 x 1 x 4 = 2880; pooled to 5 frames x 2 bands x 4 channels (width 8);
    # BiGRU(3): 2 directions x 5 steps x 3 gates x 3 x (8 + 3) = 990; strong 5 x 6 x 2 = 60
    assert c.macs_per_clip == 2880 + 990 + 60
    # input BN 4 x 8; conv 36 + BN 16; GRU 2 x (8 x 9 + 3 x 9 + 2 x 9); strong 6 x 2 + 2; no embedding head
    assert c.parameters == 32 + 52 + 2 * 117 + 14
    assert c.macs_per_second == pytest.approx(39_300.0)


def test_the_low_complexity_preset_fits_the_dcase_budget():
    c = crnn_complexity(build_crnn(get_preset("edge_lc"), 10), 1000, 64, 10.0)
    assert c.int8_kilobytes <= 128 and c.macs_per_second <= 30e6
    edge = crnn_complexity(build_crnn(get_preset("adavanne_edge"), 10), 1000, 64, 10.0)
    assert edge.macs_per_second > 30e6                       # adavanne_edge does not: 40.6 MMAC/s, 226 K
