"""The WAA weak-label study (task: waa): segment cutting, F-measure, config rules, the
synthesizer's balanced classes and 200 ms events, the sweep's matrix, one learning run."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner

from sedweak.cli import main
from sedweak.config import ConfigError, SynthConfig, load_config
from sedweak.embeddings.waa import cut_segments, metric_key, segment_frames, segment_start, tagging_f1
from sedweak.embeddings.waa_report import columns, markdown, matrix, write_matrix
from sedweak.labels import Event, read_strong_tsv
from sedweak.soundbank import write_toy_bank
from sedweak.synth import synthesize
from sedweak.training.sweep import summarize


def _waa_recipe(tmp_path, bank, **extra) -> str:
    path = tmp_path / "waa.yaml"
    lines = ["task: waa", "data:", f"  soundbank: {bank}", "  clip_seconds: 4.0", "  synth:", "    mode: waa",
             "    balance_classes: true", "    num_train_clips: 24", "    num_valid_clips: 12", "    num_eval_clips: 12",
             "    onset_mean_seconds: 2.0", "    onset_max_seconds: 3.0", "augment:", "  dynamic_mixing: false",
             "waa:", "  filters: [8, 8, 8, 8]", "  embedding_dim: 16", "  test_segment_seconds: [0.2, 1.0, 4.0]",
             "  batches_per_epoch: 6", "  per_class: 3", "  g_epochs: 60", "train:", "  batch_size: 8", "  epochs: 25",
             "  learning_rate: 0.01"]
    path.write_text("\n".join(lines + [f"  {k}: {v}" for k, v in extra.items()]) + "\n")
    return str(path)


# ----------------------------------------------------------------------------- segments


def test_segment_frames_are_whole_patches_at_most_the_clip():
    assert [segment_frames(s, 100.0, 1000) for s in (0.2, 1.0, 10.0)] == [20, 100, 1000]
    assert segment_frames(10.0, 100.0, 1001) == 1000      # a ragged last patch is dropped
    assert segment_frames(0.05, 100.0, 1000) == 20        # never below one 200 ms patch
    assert segment_frames(30.0, 100.0, 400) == 400


@pytest.mark.parametrize("onset, offset, frames, low, high", [
    (300, 350, 100, 250, 300),     # short event: wholly inside the segment
    (100, 500, 20, 100, 480),      # long event: the segment lies inside it
    (990, 1000, 100, 900, 900),    # at the clip's end: the last segment
    (0, 10, 100, 0, 0),            # at its start: the first
    (30, 60, 1000, 0, 0),          # a segment as long as the clip
])
def test_segment_start_holds_the_event_or_lies_inside_it(onset, offset, frames, low, high):
    rng = np.random.default_rng(0)
    starts = {segment_start(onset, offset, 1000, frames, rng) for _ in range(5000)}
    assert min(starts) == low and max(starts) == high


def test_cut_segments_follow_the_event_skip_bad_clips_and_are_reproducible():
    frames = np.arange(400, dtype=np.float32)
    features = np.repeat(frames[None, :, None], 4, axis=0).repeat(2, axis=2)     # value = frame index
    names = ("a.wav", "b.wav", "c.wav", "d.wav")
    strong = {"a.wav": [Event("a.wav", 1.0, 1.5, "Dog")], "b.wav": [Event("b.wav", 0.5, 3.5, "Cat")],
              "c.wav": [Event("c.wav", 0.1, 0.3, "Dog"), Event("c.wav", 1.0, 1.2, "Cat")], "d.wav": []}
    segments, skipped = cut_segments(features, names, strong, ["Cat", "Dog"], 1.0, 100.0, seed=0, split="eval")
    assert segments.filenames == ("a.wav", "b.wav") and segments.labels.tolist() == [1, 0]
    assert segments.features.shape == (2, 100, 2)
    first_a = segments.features[0, 0, 0]
    assert first_a <= 100 and first_a + 100 >= 150                       # holds the whole 0.5 s event
    assert 50 <= segments.features[1, 0, 0] <= 250                       # inside the 3 s event
    assert [name for name, _ in skipped] == ["c.wav", "d.wav"] and "found ['Dog', 'Cat']" in skipped[0][1]
    again, _ = cut_segments(features, names, strong, ["Cat", "Dog"], 1.0, 100.0, seed=0, split="eval")
    np.testing.assert_array_equal(again.features, segments.features)
    other = [cut_segments(features, names, strong, ["Cat", "Dog"], 1.0, 100.0, seed=s, split="eval")[0]
             for s in range(1, 6)]
    assert any(not np.array_equal(o.features, segments.features) for o in other)


def test_tagging_f1_golden_values():
    labels = np.array([0, 1, 2, 1])
    assert tagging_f1(np.eye(3)[labels], labels, 0.5) == 1.0
    assert tagging_f1(np.zeros((4, 3)), labels, 0.5) == 0.0              # "no class" scores 0, as in the paper
    half = np.eye(3)[[0, 1, 1, 1]]                                       # class 2 missed, one false 1
    # class 0: F1 1; class 1: P 2/3 R 1 -> 0.8; class 2: 0 -> macro 0.6
    assert tagging_f1(half, labels, 0.5) == pytest.approx(0.6)
    shy = 0.1 * np.eye(3)[labels] + 0.05                                 # never reaches 0.5, ranks right
    assert tagging_f1(shy, labels, 0.5) == 0.0 and tagging_f1(shy, labels, None) == 1.0
    assert metric_key("f1", 0.2) == "waa.f1.test_0.2s" and metric_key("centroid_f", 10.0) == "waa.centroid_f.test_10s"


# ----------------------------------------------------------------------------- config and synthesis


@pytest.mark.parametrize("overrides, message", [
    (["data.synth.mode=multi", "data.synth.balance_classes=false"], "needs data.dataset: synth, data.synth.mode: waa"),
    (["augment.dynamic_mixing=true"], "set augment.dynamic_mixing: false"),
    (["waa.method=siamese"], "waa.method must be one of"),
    (["waa.episode_support=6"], "episode_support < episode_points"),
    (["waa.test_segment_seconds=[]"], "test_segment_seconds must be > 0"),
    (["task=segmentation"], "task must be one of"),
])
def test_waa_config_rules(tmp_path, toy_bank_dir, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_waa_recipe(tmp_path, toy_bank_dir), overrides)


def test_synth_rules():
    with pytest.raises(ConfigError, match="balance_classes needs mode: waa"):
        SynthConfig(balance_classes=True)
    with pytest.raises(ConfigError, match="event_max_seconds must be >= 0"):
        SynthConfig(event_max_seconds=-1.0)


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    return write_toy_bank(tmp_path_factory.mktemp("bank"))


def test_balanced_classes_and_200_ms_events(bank, tmp_path):
    config = SynthConfig(mode="waa", balance_classes=True, event_max_seconds=0.2, num_train_clips=12,
                         num_valid_clips=3, num_eval_clips=3, seed=1)
    synthesize(bank, config, tmp_path, clip_seconds=4.0, sample_rate_hz=16000)
    events = [e for evs in read_strong_tsv(tmp_path / "metadata" / "train.tsv").values() for e in evs]
    assert Counter(e.label for e in events) == {"Beep": 4, "Buzz": 4, "Chirp": 4}
    assert all(e.offset_seconds - e.onset_seconds <= 0.2 + 1e-9 for e in events)
    import soundfile as sf

    # the audio is cut too: past onset + 0.2 s only the background remains (the tone is gone)
    event = sorted(events, key=lambda e: e.filename)[0]
    audio, rate = sf.read(tmp_path / "audio" / "train" / event.filename)
    after = audio[int((event.onset_seconds + 0.25) * rate):int((event.onset_seconds + 0.45) * rate)]
    during = audio[int(event.onset_seconds * rate):int((event.onset_seconds + 0.2) * rate)]
    assert np.sqrt(np.mean(after ** 2)) < 0.5 * np.sqrt(np.mean(during ** 2))


def test_new_synth_keys_at_their_neutral_values_keep_older_stamps(bank, tmp_path):
    config = SynthConfig(mode="waa", num_train_clips=3, num_valid_clips=3, num_eval_clips=3)
    first = synthesize(bank, config, tmp_path, clip_seconds=4.0, sample_rate_hz=16000)
    stamp = json.loads((tmp_path / "metadata" / "train_synth.json").read_text())
    assert "balance_classes" not in stamp["synth"] and "event_max_seconds" not in stamp["synth"]
    again = synthesize(bank, config, tmp_path, clip_seconds=4.0, sample_rate_hz=16000)
    assert all(split["rendered"] for split in first["splits"].values())
    assert not any(split["rendered"] for split in again["splits"].values())


# ----------------------------------------------------------------------------- tables


def _record(slug, method, train, seed, f1s):
    metrics = {metric_key("f1", t): v for t, v in zip((0.2, 1.0, 10.0), f1s)}
    metrics.update({metric_key("centroid_f", t): v / 2 for t, v in zip((0.2, 1.0, 10.0), f1s)})
    return {"slug": slug, "point": [f"waa.method={method}", f"waa.train_segment_seconds={train}"], "seed": seed,
            "workdir": "/nonexistent", "status": "ok", "metrics": metrics, "error": None, "seconds": 1.0}


def test_waa_columns_summary_and_matrix_golden(tmp_path):
    results = [_record("c1", "classifier", 1, 0, (0.4, 0.6, 0.2)), _record("c1", "classifier", 1, 1, (0.6, 0.8, 0.4)),
               _record("t10", "triplet", 10, 0, (0.1, 0.1, 0.0))]
    assert [t for _, t in columns(results[0]["metrics"])] == [
        "F1 % @0.2 s", "F1 % @1 s", "F1 % @10 s", "centroid F % @0.2 s", "centroid F % @1 s", "centroid F % @10 s"]
    assert [t for _, t in columns(["waa.top1_f1.test_1s", "waa.centroid_f.test_1s", "waa.f1.test_1s", "x"])] == [
        "F1 % @1 s", "top-1 F1 % @1 s", "centroid F % @1 s"]
    rows = summarize(results)
    assert rows[0]["metrics"]["waa.f1.test_1s"]["mean"] == pytest.approx(0.7)
    table = matrix(rows, {"c1": ("classifier", 1.0), "t10": ("triplet", 10.0)})
    assert table["classifier"][1.0][0.2]["mean"] == pytest.approx(0.5)
    text = markdown(table)
    # t(0.975, 1) * sd / sqrt(2) = 12.706 * 0.1414 / 1.414 = 1.2706 -> 127.1 points
    assert "| classifier | 1 | 50.0 ± 127.1 | 70.0 ± 127.1 | 30.0 ± 127.1 | 2 |" in text
    assert "| triplet | 10 | 10.0 ± 0.0 | 10.0 ± 0.0 | 0.0 ± 0.0 | 1 |" in text
    write_matrix(tmp_path, rows, {"c1": ("classifier", 1.0), "t10": ("triplet", 10.0)})
    saved = json.loads((tmp_path / "waa_matrix.json").read_text())
    assert saved["f1"]["triplet"]["10"]["1"]["mean"] == pytest.approx(0.1)
    assert saved["centroid_f"]["classifier"]["1"]["10"]["mean"] == pytest.approx(0.15)
    assert (tmp_path / "waa_matrix.png").stat().st_size > 1000


# ----------------------------------------------------------------------------- runs


def test_classifier_run_learns_the_toy_tones(tmp_path, toy_bank_dir):
    """Three tones in noise: the end-to-end classifier trained on 1 s segments tags 1 s test
    segments far above chance; the saved E embeds files with ``sedweak embed``."""
    from sedweak.training import run

    config = load_config(_waa_recipe(tmp_path, toy_bank_dir))
    result = run(config, tmp_path / "run", verbose=0)
    assert set(result.metrics) >= {metric_key(k, t) for k in ("f1", "top1_f1", "centroid_f") for t in (0.2, 1.0, 4.0)}
    assert result.metrics[metric_key("f1", 1.0)] >= 0.6
    assert result.metrics[metric_key("centroid_f", 1.0)] >= 0.6
    audio = sorted((tmp_path / "run").rglob("eval_*.wav"))[0]
    # a fresh process (no layer registered by this test's imports) reads the saved E
    import subprocess
    import sys

    embedded = subprocess.run([sys.executable, "-m", "sedweak.cli", "embed", str(result.model_path), str(audio),
                               "--out", str(tmp_path / "e.h5")], capture_output=True, text=True)
    assert embedded.returncode == 0, embedded.stderr[-2000:]


def _sweep(tmp_path, toy_bank_dir, *points):
    recipe = _waa_recipe(tmp_path, toy_bank_dir)
    out = CliRunner().invoke(main, ["sweep", recipe, "--workdir", str(tmp_path / "sw"), "--fast-dev-run", *points])
    assert out.exit_code == 0, out.output
    assert "F1 % @4 s" in (tmp_path / "sw" / "sweep_table.md").read_text()
    assert (tmp_path / "sw" / "waa_matrix.png").is_file()
    return (tmp_path / "sw" / "waa_matrix.md").read_text()


def test_sweep_writes_the_waa_matrix(tmp_path, toy_bank_dir):
    text = _sweep(tmp_path, toy_bank_dir, "--pairs", "waa.method=classifier,waa.train_segment_seconds=0.2;"
                                                     "waa.method=prototypical,waa.train_segment_seconds=1")
    assert "| Method | Training s | Test 0.2 s | Test 1 s | Test 4 s | n |" in text
    assert "| classifier | 0.2 |" in text and "| prototypical | 1 |" in text
    for caption in ("paper's measure", "highest-scoring class", "no classifier"):      # F1, top-1 F1, centroid F tables
        assert caption in text


@pytest.mark.slow
def test_sweep_over_every_method_and_two_lengths(tmp_path, toy_bank_dir):
    text = _sweep(tmp_path, toy_bank_dir, "--grid", "waa.method=classifier,triplet,prototypical",
                  "--grid", "waa.train_segment_seconds=0.2,1")
    for method in ("classifier", "triplet", "prototypical"):
        assert f"| {method} | 0.2 |" in text and f"| {method} | 1 |" in text
