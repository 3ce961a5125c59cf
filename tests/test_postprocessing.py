"""Post-processing: hand-computed expectations on tiny frame matrices and event lists."""

import numpy as np
import pytest

from sedweak.config import PostprocessConfig
from sedweak.labels import Event
from sedweak.postprocessing import (
    binarize,
    fill_gaps_and_drop_short,
    median_filter,
    odd_window_frames,
    probabilities_to_events,
)


@pytest.mark.parametrize("seconds, fps, expected", [
    (0.45, 100, 45),   # DESED-like setting at the feature rate
    (0.45, 50, 23),    # 22.5 -> 22 -> next odd
    (0.02, 100, 3),    # 2 -> 3
    (0.0, 100, 1),     # at least one frame
    (0.15, 20, 3),
])
def test_odd_window_frames(seconds, fps, expected):
    assert odd_window_frames(seconds, fps) == expected


def test_median_filter_removes_spike_keeps_plateau_and_edges():
    probs = np.array([
        # spike, plateau, edge event (kept by mode='nearest'; 'constant' zeros would erase it)
        [0.0, 0.0, 1.0],
        [0.0, 1.0, 0.0],
        [1.0, 1.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0],
    ])
    out = median_filter(probs, 3)
    np.testing.assert_array_equal(out[:, 0], [0, 0, 0, 0, 0])
    np.testing.assert_array_equal(out[:, 1], [0, 1, 1, 1, 0])
    np.testing.assert_array_equal(out[:, 2], [1, 0, 0, 0, 0])


def test_median_filter_is_per_class_not_across_classes():
    probs = np.array([[1.0, 0.0, 0.0]] * 4)  # a 3-wide window across classes would zero column 0
    np.testing.assert_array_equal(median_filter(probs, 3), probs)


def test_median_filter_size_one_returns_input():
    probs = np.random.default_rng(0).random((7, 2))
    assert median_filter(probs, 1) is probs
    assert median_filter(probs, 0) is probs


def test_median_filter_rejects_1d():
    with pytest.raises(ValueError, match="frames, classes"):
        median_filter(np.zeros(5), 3)


def test_binarize_per_class_thresholds_strictly_greater():
    probs = np.array([[0.4, 0.4], [0.6, 0.6], [0.5, 0.3]])
    out = binarize(probs, [0.5, 0.3])
    np.testing.assert_array_equal(out, [[False, True], [True, True], [False, False]])
    assert out.dtype == bool


def test_binarize_threshold_count_must_match():
    with pytest.raises(ValueError, match="one threshold per class"):
        binarize(np.zeros((3, 2)), [0.5])


def test_fill_gaps_merges_close_events_and_drops_short_ones():
    events = [
        Event("a.wav", 1.0, 1.3, "dog"), Event("a.wav", 1.4, 2.0, "dog"),   # 0.1 s gap -> merged
        Event("a.wav", 3.0, 3.5, "dog"), Event("a.wav", 3.7, 4.2, "dog"),   # 0.2 s gap -> kept apart
        Event("a.wav", 5.0, 5.2, "dog"),                                    # 0.2 s long -> dropped
        Event("a.wav", 1.35, 1.9, "cat"),                                   # other class: untouched
        Event("b.wav", 2.05, 2.5, "dog"),                                   # other file: untouched
    ]
    out = fill_gaps_and_drop_short(events, min_gap_seconds=0.15, min_duration_seconds=0.25)
    assert out == [
        Event("a.wav", 1.0, 2.0, "dog"),
        Event("a.wav", 1.35, 1.9, "cat"),
        Event("a.wav", 3.0, 3.5, "dog"),
        Event("a.wav", 3.7, 4.2, "dog"),
        Event("b.wav", 2.05, 2.5, "dog"),
    ]


def test_fill_gaps_before_dropping_and_float_tolerance():
    # two 0.2 s bursts 0.1 s apart become one 0.5 s event; 0.35 - 0.1 = 0.2499999... is 0.25 s
    assert 0.35 - 0.1 < 0.25
    events = [Event("a", 0.0, 0.2, "x"), Event("a", 0.3, 0.5, "x"), Event("b", 0.1, 0.35, "x")]
    out = fill_gaps_and_drop_short(events)
    assert out == [Event("a", 0.0, 0.5, "x"), Event("b", 0.1, 0.35, "x")]


def test_fill_gaps_merges_overlaps_keeping_the_latest_offset():
    out = fill_gaps_and_drop_short([Event("a", 0.0, 2.0, "x"), Event("a", 0.5, 1.0, "x")])
    assert out == [Event("a", 0.0, 2.0, "x")]


def _toy_probabilities() -> np.ndarray:
    """(80 frames at 20 fps = 4 s, classes [dog, cat])."""
    probs = np.zeros((80, 2))
    probs[10:20, 0] = 0.9   # dog 0.5-1.0 s
    probs[22:32, 0] = 0.9   # dog 1.1-1.6 s (0.1 s gap: merged)
    probs[40, 0] = 0.9      # one-frame spike: removed by the 3-frame median
    probs[50:54, 1] = 0.4   # cat 2.5-2.7 s: 0.2 s, dropped
    probs[60:70, 1] = 0.4   # cat 3.0-3.5 s: only above the cat-specific threshold
    return probs


def test_probabilities_to_events_full_chain():
    config = PostprocessConfig(threshold=0.5, class_thresholds=(("cat", 0.3),), median_filter_seconds=0.15,
                               min_duration_seconds=0.25, min_gap_seconds=0.15)
    events = probabilities_to_events(_toy_probabilities(), ["dog", "cat"], 20.0, "clip.wav", config)
    assert events == [Event("clip.wav", 0.5, 1.6, "dog"), Event("clip.wav", 3.0, 3.5, "cat")]


def test_probabilities_to_events_global_threshold_hides_low_class():
    config = PostprocessConfig(threshold=0.5, median_filter_seconds=0.15)
    events = probabilities_to_events(_toy_probabilities(), ["dog", "cat"], 20.0, "clip.wav", config)
    assert events == [Event("clip.wav", 0.5, 1.6, "dog")]


def test_probabilities_to_events_shape_mismatch():
    with pytest.raises(ValueError, match="expected \\(frames, 3\\)"):
        probabilities_to_events(np.zeros((10, 2)), ["a", "b", "c"], 10.0, "x", PostprocessConfig())
