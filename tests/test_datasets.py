"""Datasets: DESED folder loading, the log-mel cache, targets and training batches."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from sedweak.config import AugmentConfig, FeatureConfig
from sedweak.datasets import cache as cache_module
from sedweak.datasets.cache import CacheError, cached_logmels
from sedweak.datasets.clipset import ClipSet, classes_in
from sedweak.datasets.folder import load_split
from sedweak.features import logmel_librosa
from sedweak.labels import Event, LabelError
from sedweak.losses import MASKED
from sedweak.training.batches import ClipBatches, mix_logmels
from sedweak.training.targets import build_targets, unite_targets

CLASSES = ("cat", "dog", "speech")
SR = 16000
CLIP_SECONDS = 0.2  # 20 feature frames: fast
CONFIG = FeatureConfig()


def _tone(freq_hz: float, seconds: float = CLIP_SECONDS, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _dataset(root):
    """Split 'train': a, b strong (b without events), c weak only."""
    (root / "metadata").mkdir(parents=True)
    (root / "metadata" / "train.tsv").write_text(
        "filename\tonset\toffset\tevent_label\n"
        "a.wav\t0.0\t0.5\tdog\na.wav\t0.2\t0.4\tcat\nb.wav\t\t\t\n", encoding="utf-8")
    (root / "metadata" / "train_weak.tsv").write_text(
        "filename\tevent_labels\na.wav\tcat,dog\nc.wav\tspeech\n", encoding="utf-8")
    return root


# ----------------------------------------------------------------------------- folder


def test_load_split_strong_and_weak(tmp_path):
    clips = load_split(_dataset(tmp_path / "ds"), "train", classes=CLASSES)
    assert clips.name == "train" and len(clips) == 3
    assert clips.filenames == ("a.wav", "b.wav", "c.wav")
    assert clips.audio_paths == tuple(tmp_path / "ds" / "audio" / "train" / n for n in clips.filenames)
    assert clips.weak == {"a.wav": ["cat", "dog"], "b.wav": [], "c.wav": ["speech"]}
    assert clips.strong["a.wav"] == [Event("a.wav", 0.0, 0.5, "dog"), Event("a.wav", 0.2, 0.4, "cat")]
    assert clips.strong["b.wav"] == [] and clips.strong["c.wav"] is None
    assert set(clips.strong_reference) == {"a.wav", "b.wav"}
    sub = clips.subset([2, 0])
    assert sub.filenames == ("c.wav", "a.wav") and sub.audio_paths[0].name == "c.wav"
    assert set(sub.weak) == set(sub.strong) == {"a.wav", "c.wav"}
    assert classes_in(clips) == ["cat", "dog", "speech"]
    assert classes_in(sub.subset([1]), ClipSet("x", (), (), {"z": ["bird"]}, {"z": None})) == ["bird", "cat", "dog"]


def test_load_split_errors(tmp_path):
    root = _dataset(tmp_path / "ds")
    with pytest.raises(LabelError, match="split 'valid' has neither valid.tsv nor valid_weak.tsv"):
        load_split(root, "valid")
    with pytest.raises(LabelError, match=r"train\.tsv:2: unknown label 'dog'"):
        load_split(root, "train", classes=("cat", "speech"))
    (root / "metadata" / "train_weak.tsv").write_text("filename\tevent_labels\na.wav\tcat\n")
    with pytest.raises(LabelError, match="disagree"):
        load_split(root, "train")


def test_load_split_weak_only(tmp_path):
    (tmp_path / "metadata").mkdir()
    (tmp_path / "metadata" / "w_weak.tsv").write_text("filename\tevent_labels\nz.wav\tdog\ny.wav\t\n")
    clips = load_split(tmp_path, "w")
    assert clips.filenames == ("y.wav", "z.wav")
    assert clips.strong == {"y.wav": None, "z.wav": None} and clips.strong_reference == {}


# ----------------------------------------------------------------------------- cache


def _audio(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    paths = []
    for name, freq in (("a.wav", 500.0), ("b.wav", 2000.0)):
        sf.write(folder / name, _tone(freq), SR, subtype="FLOAT")
        paths.append(folder / name)
    (folder / "bad.wav").write_bytes(b"garbage" * 100)
    paths.insert(1, folder / "bad.wav")
    return paths, [p.name for p in paths]


def test_cached_logmels_computes_then_reads_cache(tmp_path, monkeypatch):
    paths, names = _audio(tmp_path)
    cache_path = tmp_path / "cache" / "train.h5"
    first = cached_logmels(cache_path, paths, names, CONFIG, CLIP_SECONDS)
    assert first.filenames == ("a.wav", "b.wav")
    assert [f for f, _ in first.failed] == ["bad.wav"] and "unreadable audio" in first.failed[0][1]
    assert first.features.shape == (2, 20, 64) and first.features.dtype == np.float32
    np.testing.assert_allclose(first.features[1], logmel_librosa(_tone(2000.0), CONFIG), atol=1e-5)
    assert [p.name for p in cache_path.parent.iterdir()] == ["train.h5"]  # no temp file left

    def fail(*args, **kwargs):
        raise AssertionError("recomputed although the cache is valid")

    monkeypatch.setattr(cache_module, "compute_logmels", fail)
    second = cached_logmels(cache_path, paths, names, CONFIG, CLIP_SECONDS)
    assert second.filenames == first.filenames and second.failed == first.failed
    np.testing.assert_array_equal(second.features, first.features)


def test_cached_logmels_pads_short_clip(tmp_path):
    path = tmp_path / "short.wav"
    sf.write(path, _tone(1000.0, seconds=0.05), SR, subtype="FLOAT")
    result = cached_logmels(tmp_path / "c.h5", [path], ["short.wav"], CONFIG, CLIP_SECONDS)
    assert result.features.shape == (1, 20, 64)
    assert np.all(result.features[0, 7:] == pytest.approx(-100.0))  # zero padding -> floor


def test_cached_logmels_rebuilds_when_audio_changes(tmp_path):
    paths, names = _audio(tmp_path)
    cache_path = tmp_path / "train.h5"
    first = cached_logmels(cache_path, paths, names, CONFIG, CLIP_SECONDS)
    # Re-synthesized: same name and size, new content and modification time.
    sf.write(paths[0], _tone(3000.0), SR, subtype="FLOAT")
    stat = paths[0].stat()
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    second = cached_logmels(cache_path, paths, names, CONFIG, CLIP_SECONDS)
    assert not np.allclose(second.features[0], first.features[0])
    np.testing.assert_allclose(second.features[0], logmel_librosa(_tone(3000.0), CONFIG), atol=1e-5)
    np.testing.assert_array_equal(second.features[1], first.features[1])


def test_cached_logmels_rebuilds_for_other_clip_list(tmp_path):
    paths, names = _audio(tmp_path)
    cache_path = tmp_path / "train.h5"
    cached_logmels(cache_path, paths[:1], names[:1], CONFIG, CLIP_SECONDS)
    result = cached_logmels(cache_path, paths, names, CONFIG, CLIP_SECONDS)
    assert result.filenames == ("a.wav", "b.wav")


def test_corrupt_cache_file_raises_cache_error(tmp_path):
    paths, names = _audio(tmp_path)
    cache_path = tmp_path / "broken.h5"
    cache_path.write_bytes(b"\x00not hdf5" * 64)
    with pytest.raises(CacheError) as info:
        cached_logmels(cache_path, paths, names, CONFIG, CLIP_SECONDS)
    assert str(cache_path) in str(info.value) and "unreadable feature cache" in str(info.value)


def test_cache_with_other_feature_config_raises(tmp_path):
    paths, names = _audio(tmp_path)
    cache_path = tmp_path / "train.h5"
    cached_logmels(cache_path, paths, names, CONFIG, CLIP_SECONDS)
    with pytest.raises(CacheError, match="another feature config"):
        cached_logmels(cache_path, paths, names, FeatureConfig(n_mels=40), CLIP_SECONDS)


# ----------------------------------------------------------------------------- targets


def _clipset():
    return ClipSet(
        "t", (), ("s.wav", "w.wav", "e.wav"),
        weak={"s.wav": ["cat", "speech"], "w.wav": ["dog"], "e.wav": []},
        strong={"s.wav": [Event("s.wav", 0.0, 0.08, "cat"), Event("s.wav", 0.16, 0.4, "speech")],
                "w.wav": None, "e.wav": []})


def test_build_targets_strong_repeat():
    strong, weak = build_targets(_clipset(), ["w.wav", "s.wav", "e.wav"], CLASSES, 10, 25.0)
    assert strong.shape == (3, 10, 3) and weak.shape == (3, 3)
    np.testing.assert_array_equal(weak, [[0, 1, 0], [1, 0, 1], [0, 0, 0]])
    np.testing.assert_array_equal(strong[0], np.tile([0, 1, 0], (10, 1)))  # weak clip: repeated
    expected = np.zeros((10, 3))
    expected[0:2, 0] = 1   # 0 .. 0.08 s at 25 fps
    expected[4:10, 2] = 1  # 0.16 .. 0.4 s
    np.testing.assert_array_equal(strong[1], expected)
    np.testing.assert_array_equal(strong[2], 0)  # strongly labelled, no event: all zeros, not masked


def test_build_targets_strong_mask():
    strong, _ = build_targets(_clipset(), ["s.wav", "w.wav", "e.wav"], CLASSES, 10, 25.0,
                              weak_clip_strong_target="mask")
    assert np.all(strong[1] == MASKED) and MASKED == -1.0
    assert strong[0].min() == 0 and strong[0].max() == 1
    np.testing.assert_array_equal(strong[2], 0)


@pytest.mark.parametrize("mode", ["repeat", "mask"])
def test_build_targets_weak_label_type_ignores_strong(mode):
    strong, weak = build_targets(_clipset(), ["s.wav", "e.wav"], CLASSES, 4, 25.0, label_type="weak",
                                 weak_clip_strong_target=mode)
    if mode == "repeat":
        np.testing.assert_array_equal(strong[0], np.tile([1, 0, 1], (4, 1)))
        np.testing.assert_array_equal(strong[1], 0)
    else:
        assert np.all(strong == MASKED)
    np.testing.assert_array_equal(weak, [[1, 0, 1], [0, 0, 0]])


def test_unite_targets_masked_wins():
    a = np.array([[0, 1, MASKED, 0]], np.float32)
    b = np.array([[1, 0, 1, MASKED]], np.float32)
    out = unite_targets(a, b)
    np.testing.assert_array_equal(out, [[1, 1, MASKED, MASKED]])
    assert out.dtype == np.float32


def test_mix_logmels_golden():
    a = np.full((2, 3), -20.0, np.float32)
    np.testing.assert_allclose(mix_logmels(a, a, 0.0), -20.0 + 10 * np.log10(2), atol=1e-5)
    # b 6 dB down: 10 log10(10^-2 + 10^-2.6)
    np.testing.assert_allclose(mix_logmels(a, a, -6.0), 10 * np.log10(10 ** -2 + 10 ** -2.6), atol=1e-5)
    # a much louder source dominates
    np.testing.assert_allclose(mix_logmels(np.array([0.0]), np.array([-100.0]), 0.0), 0.0, atol=1e-5)


# ----------------------------------------------------------------------------- batches


def _arrays(clips=5, frames=16, mels=12, model_frames=4):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(clips, frames, mels)).astype(np.float32)
    strong = (rng.random((clips, model_frames, 2)) > 0.5).astype(np.float32)
    weak = strong.max(axis=1)
    return features, strong, weak


def test_clip_batches_shapes_and_order_without_shuffle():
    features, strong, weak = _arrays()
    batches = ClipBatches(features, strong, weak, batch_size=2, time_pooling=4)
    assert len(batches) == 3
    x, y = batches[2]  # ragged last batch
    assert x.shape == (1, 16, 12) and y["strong"].shape == (1, 4, 2) and y["weak"].shape == (1, 2)
    x0, y0 = batches[0]
    np.testing.assert_array_equal(x0, features[:2])
    np.testing.assert_array_equal(y0["strong"], strong[:2])
    assert len(ClipBatches(features, strong, weak, 2, max_batches=2)) == 2
    with pytest.raises(ValueError, match="same number of clips"):
        ClipBatches(features, strong[:3], weak, 2)


def _epoch(batches):
    return [batches[i] for i in range(len(batches))]


def test_clip_batches_seeded_and_shuffled_per_epoch():
    features, strong, weak = _arrays(clips=12)
    augment = AugmentConfig()  # every augmentation on, mixing included
    a = ClipBatches(features, strong, weak, 4, time_pooling=4, shuffle=True, augment=augment, seed=3)
    b = ClipBatches(features, strong, weak, 4, time_pooling=4, shuffle=True, augment=augment, seed=3)
    for (xa, ya), (xb, yb) in zip(_epoch(a), _epoch(b)):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya["strong"], yb["strong"])
    order0 = a.order.copy()
    assert sorted(order0) == list(range(12))
    a.on_epoch_end()
    assert sorted(a.order) == list(range(12)) and not np.array_equal(a.order, order0)
    c = ClipBatches(features, strong, weak, 4, shuffle=True, seed=4)
    assert not np.array_equal(c.order, order0)
    # Augmentation does not touch the stored arrays.
    np.testing.assert_array_equal(features, _arrays(clips=12)[0])


def test_time_shift_keeps_strong_targets_aligned_with_features():
    pool, model_frames, mels = 4, 25, 8
    frames = model_frames * pool
    rng = np.random.default_rng(1)
    strong = np.zeros((6, model_frames, 2), np.float32)
    for clip in range(6):
        onset = int(rng.integers(0, model_frames - 3))
        strong[clip, onset:onset + int(rng.integers(2, 8)), 0] = 1
    features = np.full((6, frames, mels), -80.0, np.float32)
    loud = np.repeat(strong[:, :, 0], pool, axis=1) > 0   # (clips, frames)
    features[:, :, 2][loud] = 0.0                         # class 0 marked by a loud band
    weak = strong.max(axis=1)
    augment = AugmentConfig(gain_db_max=0.0, time_shift=True, freq_mask_bands_max=0, mix_probability=0.0)
    batches = ClipBatches(features, strong, weak, 3, time_pooling=pool, shuffle=True, augment=augment, seed=0)
    shifted = 0
    for _ in range(2):
        for x, y in _epoch(batches):
            loud_frames = x[:, :, 2] > -40.0
            np.testing.assert_array_equal(loud_frames, np.repeat(y["strong"][:, :, 0], pool, axis=1) > 0)
            np.testing.assert_array_equal(y["weak"][:, 0], 1)
            shifted += int(not any(np.array_equal(s, t) for s in y["strong"] for t in strong))
        batches.on_epoch_end()
    assert shifted > 0  # the shift really happened


def test_time_shift_alignment_when_frames_not_multiple_of_pooling():
    pool, model_frames, mels = 4, 25, 8
    frames = model_frames * pool + 2  # the CRNN floors: 102 frames -> 25 model frames
    strong = np.zeros((6, model_frames, 1), np.float32)
    strong[:, 20:, 0] = 1  # an event up to the last labelled frame; the 2 tail frames quiet
    features = np.full((6, frames, mels), -80.0, np.float32)
    features[:, 80:100, 2] = 0.0
    augment = AugmentConfig(gain_db_max=0.0, time_shift=True, freq_mask_bands_max=0, mix_probability=0.0)
    batches = ClipBatches(features, strong, strong.max(axis=1), 6, time_pooling=pool, augment=augment, seed=0)
    x, y = batches[0]
    loud = x[:, :model_frames * pool, 2] > -40.0
    np.testing.assert_array_equal(loud, np.repeat(y["strong"][:, :, 0], pool, axis=1) > 0)


def test_freq_mask_wider_than_the_spectrogram_is_clamped():
    from sedweak.config import AugmentConfig
    from sedweak.training.batches import ClipBatches

    features = np.zeros((2, 8, 6), np.float32)
    augment = AugmentConfig(gain_db_max=0.0, time_shift=False, freq_mask_bands_max=8, mix_probability=0.0)
    batches = ClipBatches(features, np.zeros((2, 8, 1), np.float32), np.zeros((2, 1), np.float32), 2,
                          augment=augment, seed=0)
    x, _ = batches[0]
    assert x.shape == (2, 8, 6)
