"""Jansen et al.'s self-supervised triplets: each positive rule, the batch layout, seeding;
``sedweak pretrain`` end to end and ``train.init_from``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from sedweak.config import ConfigError, load_config
from sedweak.embeddings.self_supervised import SelfSupervisedTriplets, noisy, recoloured

W = 20  # window frames


def ramp(frames, mels=8, offset=0.0):
    """A recording whose frame t holds the value offset + t in every band: a window's first
    value tells where it starts."""
    return np.repeat(np.arange(frames, dtype=np.float32)[:, None] + offset, mels, axis=1) - 60.0


def sampler(sources, method, **kwargs):
    return SelfSupervisedTriplets(sources, W, pairs_per_batch=8, batches_per_epoch=3, methods=(method,), **kwargs)


def halves(batch):
    x, y = batch
    n = len(x) // 2
    return x[:n], x[n:], y["embedding"]


def test_batch_layout_and_seeding():
    data = sampler([ramp(100)], "shift")
    anchors, positives, ids = halves(data[0])
    assert anchors.shape == positives.shape == (8, W, 8) and anchors.dtype == np.float32
    assert ids.tolist() == list(range(8)) * 2
    assert np.array_equal(data[0][0], data[0][0])           # (seed, epoch, batch) fixes a batch
    other = sampler([ramp(100)], "shift")
    other.set_epoch(1)
    assert not np.array_equal(other[0][0], data[0][0])
    for start in anchors[:, 0, 0] + 60.0:                    # windows lie inside the recording
        assert 0 <= start <= 100 - W


def test_shift_is_a_circular_roll_in_time_and_a_truncated_shift_in_frequency():
    anchors, positives, _ = halves(sampler([ramp(100)], "shift", freq_shift_bands_max=0)[1])
    for a, p in zip(anchors, positives):
        assert any(np.array_equal(np.roll(a, k, axis=0), p) for k in range(W))
    x = np.tile(np.arange(8, dtype=np.float32), (W, 1))     # band b holds b
    anchors, positives, _ = halves(SelfSupervisedTriplets([x], W, 8, 1, methods=("shift",),
                                                          freq_shift_bands_max=2)[0])
    for p in positives:            # bands moved by at most 2, the vacated ones repeat the edge band
        row = p[0]
        moved = int(row[4] - 4)   # band b now holds band b + moved (clipped at the edges)
        assert abs(moved) <= 2 and np.array_equal(row, np.clip(np.arange(8) + moved, 0, 7))


def test_proximity_takes_another_window_of_the_same_recording_within_dt():
    recordings = [ramp(200), ramp(200, offset=1000.0)]
    anchors, positives, _ = halves(sampler(recordings, "proximity", proximity_frames=15)[0])
    for a, p in zip(anchors, positives):
        assert (a[0, 0] >= 1000 - 60) == (p[0, 0] >= 1000 - 60)   # same recording
        assert 0 < abs(float(p[0, 0] - a[0, 0])) <= 15
        assert np.array_equal(p[:, 0], p[0, 0] + np.arange(W, dtype=np.float32))   # an unaltered window
    # a recording of exactly one window has no other: the rule falls back to a shift
    anchors, positives, _ = halves(sampler([ramp(W)], "proximity")[0])
    assert all(any(np.array_equal(np.roll(a, k, axis=0), q) for k in range(W)) for a, q in zip(anchors, positives))


def test_mix_and_noise_add_power_below_the_anchor():
    """Both add power (never remove it); noise at a fixed 10 dB SNR raises the mean power by
    10 log10(1.1) = 0.41 dB on average (exponential bin powers of mean level / 10)."""
    rng = np.random.default_rng(0)
    recordings = [rng.normal(-40, 6, (300, 8)).astype(np.float32) for _ in range(3)]
    anchors, positives, _ = halves(sampler(recordings, "mix", mix_gain_db=(-12.0, -3.0))[0])
    assert (positives >= anchors - 1e-4).all() and (positives > anchors + 1e-3).any()
    x = rng.normal(-40, 6, (2000, 64)).astype(np.float32)
    y = noisy(np.random.default_rng(1), x, 10.0)
    gain_db = 10 * np.log10(np.mean(10 ** (y / 10)) / np.mean(10 ** (x / 10)))
    assert (y >= x - 1e-4).all() and gain_db == pytest.approx(10 * np.log10(1.1), abs=0.02)


def test_recoloured_adds_a_gain_and_a_linear_tilt_over_the_bands():
    """Golden: gain g and tilt t give x + g + t * (-0.5, -0.25, 0, 0.25, 0.5) on 5 bands."""
    x = np.random.default_rng(0).normal(-40, 6, (30, 5)).astype(np.float32)
    rng, probe = np.random.default_rng(3), np.random.default_rng(3)
    gain, tilt = probe.uniform(-6, 6), probe.uniform(-12, 12)
    y = recoloured(rng, x, 6.0, 12.0)
    np.testing.assert_allclose(y - x, np.tile(gain + tilt * np.array([-0.5, -0.25, 0, 0.25, 0.5]), (30, 1)),
                               atol=1e-4)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(recoloured(rng, x, 0.0, 0.0), x)   # both off: the window as it was
    assert np.array_equal(recoloured(rng, x[:, :1], 0.0, 12.0), x[:, :1])   # one band: no tilt


@pytest.mark.parametrize("method", ["shift", "noise", "mix", "proximity"])
def test_channel_views_recolour_every_window_independently_and_keep_the_batch(method):
    """With views each window of a batch is the same window without them plus a line over
    the bands (constant in time) within the bounds; anchor and positive get their own."""
    rng = np.random.default_rng(0)
    recordings = [rng.normal(-40, 6, (300, 8)).astype(np.float32) for _ in range(3)]
    plain = sampler(recordings, method, seed=4)[2][0]
    viewed, ids = sampler(recordings, method, seed=4, view_gain_db_max=6.0, view_tilt_db_max=12.0)[2]
    offsets = (viewed - plain).astype(np.float64)
    np.testing.assert_allclose(offsets, np.repeat(offsets[:, :1], W, axis=1), atol=1e-3)   # one line per window
    lines = offsets[:, 0, :]                                                               # (windows, bands)
    steps = np.diff(lines, axis=1)
    np.testing.assert_allclose(steps, np.repeat(steps[:, :1], 7, axis=1), atol=1e-3)       # linear in the band
    assert (np.abs(lines.mean(axis=1)) <= 6.0 + 1e-3).all() and (np.abs(lines[:, -1] - lines[:, 0]) <= 12.0 + 1e-3).all()
    assert not np.allclose(lines[:8], lines[8:], atol=0.1)                                 # anchor, positive apart
    assert ids["embedding"].tolist() == list(range(8)) * 2


def test_the_recipe_sets_the_views():
    from sedweak.training.pretrain import triplet_batches

    config = load_config(None, ["pretrain.view_gain_db_max=3", "pretrain.view_tilt_db_max=9"])
    batches = triplet_batches(config, [ramp(200, mels=config.features.n_mels)])
    assert (batches.view_gain_db_max, batches.view_tilt_db_max) == (3.0, 9.0)
    default = load_config(None, []).pretrain
    assert (default.view_gain_db_max, default.view_tilt_db_max) == (0, 0)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="subset"):
        SelfSupervisedTriplets([ramp(50)], W, methods=("echo",))
    with pytest.raises(ValueError, match="no recordings"):
        SelfSupervisedTriplets([], W)
    with pytest.raises(ValueError, match="pairs_per_batch >= 2"):
        SelfSupervisedTriplets([ramp(50)], W, pairs_per_batch=1)
    with pytest.raises(ConfigError, match="pretrain.methods"):
        load_config(None, ["pretrain.methods=[echo]"])
    with pytest.raises(ConfigError, match="needs pretrain.folder"):
        load_config(None, ["pretrain.source=folder"])
    with pytest.raises(ValueError, match="view_gain_db_max and view_tilt_db_max must be >= 0"):
        SelfSupervisedTriplets([ramp(50)], W, view_tilt_db_max=-1.0)
    with pytest.raises(ConfigError, match="pretrain.view_gain_db_max and pretrain.view_tilt_db_max must be >= 0"):
        load_config(None, ["pretrain.view_gain_db_max=-3"])
    short = SelfSupervisedTriplets([ramp(5)], W, pairs_per_batch=2, methods=("noise",))   # padded to a window
    assert short[0][0].shape == (4, W, 8)


def test_pretrain_then_init_from(tmp_path, tiny_recipe):
    """A fast pre-training on a folder (one unreadable file skipped and listed), resumable
    refusal, then a detector initialised from it: the copied layers start equal."""
    import keras

    from sedweak.models.crnn import build_crnn
    from sedweak.models.saving import load_model
    from sedweak.training.pretrain import init_from, run_pretrain
    from sedweak.training.trainer import WorkdirError

    recipe, overrides = tiny_recipe
    folder = tmp_path / "audio"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        sf.write(folder / f"n{i}.wav", (0.1 * rng.standard_normal(16000 * 3)).astype(np.float32), 16000)
    (folder / "bad.wav").write_bytes(b"not audio at all")
    config = load_config(recipe, overrides + ["train.fast_dev_run=true", "pretrain.source=folder",
                                              f"pretrain.folder={folder}", "pretrain.window_seconds=0.5"])
    path = run_pretrain(config, tmp_path / "pre", verbose=0)
    sources = json.loads((tmp_path / "pre" / "sources.json").read_text())
    assert sources["used"] == 3 and [s[0] for s in sources["skipped"]] == [str(folder / "bad.wav")]
    model, info = load_model(path)
    assert model.input.shape[1] == 48 and info.clip_seconds == 0.48   # 0.5 s on the 4-frame model grid
    with pytest.raises(WorkdirError, match="--resume"):
        run_pretrain(config, tmp_path / "pre", verbose=0)
    changed = load_config(recipe, overrides + ["train.fast_dev_run=true", "pretrain.source=folder",
                                               f"pretrain.folder={folder}", "pretrain.window_seconds=1.0"])
    with pytest.raises(WorkdirError, match="pretrain.window_seconds: 0.5 -> 1.0"):
        run_pretrain(changed, tmp_path / "pre", resume=True, verbose=0)
    assert run_pretrain(config, tmp_path / "pre", resume=True, verbose=0) == path   # finished: nothing to redo

    detector_config = load_config(recipe, overrides)
    keras.utils.set_random_seed(1)
    detector = build_crnn(detector_config.model, 3, 64, 400)
    copied = init_from(detector, path)
    assert {"conv_block_0", "bigru_0", "embedding_dense"} <= set(copied)
    for name in copied:
        for a, b in zip(detector.get_layer(name).get_weights(), model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(Exception, match="no layer of this model matches"):
        init_from(_unrelated(), path)


def _unrelated():
    """A model with none of the CRNN's layer names."""
    import keras

    inputs = keras.Input((400, 64))
    return keras.Model(inputs, keras.layers.Dense(2, name="unrelated")(inputs))
