"""Saliency maps: where a trained CRNN looks, method identities, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from sedweak import saliency
from sedweak.audio import write_wav
from sedweak.cli import main
from sedweak.config import load_config
from sedweak.saliency import SaliencyOptions, saliency_for_file, saliency_maps

SAMPLE_RATE_HZ = 16000
CLIP_SECONDS = 4.0
TINY_OVERRIDES = [  # conftest's TINY_MODEL
    "model.conv_filters=[4, 4, 4]", "model.conv_pool_freq=[4, 4, 4]", "model.conv_pool_time=[2, 2, 1]",
    "model.rnn_units=[4]", "model.embedding_dim=8",
]


def one_event_clip(path, freq_hz: float, onset_seconds: float, duration_seconds: float, seed: int = 1):
    """4 s of faint white noise with one 0.2-amplitude tone; returns the WAV path."""
    rng = np.random.default_rng(seed)
    waveform = rng.normal(0.0, 0.01, int(CLIP_SECONDS * SAMPLE_RATE_HZ)).astype(np.float32)
    t = np.arange(int(duration_seconds * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    start = int(onset_seconds * SAMPLE_RATE_HZ)
    waveform[start:start + len(t)] += 0.2 * np.sin(2 * np.pi * freq_hz * t)
    return write_wav(path, waveform, SAMPLE_RATE_HZ)


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """A tiny untrained CRNN saved with its sidecar (4 s clips, 3 toy classes): (model, info, path)."""
    from sedweak.models.saving import load_model, save_model
    from sedweak.models.crnn import build_crnn
    from sedweak.training import model_info, seed_everything

    config = load_config(None, TINY_OVERRIDES + [f"data.clip_seconds={CLIP_SECONDS}"])
    info = model_info(config, ("Beep", "Buzz", "Chirp"))
    seed_everything(0)
    model = build_crnn(config.model, 3, config.features.n_mels, info.clip_frames)
    path = save_model(model, tmp_path_factory.mktemp("model") / "tiny.keras", info)
    model, info = load_model(path)
    return model, info, path


def test_saliency_concentrates_in_the_event_span_of_a_trained_crnn(tmp_path, tiny_recipe):
    """One 800 Hz Buzz from 1.5 to 2.0 s in a 4 s clip.

    Window = the event span +- the conv stack's receptive field (18 feature frames,
    0.18 s): frames [132, 218) = 21.5 % of the clip, the share an event-blind map
    would put there. The strong map (strong output summed over the detected event's
    frames) must put >= 80 % of its |saliency| there, 3.7x chance: only the event's
    frames carry evidence; measured 0.994. The weak map is spread by linear-softmax
    pooling (background frames lower sum(p^2) / sum(p), and the BiGRU couples
    frames), so it is only required to beat chance; measured 0.678.
    """
    from sedweak.training import run

    recipe, overrides = tiny_recipe
    overrides = overrides + ["train.epochs=15", "data.synth.num_train_clips=24", "train.learning_rate=0.01",
                             "train.early_stopping_patience_epochs=10"]
    result = run(load_config(recipe, overrides), tmp_path / "run", verbose=0)
    from sedweak.models.saving import load_model

    model, info = load_model(result.model_path)
    clip = one_event_clip(tmp_path / "buzz.wav", 800.0, 1.5, 0.5)
    found = saliency_for_file(model, info, clip, "Buzz")
    assert len(found.events) == 1 and found.events[0].onset_seconds < 2.0 < found.events[0].offset_seconds + 0.5
    assert 0 < found.strong_frames.sum() < len(found.strong_frames)  # summed over the event, not the clip
    margin = saliency.conv_receptive_field_frames(model)
    assert margin == 18
    first, stop = 150 - margin, 200 + margin
    chance = (stop - first) / found.logmel.shape[0]
    shares = {k: found.maps[k][first:stop].sum() / found.maps[k].sum() for k in ("strong", "weak")}
    print(f"concentration: {shares}, chance {chance:.3f}")
    assert shares["strong"] >= 0.8
    assert shares["weak"] > chance


def test_maps_have_the_input_shape_and_abs_of_signed(untrained):
    model, info, _ = untrained
    logmel = np.random.default_rng(0).normal(-50, 15, (info.clip_frames, 64)).astype(np.float32)
    for method in saliency.METHODS:
        maps = saliency_maps(model, logmel, 1, method, options=SaliencyOptions(samples=3, steps=4, batch_size=2))
        assert set(maps) == set(saliency.MAP_KEYS)
        for key in saliency.MAP_KEYS:
            assert maps[key].shape == (400, 64) and maps[key].dtype == np.float32
        np.testing.assert_array_equal(maps["strong"], np.abs(maps["strong_signed"]))
        assert maps["weak"].max() > 0


def test_strong_frames_select_what_is_summed(untrained):
    model, info, _ = untrained
    logmel = np.random.default_rng(0).normal(-50, 15, (info.clip_frames, 64)).astype(np.float32)
    halves = [saliency_maps(model, logmel, 0, strong_frames=s)["strong_signed"] for s in (slice(0, 50), slice(50, None))]
    whole = saliency_maps(model, logmel, 0)["strong_signed"]
    np.testing.assert_allclose(halves[0] + halves[1], whole, atol=1e-6 * np.abs(whole).max())
    with pytest.raises(ValueError, match=r"shape \(100,\)"):
        saliency_maps(model, logmel, 0, strong_frames=np.ones(7, bool))
    with pytest.raises(ValueError, match="logmel must have shape"):
        saliency_maps(model, logmel[:300], 0)


def test_smoothgrad_without_noise_is_the_gradient(untrained):
    model, info, _ = untrained
    logmel = np.random.default_rng(1).normal(-50, 15, (info.clip_frames, 64)).astype(np.float32)
    plain = saliency_maps(model, logmel, 2, "gradient")
    smooth = saliency_maps(model, logmel, 2, "smoothgrad", options=SaliencyOptions(samples=5, noise_fraction=0.0,
                                                                                 batch_size=2))
    for key in ("strong_signed", "weak_signed"):
        np.testing.assert_allclose(smooth[key], plain[key], rtol=1e-4, atol=1e-6 * np.abs(plain[key]).max())
    noisy = saliency_maps(model, logmel, 2, "smoothgrad", options=SaliencyOptions(samples=5, noise_fraction=0.1))
    assert not np.allclose(noisy["strong_signed"], plain["strong_signed"])


def test_integrated_gradients_are_complete(untrained):
    """sum(IG) = f(x) - f(silence) for exact integration; 64 midpoint steps stay within 2 %."""
    model, info, _ = untrained
    logmel = np.random.default_rng(2).normal(-40, 15, (info.clip_frames, 64)).astype(np.float32)
    baseline = np.full_like(logmel, -100.0)
    maps = saliency_maps(model, logmel, 1, "integrated-gradients", options=SaliencyOptions(steps=64))
    out = model.predict_on_batch(np.stack([logmel, baseline]))
    strong, weak = np.asarray(out["strong"])[:, :, 1].sum(axis=1), np.asarray(out["weak"])[:, 1]
    for key, values in (("strong_signed", strong), ("weak_signed", weak)):
        difference = values[0] - values[1]
        assert abs(difference) > 1e-3, "degenerate check: the model ignores the input"
        assert maps[key].sum() == pytest.approx(difference, rel=0.02), key


def test_unknown_class_and_method_are_clear_errors(untrained, tmp_path):
    model, info, _ = untrained
    clip = one_event_clip(tmp_path / "a.wav", 800.0, 1.0, 0.5)
    with pytest.raises(ValueError, match="unknown class 'Dog'; the model knows: Beep, Buzz, Chirp"):
        saliency_for_file(model, info, clip, "Dog")
    with pytest.raises(ValueError, match="choose from gradient, smoothgrad, integrated-gradients"):
        saliency_for_file(model, info, clip, "Buzz", method="guided")
    with pytest.raises(ValueError, match="out of range"):
        saliency_maps(model, np.zeros((info.clip_frames, 64), np.float32), 3)


def test_short_and_long_files_are_fitted_to_the_clip_length(untrained, tmp_path):
    model, info, _ = untrained
    for seconds in (1.0, 6.0):
        path = write_wav(tmp_path / f"{seconds}.wav", np.zeros(int(seconds * SAMPLE_RATE_HZ), np.float32), 16000)
        found = saliency_for_file(model, info, path, "Beep", event_frames="all")
        assert found.logmel.shape == (400, 64) and found.maps["weak"].shape == (400, 64)
        assert found.strong_frames.all()


def test_event_frame_mask_covers_overlapping_frames():
    from sedweak.labels import Event

    mask = saliency.event_frame_mask([Event("a", 0.04, 0.12, "x"), Event("a", 3.9, 9.0, "x")], 100, 25.0)
    assert np.flatnonzero(mask).tolist() == [1, 2] + list(range(97, 100))


def test_cli_writes_png_and_npz_per_file_and_skips_a_corrupt_one(untrained, tmp_path):
    _, _, model_path = untrained
    folder = tmp_path / "audio"
    one_event_clip(folder / "a.wav", 800.0, 1.0, 0.5)
    one_event_clip(folder / "sub" / "b.wav", 400.0, 2.0, 0.5)
    (folder / "broken.wav").write_bytes(b"RIFF not really a wave file")
    reference = tmp_path / "ref.tsv"
    reference.write_text("filename\tonset\toffset\tevent_label\na.wav\t1.0\t1.5\tBuzz\n")
    result = CliRunner().invoke(main, ["saliency", str(model_path), str(folder), "--class", "Buzz",
                                       "--method", "smoothgrad", "--samples", "2", "--out-dir", str(tmp_path / "out"),
                                       "--reference", str(reference)])
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "broken.wav" in result.output
    for stem in ("a", "b"):
        png, npz = tmp_path / "out" / f"{stem}.Buzz.smoothgrad.png", tmp_path / "out" / f"{stem}.Buzz.smoothgrad.npz"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with np.load(npz) as data:
            assert data["strong"].shape == data["weak"].shape == data["logmel"].shape == (400, 64)
            assert str(data["method"]) == "smoothgrad" and data["strong_frames"].shape == (100,)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a.Buzz.smoothgrad.npz", "a.Buzz.smoothgrad.png", "b.Buzz.smoothgrad.npz", "b.Buzz.smoothgrad.png"]


def test_cli_rejects_an_unknown_class_and_lists_the_known_ones(untrained, tmp_path):
    _, _, model_path = untrained
    clip = one_event_clip(tmp_path / "a.wav", 800.0, 1.0, 0.5)
    result = CliRunner().invoke(main, ["saliency", str(model_path), str(clip), "--class", "Dog"])
    assert result.exit_code != 0
    assert "unknown class 'Dog'; the model knows: Beep, Buzz, Chirp" in result.output


def test_cli_method_choices_match_the_library():
    option = next(p for p in main.commands["saliency"].params if p.name == "method")
    assert tuple(option.type.choices) == saliency.METHODS


def test_importing_saliency_loads_no_heavy_module(modules_loaded_by):
    assert modules_loaded_by("import sedweak.saliency", {"tensorflow", "keras", "matplotlib", "librosa"}) == []
