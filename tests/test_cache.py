"""Feature cache: resume after kill -9, parallel == sequential, config refusal, streaming reads."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf

from sedweak.config import AugmentConfig, FeatureConfig
from sedweak.datasets import cache as cache_module
from sedweak.datasets.cache import (
    PENDING,
    CacheError,
    H5Features,
    build_cache,
    cached_logmels,
    partial_path,
)
from sedweak.training.batches import ClipBatches

SR = 16000
CLIP_SECONDS = 0.2  # 20 feature frames
CONFIG = FeatureConfig()
REPO = Path(__file__).resolve().parents[1]
FEATURISE_CLIP = cache_module.featurise_clip


def _clips(folder: Path, count: int, bad: tuple[int, ...] = ()) -> tuple[list[Path], list[str]]:
    """``count`` seeded noise clips (``bad`` indices are not audio)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"clip{i:03d}.wav"
        if i in bad:
            path.write_bytes(b"not a wav" * 50)
        else:
            sf.write(path, (0.1 * rng.standard_normal(int(CLIP_SECONDS * SR))).astype(np.float32), SR,
                     subtype="FLOAT")
        paths.append(path)
    return paths, [p.name for p in paths]


class Interrupted(Exception):
    """Stands for Ctrl-C (a real KeyboardInterrupt would stop pytest itself)."""


def _count_calls(monkeypatch, interrupt_after: int | None = None) -> list[str]:
    """Record the clips featurised in this process (optionally interrupted after some)."""
    calls, real = [], FEATURISE_CLIP

    def counting(path, config, clip_seconds):
        if interrupt_after is not None and len(calls) == interrupt_after:
            raise Interrupted
        calls.append(Path(path).name)
        return real(path, config, clip_seconds)

    monkeypatch.setattr(cache_module, "featurise_clip", counting)
    return calls


def _done_count(partial: Path) -> int:
    try:  # the writer holds the file: read without HDF5's lock (the file is consistent, see cache.py)
        with h5py.File(partial, "r", locking=False) as h5:
            return int(np.sum(h5["status"][:] != PENDING))
    except (OSError, KeyError):
        return 0


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from sedweak.config import FeatureConfig
    from sedweak.datasets import cache

    real = cache.featurise_clip
    def slow(path, config, clip_seconds):
        time.sleep(0.1)
        return real(path, config, clip_seconds)
    cache.featurise_clip = slow
    paths = sorted(Path(sys.argv[2]).glob("*.wav"))
    cache.build_cache(Path(sys.argv[1]), paths, [p.name for p in paths], FeatureConfig(), 0.2)
""")


def test_resume_after_kill_9_recomputes_only_unfinished_clips(tmp_path, monkeypatch):
    paths, names = _clips(tmp_path / "audio", 40, bad=(3,))
    cache_path = tmp_path / "features" / "train.h5"
    partial = partial_path(cache_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(cache_path), str(tmp_path / "audio")], env=env)
    deadline = time.monotonic() + 60
    while _done_count(partial) < 6:
        assert writer.poll() is None and time.monotonic() < deadline, "writer ended before it was killed"
        time.sleep(0.05)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert not cache_path.exists() and partial.is_file()
    with h5py.File(partial, "r") as h5:  # a plain open works: no metadata was being written
        status, rows = h5["status"][:], h5["logmel"][:]
    done = {names[i] for i in np.flatnonzero(status != PENDING)}
    assert 6 <= len(done) < 40

    calls = _count_calls(monkeypatch)
    resumed = cached_logmels(cache_path, paths, names, CONFIG, CLIP_SECONDS)
    assert sorted(calls) == sorted(set(names) - done) and resumed.computed == 40 - len(done)
    assert not partial.exists()
    with h5py.File(cache_path, "r") as h5:  # rows finished before the kill were kept as they were
        kept = np.flatnonzero(status == cache_module.OK)
        np.testing.assert_array_equal(h5["logmel"][kept], rows[kept])

    scratch = cached_logmels(tmp_path / "scratch.h5", paths, names, CONFIG, CLIP_SECONDS)
    assert resumed.filenames == scratch.filenames and len(resumed.filenames) == 39
    assert resumed.failed == scratch.failed and [f for f, _ in resumed.failed] == ["clip003.wav"]
    np.testing.assert_array_equal(resumed.features, scratch.features)


def test_interrupted_build_resumes_in_process(tmp_path, monkeypatch):
    paths, names = _clips(tmp_path / "audio", 6)
    cache_path = tmp_path / "c.h5"
    _count_calls(monkeypatch, interrupt_after=4)
    with pytest.raises(Interrupted):
        cached_logmels(cache_path, paths, names, CONFIG, CLIP_SECONDS)
    assert partial_path(cache_path).is_file() and not cache_path.exists()
    calls = _count_calls(monkeypatch)
    result = cached_logmels(cache_path, paths, names, CONFIG, CLIP_SECONDS)
    assert calls == names[4:] and result.computed == 2 and len(result.filenames) == 6


def test_parallel_build_equals_sequential_bit_for_bit(tmp_path):
    paths, names = _clips(tmp_path / "audio", 8, bad=(5,))
    build_cache(tmp_path / "seq.h5", paths, names, CONFIG, CLIP_SECONDS, num_workers=1)
    computed = build_cache(tmp_path / "par.h5", paths, names, CONFIG, CLIP_SECONDS, num_workers=2,
                           min_clips_per_worker=1, flush_every_clips=3)
    assert computed == 8
    with h5py.File(tmp_path / "seq.h5", "r") as seq, h5py.File(tmp_path / "par.h5", "r") as par:
        for key in ("logmel", "status", "reason", "filenames"):
            np.testing.assert_array_equal(seq[key][:], par[key][:])
        assert seq["status"][5] == cache_module.FAILED and seq["logmel"][:].dtype == np.float32


def test_partial_of_another_feature_config_is_refused(tmp_path, monkeypatch):
    paths, names = _clips(tmp_path / "audio", 4)
    cache_path = tmp_path / "c.h5"
    _count_calls(monkeypatch, interrupt_after=2)
    with pytest.raises(Interrupted):
        cached_logmels(cache_path, paths, names, CONFIG, CLIP_SECONDS)
    with pytest.raises(CacheError, match="partial cache of another feature config"):
        cached_logmels(cache_path, paths, names, FeatureConfig(n_mels=40), CLIP_SECONDS)
    with pytest.raises(CacheError, match="partial cache of another feature config"):
        cached_logmels(cache_path, paths, names, CONFIG, 0.3)


def test_partial_of_other_audio_starts_again(tmp_path, monkeypatch):
    paths, names = _clips(tmp_path / "audio", 4)
    cache_path = tmp_path / "c.h5"
    _count_calls(monkeypatch, interrupt_after=2)
    with pytest.raises(Interrupted):
        cached_logmels(cache_path, paths, names, CONFIG, CLIP_SECONDS)
    calls = _count_calls(monkeypatch)
    result = cached_logmels(cache_path, paths[:3], names[:3], CONFIG, CLIP_SECONDS)  # another clip list
    assert calls == names[:3] and result.computed == 3


def test_unreadable_partial_starts_again(tmp_path, monkeypatch):
    paths, names = _clips(tmp_path / "audio", 2)
    cache_path = tmp_path / "c.h5"
    partial_path(cache_path).write_bytes(b"\x00torn" * 100)
    result = cached_logmels(cache_path, paths, names, CONFIG, CLIP_SECONDS)
    assert result.computed == 2 and not partial_path(cache_path).exists()


# ----------------------------------------------------------------------------- streaming reads


def test_large_split_is_streamed_from_the_file(tmp_path):
    paths, names = _clips(tmp_path / "audio", 7, bad=(2,))
    cache_path = tmp_path / "c.h5"
    memory = cached_logmels(cache_path, paths, names, CONFIG, CLIP_SECONDS)
    streamed = cached_logmels(cache_path, paths, names, CONFIG, CLIP_SECONDS, in_memory_max_mb=0.0)
    assert memory.in_memory and not streamed.in_memory and streamed.computed == 0
    features = streamed.features
    assert isinstance(features, H5Features) and features.shape == (6, 20, 64) and len(features) == 6
    np.testing.assert_array_equal(features[4], memory.features[4])
    np.testing.assert_array_equal(features[1:5], memory.features[1:5])
    rows = np.array([5, 0, 3, 0, 5])  # unsorted, repeated: as balanced sampling asks
    np.testing.assert_array_equal(features[rows], memory.features[rows])
    np.testing.assert_array_equal(np.stack(list(features)), memory.features)
    np.testing.assert_array_equal(np.asarray(features), memory.features)
    np.testing.assert_array_equal(streamed.load().features, memory.features)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(features))[rows], memory.features[rows])
    assert features[np.array([], np.int64)].shape == (0, 20, 64)
    with pytest.raises(TypeError):
        features[0, 1]
    fits = cached_logmels(cache_path, paths, names, CONFIG, CLIP_SECONDS, in_memory_max_mb=1.0)
    assert fits.in_memory  # 6 x 20 x 64 float32 = 30 KB


def test_streamed_batches_equal_in_memory_batches(tmp_path):
    paths, names = _clips(tmp_path / "audio", 10)
    memory = cached_logmels(tmp_path / "c.h5", paths, names, CONFIG, CLIP_SECONDS)
    streamed = cached_logmels(tmp_path / "c.h5", paths, names, CONFIG, CLIP_SECONDS, in_memory_max_mb=0.0)
    rng = np.random.default_rng(0)
    strong = (rng.random((10, 5, 3)) > 0.7).astype(np.float32)
    weak = strong.max(axis=1)
    augment = AugmentConfig(freq_shift_bands_max=3, time_mask_frames_max=4)
    kwargs = dict(time_pooling=4, shuffle=True, augment=augment, seed=1, sampling="balanced",
                  class_weights=np.array([1.0, 2.0, 0.5], np.float32))
    a = ClipBatches(memory.features, strong, weak, 4, **kwargs)
    b = ClipBatches(streamed.features, strong, weak, 4, **kwargs)
    for i in range(len(a)):
        for left, right in zip(a[i], b[i]):
            if isinstance(left, dict):
                for key in left:
                    np.testing.assert_array_equal(left[key], right[key])
            else:
                np.testing.assert_array_equal(left, right)
