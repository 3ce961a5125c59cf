"""Dynamic mixing: the mel-power approximation measured, seeded fresh mixes, labels that follow
the (augmented) events, the train split's files only, and training through it."""

from __future__ import annotations

import dataclasses
import random
import warnings

import numpy as np
import pytest

from sedweak.config import AugmentConfig, FeatureConfig, SynthConfig
from sedweak.features import logmel_librosa
from sedweak.soundbank import SoundBank
from sedweak.synth import split_bank
from sedweak.training.dynamic_mix import (DynamicMixer, augment_event, mel_power, seeded_global_rngs,
                                          synthetic_room)

FEATURES = FeatureConfig()
RATE = FEATURES.sample_rate_hz


def test_a_hop_aligned_shift_is_exact_and_independent_sources_add_in_power():
    rng = np.random.default_rng(0)
    event = rng.standard_normal(RATE // 2) * np.hanning(RATE // 2) * 0.3
    onset_frames = 37
    placed = np.zeros(2 * RATE)
    placed[onset_frames * FEATURES.hop_samples:][:len(event)] = event
    shifted = np.zeros_like(mel_power(placed, FEATURES))
    own = mel_power(event, FEATURES)
    shifted[onset_frames:onset_frames + len(own)] = own
    # Each source's own mel power, shifted by whole hops, is the mel power of the shifted source
    # (the frame that straddles the event's end is the exception: the event's own STFT is cut there).
    np.testing.assert_allclose(shifted[:onset_frames + len(own) - 1],
                               mel_power(placed, FEATURES)[:onset_frames + len(own) - 1], rtol=2e-3, atol=1e-9)
    # Two independent noises: the sum of powers is the power of the sum but for the cross
    # term. Measured (3 seeds): at equal level, median |error| 1.3 dB and the mix 0.4-0.5 dB
    # louder on average in dB (a log of a sum of powers fluctuates less); 20 dB apart, 0.28 dB.
    def error(level_b):
        a, b = rng.standard_normal(RATE) * 0.1, rng.standard_normal(RATE) * 0.1 * level_b
        return 10 * np.log10(mel_power(a, FEATURES) + mel_power(b, FEATURES)) - logmel_librosa(a + b, FEATURES)

    equal, apart = error(1.0), error(0.1)
    assert 0.0 < float(np.mean(equal)) < 0.6 and float(np.median(np.abs(equal))) < 1.5
    assert abs(float(np.mean(apart))) < 0.1 and float(np.median(np.abs(apart))) < 0.4


def test_seeded_global_rngs_reproduce_and_restore():
    random.seed(5)
    np.random.seed(5)
    expected = (random.random(), np.random.random())
    random.seed(5)
    np.random.seed(5)
    with seeded_global_rngs((1, 2)):
        inside = (random.random(), np.random.random())
    assert (random.random(), np.random.random()) == expected      # the caller's streams go on untouched
    with seeded_global_rngs((1, 2)):
        assert (random.random(), np.random.random()) == inside


def test_event_augmentation_is_seeded_and_changes_the_sound():
    t = np.arange(RATE) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 880 * t)).astype(np.float32)
    everything = AugmentConfig(event_pitch_semitones_max=3.0, event_stretch_max=0.2, event_eq_probability=1.0,
                               event_bandpass_probability=1.0, event_reverb_probability=1.0)
    outputs = [augment_event(tone, RATE, everything, (0, 1, v)) for v in (1, 1, 2)]
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert outputs[0].shape != outputs[2].shape or not np.allclose(outputs[0], outputs[2])
    assert all(np.isfinite(o).all() and len(o) > RATE // 2 for o in outputs)
    none = AugmentConfig(event_pitch_semitones_max=0.0, event_stretch_max=0.0, event_eq_probability=0.0,
                         event_bandpass_probability=0.0, event_reverb_probability=0.0)
    np.testing.assert_allclose(augment_event(tone, RATE, none, (0, 1, 1)), tone, atol=1e-6)


def test_synthetic_room_direct_path_and_drr():
    rng = np.random.default_rng(3)
    impulse = np.zeros(100, np.float32)
    impulse[0] = 1.0
    wet = synthetic_room(impulse, RATE, rng, rt60_seconds=(0.5, 0.5), drr_db=(6.0, 6.0))
    assert wet[0] == pytest.approx(1.0) and len(wet) == 100 + int(0.5 * RATE) - 1
    tail_energy = float(np.sum(wet[1:].astype(np.float64) ** 2))
    assert 10 * np.log10(1.0 / tail_energy) == pytest.approx(6.0, abs=0.01)
    assert synthetic_room(np.zeros(50, np.float32), RATE, rng).max() == 0.0   # silence stays silence


@pytest.fixture(scope="module")
def toy_mixer(toy_bank_dir):
    bank = SoundBank.open(toy_bank_dir)
    synth = SynthConfig(min_events=1, max_events=3, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        part = split_bank(bank, bank.foreground_classes, 0)["train"]
    mixer = DynamicMixer(part["pool"], part["backgrounds"], bank.foreground_classes, synth, FEATURES, 10.0, 4,
                         AugmentConfig(event_variants=3), seed=0)
    return mixer, part


def test_mixes_are_seeded_fresh_and_labelled_where_the_sound_is(toy_mixer):
    mixer, _ = toy_mixer
    first = [mixer.mix(np.random.default_rng([0, 0, k])) for k in range(4)]
    again = mixer.mix(np.random.default_rng([0, 0, 0]))
    for a, b in zip(first[0], again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0][0], first[1][0])
    for logmel, strong, weak in first:
        assert logmel.shape == (1000, 64) and strong.shape == (250, 3) and weak.shape == (3,)
        assert np.isfinite(logmel).all() and logmel.min() >= -100.0
        np.testing.assert_array_equal(weak, strong.max(axis=0))
        assert 1 <= weak.sum() <= 3
        # Labelled frames are louder than unlabelled ones (toy events are tones 6-30 dB above noise).
        energy = logmel.reshape(250, 4, 64).max(axis=(1, 2))
        active = strong.max(axis=1) > 0
        assert energy[active].mean() > energy[~active].mean() + 3.0


def test_the_mixer_hears_only_the_train_split(toy_mixer):
    mixer, part = toy_mixer
    train_files = {c.relative_path for clips in part["pool"].values() for c in clips}
    assert train_files and all(c.relative_path.startswith("foreground/") for clips in part["pool"].values()
                               for c in clips)
    # variants: up to 3 per train file (a silent or sub-hop augmentation is dropped)
    assert sum(len(v) for v in mixer.events.values()) <= 3 * len(train_files)
    assert sum(len(v) for v in mixer.events.values()) >= 2 * len(train_files)


def test_silence_backgrounds_and_weak_only_targets(toy_bank_dir):
    bank = SoundBank.open(toy_bank_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        part = split_bank(bank, bank.foreground_classes, 0)["train"]
    synth = SynthConfig(min_events=0, max_events=0, background_gain_db=-200.0)   # silence: -200 dBFS
    mixer = DynamicMixer(part["pool"], part["backgrounds"], bank.foreground_classes, synth, FEATURES, 10.0, 4,
                         AugmentConfig(event_variants=1), label_type="weak", weak_clip_strong_target="mask")
    logmel, strong, weak = mixer.mix(np.random.default_rng(0))
    assert np.all(logmel == -100.0) and weak.sum() == 0 and np.all(strong < 0)   # floor, no label, masked


def test_dynamic_mixing_needs_a_synth_dataset():
    from sedweak.config import Config, ConfigError, DataConfig

    with pytest.raises(ConfigError, match="dynamic_mixing .* needs data.dataset: synth"):
        Config(augment=AugmentConfig(dynamic_mixing=True), data=DataConfig(dataset="desed"))
    with pytest.raises(ConfigError, match="event_variants must be >= 1"):
        dataclasses.replace(AugmentConfig(), event_variants=0)


@pytest.mark.slow   # the default suite trains on fresh mixes in test_training's exact-resume test
def test_training_runs_on_fresh_mixes(tmp_path, tiny_recipe):
    """The trainer feeds DynamicBatches (2 epochs of the tiny recipe) and evaluates as usual."""
    from sedweak.config import load_config
    from sedweak.training import run
    from sedweak.training.checkpoints import read_state

    recipe, overrides = tiny_recipe
    overrides = overrides + ["augment.dynamic_mixing=true", "augment.event_variants=2", "train.epochs=2"]
    config = load_config(recipe, overrides)
    result = run(config, tmp_path / "run", verbose=0)
    assert result.epochs_run == 2 and read_state(tmp_path / "run" / "checkpoints")["epoch"] == 2
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(history) == 3 and all("nan" not in line for line in history)
