"""Triplet and prototypical losses against values worked out by hand (1-D embeddings, so
squared distances are squared differences)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from keras import ops

from sedweak.embeddings.losses import PrototypicalLoss, TripletLoss, pairwise_squared_distances


def _loss(loss, labels, points) -> float:
    return float(ops.convert_to_numpy(loss(np.asarray(labels), np.asarray(points, np.float32))))


def test_pairwise_squared_distances():
    d = ops.convert_to_numpy(pairwise_squared_distances(np.array([[0.0, 0.0], [3.0, 4.0]], np.float32)))
    np.testing.assert_allclose(d, [[0, 25], [25, 0]], atol=1e-5)


@pytest.mark.parametrize("mining", ["random", "semihard", "hard"])
def test_a_met_margin_costs_nothing_and_a_missed_one_its_shortfall(mining):
    # class 0 at 0 and 1, class 1 at 3: pairs (0, 1): d_ap 1, d_an 9; (1, 0): d_ap 1, d_an 4.
    labels, points = [0, 0, 1], [[0.0], [1.0], [3.0]]
    assert _loss(TripletLoss(margin=0.5, mining=mining), labels, points) == 0.0
    # margin 5: [1 - 9 + 5]_+ = 0 and [1 - 4 + 5]_+ = 2 -> mean 1
    assert _loss(TripletLoss(margin=5.0, mining=mining), labels, points) == pytest.approx(1.0)


@pytest.mark.parametrize("mining, expected", [("hard", 164 / 8), ("semihard", 126 / 8), ("random", 145 / 8)])
def test_mining_picks_the_negatives_worked_out_by_hand(mining, expected):
    """Class 0 at 0, 2; class 1 at 1, 3, 10; margin 1; 8 (anchor, positive) pairs.
    E.g. anchor 0, positive 2 (d_ap 4), negatives at d 1, 9, 100: hard takes 1 -> 4;
    semi-hard the closest beyond 4, 9 -> 0; random the mean (4 + 0 + 0) / 3. Anchor 10,
    positive 1 (d_ap 81), negatives at d 100, 64: hard 64 -> 18, semi-hard 100 -> 0. Anchor 1,
    positive 3 (d_ap 4), negatives at d 1, 1: no semi-hard one, the farthest (1) -> 4."""
    labels, points = [0, 0, 1, 1, 1], [[0.0], [2.0], [1.0], [3.0], [10.0]]
    assert _loss(TripletLoss(margin=1.0, mining=mining), labels, points) == pytest.approx(expected, rel=1e-5)


def test_a_batch_without_pairs_or_negatives_costs_zero():
    assert _loss(TripletLoss(), [0, 1, 2], [[0.0], [1.0], [2.0]]) == 0.0      # no positive pair
    assert _loss(TripletLoss(), [4, 4], [[0.0], [1.0]]) == 0.0                # no negative


def test_prototypical_loss_by_hand():
    # J = 2 classes x m = 2 points, 1 support each: prototypes 0 and 3; query 1 is at d 1 / 4,
    # query 2 at d 4 / 1: each costs log(1 + e^-3).
    loss = PrototypicalLoss(n_way=2, n_support=1)
    assert _loss(loss, [0, 0, 1, 1], [[0.0], [1.0], [3.0], [2.0]]) == pytest.approx(math.log1p(math.exp(-3)), rel=1e-5)
    separated = [[10.0, 0.0]] * 3 + [[-10.0, 0.0]] * 3
    assert _loss(PrototypicalLoss(2, 1), [0] * 3 + [1] * 3, separated) == pytest.approx(0.0, abs=1e-6)
    collapsed = [[1.0, 0.0]] * 9
    assert _loss(PrototypicalLoss(3, 2), [0] * 3 + [1] * 3 + [2] * 3, collapsed) == pytest.approx(math.log(3), rel=1e-5)


def test_bad_settings_and_config_round_trip():
    with pytest.raises(ValueError, match="mining must be one of"):
        TripletLoss(mining="hardest")
    with pytest.raises(ValueError, match="n_way >= 2"):
        PrototypicalLoss(1, 1)
    loss = TripletLoss.from_config(TripletLoss(margin=0.3, mining="hard").get_config())
    assert (loss.margin, loss.mining) == (0.3, "hard")


@pytest.mark.parametrize("mining", ["random", "semihard", "hard"])
def test_multi_label_tags_pair_clips_by_a_shared_tag(mining):
    """Tags (batch, classes): a [1,0,0] and p [1,1,0] share a tag (a positive pair), n [0,0,1]
    shares none with either (a negative), u is unlabelled (MASKED) and is neither.
    u sits on a: were it a negative, (a, p) would cost [0 - 0 + 0.5]_+ = 0.5."""
    tags = [[1, 0, 0], [1, 1, 0], [0, 0, 1], [-1, -1, -1]]
    apart = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]
    assert _loss(TripletLoss(margin=0.5, mining=mining), tags, apart) == 0.0
    # a and p apart, n on a: (a, p): d_ap 2, d_an 0 -> 2.5; (p, a): d_ap 2, d_pn 2 -> 0.5; mean 1.5
    # for every miner (one negative per anchor, never strictly beyond the positive: semi-hard
    # falls back to the farthest, the same one)
    crossed = [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]
    assert _loss(TripletLoss(margin=0.5, mining=mining), tags, crossed) == pytest.approx(1.5)


def test_a_single_column_is_read_as_class_ids():
    # (batch, 1) ids 0, 0, 1 as in the margin test above: met at 0.5
    assert _loss(TripletLoss(margin=0.5), [[0], [0], [1]], [[0.0], [1.0], [3.0]]) == 0.0
