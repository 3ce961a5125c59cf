"""Balanced sampling, class weights, and the new augmentations (frequency shift, time masks)."""

from __future__ import annotations

import numpy as np
import pytest

from sedweak.config import AugmentConfig, ConfigError, load_config
from sedweak.training.batches import ClipBatches, erases_an_event, shift_bands
from sedweak.training.sampling import (
    balanced_order,
    class_counts,
    class_weights,
    example_weights,
    positive_mean_weights,
    sampling_groups,
)


def _skewed() -> np.ndarray:
    """100 clips: class 0 in 90, class 1 in 9, class 2 in 1; clip 0 has classes 0 and 1."""
    weak = np.zeros((100, 3), np.float32)
    weak[:90, 0] = 1
    weak[90:99, 1] = 1
    weak[0, 1] = 1
    weak[99, 2] = 1
    return weak


def test_class_weight_formulas_golden():
    weak = _skewed()
    np.testing.assert_array_equal(class_counts(weak), [90, 10, 1])
    # inverse: raw 1/n = [1/90, 1/10, 1]; sum_c n_c raw_c = 3, scale 101 / 3
    np.testing.assert_allclose(class_weights(weak, "inverse_frequency"), [101 / 270, 10.1 / 3, 101 / 3], rtol=1e-6)
    # sqrt: raw 1/sqrt(n); sum_c n_c raw_c = sqrt(90) + sqrt(10) + 1
    scale = 101 / (np.sqrt(90) + np.sqrt(10) + 1)
    np.testing.assert_allclose(class_weights(weak, "sqrt_inverse"),
                               [scale / np.sqrt(90), scale / np.sqrt(10), scale], rtol=1e-6)
    np.testing.assert_array_equal(class_weights(weak, "none"), [1, 1, 1])
    for mode in ("inverse_frequency", "sqrt_inverse"):  # positive-weighted mean is 1
        assert float((class_counts(weak) * class_weights(weak, mode)).sum()) == pytest.approx(101)
    assert class_weights(np.array([[1, 0]]), "inverse_frequency")[1] == 0  # no positives
    with pytest.raises(ValueError, match="class weighting"):
        class_weights(weak, "inverse")


def test_example_weights_fold_class_weights_per_clip():
    weak = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 1]], np.float32)
    per_clip = positive_mean_weights(weak, np.array([1.0, 3.0, 8.0]))
    np.testing.assert_allclose(per_clip, [1.0, 2.0, 1.0, 8.0])  # mean of positives; 1 without labels
    np.testing.assert_allclose(example_weights(weak, np.array([1.0, 3.0, 8.0])), np.array([1, 2, 1, 8]) / 3.0)


def test_balanced_sampling_makes_label_frequencies_near_uniform():
    weak = _skewed()
    draws = balanced_order(weak, 3000, np.random.default_rng(0))
    share = weak[draws].sum(axis=0) / weak[draws].sum()
    # Exact round-robin over 3 groups; the one clip with two labels tilts classes 0 and 1 a little.
    np.testing.assert_allclose(share, [1 / 3] * 3, atol=0.03)
    shuffled_share = weak.sum(axis=0) / weak.sum()
    assert shuffled_share[2] < 0.01  # what plain shuffling would give the rare class
    # Decks: the 10 clips of class 1 all come before any of them repeats.
    group_1 = [d for d in draws if weak[d, 1] and not weak[d, 0]][:9]
    assert sorted(group_1) == list(range(90, 99))
    np.testing.assert_array_equal(draws, balanced_order(weak, 3000, np.random.default_rng(0)))  # seeded


def test_balanced_sampling_keeps_clips_without_labels_as_a_group():
    weak = np.zeros((10, 2), np.float32)
    weak[0, 0] = weak[1, 1] = 1  # 8 clips without events
    groups = sampling_groups(weak)
    assert [g.tolist() for g in groups] == [[0], [1], list(range(2, 10))]
    draws = balanced_order(weak, 300, np.random.default_rng(1))
    assert np.sum(draws == 0) == np.sum(draws == 1) == 100
    with pytest.raises(ValueError, match="at least one clip"):
        balanced_order(np.zeros((0, 2)), 5, np.random.default_rng(0))


def test_clip_batches_balanced_with_sample_weights():
    weak = _skewed()
    features = np.zeros((100, 8, 4), np.float32)
    strong = np.repeat(weak[:, None, :], 2, axis=1)
    weights = class_weights(weak, "inverse_frequency")
    batches = ClipBatches(features, strong, weak, 16, time_pooling=4, shuffle=True, sampling="balanced",
                          class_weights=weights, seed=2)
    assert len(batches) == 7
    x, y, sample_weight = batches[0]
    assert x.shape == (16, 8, 4) and set(sample_weight) == {"strong", "weak"}
    expected = positive_mean_weights(y["weak"], weights) / positive_mean_weights(weak, weights).mean()
    np.testing.assert_allclose(sample_weight["weak"], expected, rtol=1e-6)
    np.testing.assert_array_equal(sample_weight["strong"], sample_weight["weak"])
    drawn = np.concatenate([batches.order])
    assert np.sum(weak[drawn, 2]) >= 30  # the single class-2 clip, a third of the draws
    batches.on_epoch_end()
    assert not np.array_equal(batches.order, drawn)
    with pytest.raises(ValueError, match="sampling"):
        ClipBatches(features, strong, weak, 4, sampling="uniform")


def test_train_config_options_are_validated():
    config = load_config(None, ["train.sampling=balanced", "train.class_weighting=sqrt_inverse",
                                "augment.freq_shift_bands_max=2", "augment.time_mask_frames_max=10",
                                "cache.num_workers=2", "cache.in_memory_max_mb=0"])
    assert config.train.sampling == "balanced" and config.cache.num_workers == 2
    defaults = load_config(None)
    assert (defaults.train.sampling, defaults.train.class_weighting) == ("shuffle", "none")
    assert defaults.augment.freq_shift_bands_max == defaults.augment.time_mask_frames_max == 0
    for bad in ("train.sampling=uniform", "train.class_weighting=inverse", "augment.time_mask_frames_max=-1",
                "cache.flush_every_clips=0"):
        with pytest.raises(ConfigError):
            load_config(None, [bad])


# ----------------------------------------------------------------------------- augmentation


def test_shift_bands_golden():
    x = np.arange(5, dtype=np.float32)[None, :]
    np.testing.assert_array_equal(shift_bands(x, 2), [[0, 0, 0, 1, 2]])
    np.testing.assert_array_equal(shift_bands(x, -2), [[2, 3, 4, 4, 4]])
    np.testing.assert_array_equal(shift_bands(x, 0), x)


def test_erases_an_event_golden():
    strong = np.zeros((6, 2), np.float32)
    strong[1:3, 0] = 1          # event: model frames 1-2 = feature frames 2..5 at pooling 2
    strong[4:6, 1] = -1         # masked targets are not events
    assert erases_an_event(strong, 2, 4, 2)        # covers both model frames
    assert not erases_an_event(strong, 2, 3, 2)    # frame 2 only half covered: visible
    assert not erases_an_event(strong, 0, 4, 2)    # covers model frames 0-1: frame 2 visible
    assert not erases_an_event(strong, 8, 4, 2)    # covers the masked class-1 frames only
    assert not erases_an_event(strong, 2, 0, 2)
    two = np.zeros((6, 1), np.float32)
    two[0, 0] = two[3, 0] = 1  # two events of one class: hiding one of them is enough to refuse
    assert erases_an_event(two, 6, 2, 2)


def test_time_masks_and_freq_shift_keep_targets_and_events_visible():
    pool, model_frames, mels = 2, 20, 8
    strong = np.zeros((12, model_frames, 1), np.float32)
    for clip in range(12):
        strong[clip, clip:clip + 3, 0] = 1
    features = np.full((12, model_frames * pool, mels), -80.0, np.float32)
    features[:, :, 3][np.repeat(strong[:, :, 0], pool, axis=1) > 0] = 0.0
    augment = AugmentConfig(gain_db_max=0.0, time_shift=False, freq_mask_bands_max=0, mix_probability=0.0,
                            freq_shift_bands_max=2, time_mask_frames_max=8)
    batches = ClipBatches(features, strong, strong.max(axis=1), 4, time_pooling=pool, augment=augment, seed=0)
    masked = shifted = 0
    for epoch in range(3):
        for i in range(len(batches)):
            x, y = batches[i]
            rows = batches.order[i * 4:(i + 1) * 4]
            np.testing.assert_array_equal(y["strong"], strong[rows])  # targets untouched
            loud = (x > -40).any(axis=2)                              # (clips, frames)
            assert loud.any(axis=1).all()                             # every event keeps evidence
            flat = np.ptp(x, axis=2) == 0                              # masked frame: one value,
            masked += int(np.any(flat & (x[:, :, 0] > -79.0)))        # the clip mean, not -80
            shifted += int(np.any(np.argmax(x.max(axis=1), axis=1) != 3))
        batches.on_epoch_end()
    assert masked > 0 and shifted > 0


def test_training_run_with_balanced_sampling_weights_and_streamed_features(tmp_path, tiny_recipe):
    import csv
    import math

    from sedweak.training import run

    recipe, overrides = tiny_recipe
    config = load_config(recipe, overrides + [
        "train.epochs=1", "train.sampling=balanced", "train.class_weighting=inverse_frequency",
        "augment.freq_shift_bands_max=2", "augment.time_mask_frames_max=20", "cache.in_memory_max_mb=0"])
    result = run(config, tmp_path / "run", verbose=0)
    with open(tmp_path / "run" / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and math.isfinite(float(rows[0]["loss"])) and math.isfinite(float(rows[0]["val_loss"]))
    assert set(result.metrics["per_class"]) == {"Beep", "Buzz", "Chirp"}
