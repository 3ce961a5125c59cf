"""Per-class thresholds tuned on valid, and batch mixup: hand-built cases with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sedweak.config import PostprocessConfig
from sedweak.evaluation.thresholds import tune_thresholds, with_thresholds
from sedweak.labels import Event
from sedweak.training.batches import mixup

CLASSES = ("dog", "siren", "bell")
FPS = 10.0
POST = PostprocessConfig(median_filter_seconds=0.1, min_duration_seconds=0.1, min_gap_seconds=0.0)


def _clip(name: str, dog_level: float, siren_noise: float) -> tuple[np.ndarray, list[Event]]:
    """dog 2-5 s at ``dog_level``, 0.05 elsewhere; siren 6-8 s at 0.95 with a ``siren_noise``
    false alarm at 0-1 s; bell never present, scored 0.2 everywhere."""
    probs = np.full((100, 3), 0.05)
    probs[20:50, 0] = dog_level
    probs[60:80, 1] = 0.95
    probs[0:10, 1] = siren_noise
    probs[:, 2] = 0.2
    return probs, [Event(name, 2.0, 5.0, "dog"), Event(name, 6.0, 8.0, "siren")]


def test_each_class_gets_its_best_threshold():
    # dog's true events score only 0.35: any threshold above misses them all -> best <= 0.3;
    # siren's false alarm scores 0.6: only thresholds 0.6-0.9 drop it -> 0.6 (nearest 0.5);
    # bell has no reference event: it keeps the default.
    probs, reference = {}, {}
    for k in range(3):
        name = f"c{k}.wav"
        probs[name], reference[name] = _clip(name, 0.35, 0.6)
    best, curves = tune_thresholds(probs, reference, CLASSES, FPS, POST)
    assert best["dog"] == pytest.approx(0.3) and curves["dog"][0.3] == pytest.approx(1.0)
    assert curves["dog"][0.4] == 0.0
    assert best["siren"] == pytest.approx(0.6) and curves["siren"][0.5] == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert best["bell"] == 0.5
    tuned = with_thresholds(POST, best)
    assert tuned.thresholds_for(CLASSES) == [0.3, 0.6, 0.5]


def test_segment_criterion_and_bad_arguments():
    probs, reference = _clip("a.wav", 0.35, 0.0)
    best, _ = tune_thresholds({"a.wav": probs}, {"a.wav": reference}, CLASSES, FPS, POST, criterion="segment_f1")
    assert best["dog"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="criterion must be one of"):
        tune_thresholds({"a.wav": probs}, {"a.wav": reference}, CLASSES, FPS, POST, criterion="accuracy")
    with pytest.raises(ValueError, match="grid thresholds must be in"):
        tune_thresholds({"a.wav": probs}, {"a.wav": reference}, CLASSES, FPS, POST, grid=(0.0, 0.5))


@pytest.mark.slow   # a training; tune_thresholds itself is pinned by hand-computed tests above
def test_training_tunes_saves_and_uses_the_thresholds(tmp_path, tiny_recipe):
    from sedweak.config import load_config
    from sedweak.models.saving import load_model
    from sedweak.training import run

    recipe, overrides = tiny_recipe
    run(load_config(recipe, overrides + ["postprocess.tune_thresholds=event_f1"]), tmp_path / "run", verbose=0)
    record = json.loads((tmp_path / "run" / "thresholds.json").read_text())
    assert record["criterion"] == "event_f1" and set(record["thresholds"]) == {"Beep", "Buzz", "Chirp"}
    _, info = load_model(tmp_path / "run" / "model.keras")
    assert dict(info.postprocess.class_thresholds) == pytest.approx(record["thresholds"])


def test_mixup_mixes_power_and_labels():
    rng = np.random.default_rng(0)
    x = np.stack([np.full((4, 2), 0.0), np.full((4, 2), -100.0)]).astype(np.float32)   # 1.0 and 1e-10 power
    strong = np.stack([np.ones((2, 3)), np.zeros((2, 3))]).astype(np.float32)
    strong[1, 0, 2] = -1.0   # a masked frame
    weak = np.array([[1, 0, 1], [0, 1, 0]], np.float32)
    lam = float(np.random.default_rng(0).beta(0.2, 0.2))
    perm = np.random.default_rng(0)
    perm.beta(0.2, 0.2)
    order = perm.permutation(2)
    mixed, s, w = mixup(rng, x, strong, weak, 0.2, "soft")
    expected = 10 * np.log10(lam * 10 ** (x[:, 0, 0] / 10) + (1 - lam) * 10 ** (x[order, 0, 0] / 10))
    np.testing.assert_allclose(mixed[:, 0, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(w, lam * weak + (1 - lam) * weak[order], rtol=1e-6)
    assert s[1, 0, 2] == -1.0 and (order[0] != 1 or s[0, 0, 2] == -1.0)   # masked stays masked
    _, s_hard, w_hard = mixup(np.random.default_rng(0), x, strong, weak, 0.2, "hard")
    np.testing.assert_array_equal(w_hard, np.maximum(weak, weak[order]))
