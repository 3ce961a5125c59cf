"""Log-mel feature cache in HDF5: computed once, checked against the feature config.

The cache file records the feature config and clip length; opening it with another
config is an error instead of silently mixing features. Clips that fail to load
are skipped and listed (``CacheResult.failed``) so a long run reports them instead
of dying. The file is written to a temporary name and renamed when complete; a cache whose
audio changed since (names, sizes, modification times) is rebuilt.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from sedweak.audio import AudioError, fit_length, load_audio
from sedweak.config import FeatureConfig


class CacheError(RuntimeError):
    """A cache built with a different configuration, or unreadable."""


@dataclass(frozen=True)
class CacheResult:
    features: np.ndarray  # (clips, frames, n_mels) float32, for the clips in ``filenames``
    filenames: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]  # (filename, reason)


def _signature(config: FeatureConfig, clip_seconds: float) -> str:
    return json.dumps({"features": asdict(config), "clip_seconds": clip_seconds}, sort_keys=True)


def _content_key(paths: Sequence[Path]) -> str:
    """Identity of the audio behind a cache: names, sizes and modification times."""
    import hashlib

    digest = hashlib.sha1()
    for path in paths:
        stat = Path(path).stat() if Path(path).exists() else None
        digest.update(f"{Path(path).name}:{stat.st_size if stat else -1}:{stat.st_mtime_ns if stat else -1}\n".encode())
    return digest.hexdigest()


def compute_logmels(paths: Sequence[Path], config: FeatureConfig, clip_seconds: float,
                    progress: bool = False) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Load, pad/cut to ``clip_seconds`` and compute log-mels with the librosa reference.

    Returns (features (ok_clips, frames, n_mels), indices of ok clips, failures).
    """
    from sedweak.features import logmel_librosa

    num_samples = int(round(clip_seconds * config.sample_rate_hz))
    out, ok, failed = [], [], []
    iterator = enumerate(paths)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=len(paths), desc="log-mel", unit="clip")
    for i, path in iterator:
        try:
            waveform = fit_length(load_audio(path, config.sample_rate_hz), num_samples)
        except AudioError as err:
            failed.append((Path(path).name, str(err)))
            continue
        out.append(logmel_librosa(waveform, config))
        ok.append(i)
    frames = config.num_frames(num_samples)
    array = np.stack(out) if out else np.zeros((0, frames, config.n_mels), np.float32)
    return array.astype(np.float32), ok, failed


def cached_logmels(cache_path: Path, paths: Sequence[Path], filenames: Sequence[str],
                   config: FeatureConfig, clip_seconds: float, progress: bool = False) -> CacheResult:
    """Features for ``paths``, from ``cache_path`` when it exists, else computed and saved."""
    cache_path = Path(cache_path)
    signature = _signature(config, clip_seconds)
    content = _content_key(paths)
    if cache_path.is_file():
        cached = _read(cache_path, signature, filenames)
        if cached is not None and cached[1] == content:
            return cached[0]
    # Missing, or stale (the audio changed, e.g. re-synthesized): (re)compute.
    features, ok, failed = compute_logmels(paths, config, clip_seconds, progress)
    names = tuple(filenames[i] for i in ok)
    failed_indices = sorted(set(range(len(paths))) - set(ok))
    failed = [(filenames[i], why) for i, (_, why) in zip(failed_indices, failed)]  # keyed like the split
    _write(cache_path, signature, content, features, names, failed)
    return CacheResult(features, names, tuple(failed))


def _read(cache_path: Path, signature: str, filenames: Sequence[str]) -> tuple[CacheResult, str] | None:
    """The cached result and its content key; None when it lacks clips of the split."""
    try:
        with h5py.File(cache_path, "r") as h5:
            stored = h5.attrs["signature"]
            if stored != signature:
                raise CacheError(f"{cache_path}: built with another feature config or clip length; "
                                 f"delete it or use another workdir.\n  cache: {stored}\n  now:   {signature}")
            names = tuple(n.decode() for n in h5["filenames"][:])
            failed = tuple(tuple(json.loads(h5.attrs["failed"])))
            content = str(h5.attrs.get("content", ""))
            features = h5["logmel"][:]
    except (OSError, KeyError) as err:
        raise CacheError(f"{cache_path}: unreadable feature cache ({err}); delete it to rebuild") from None
    if set(filenames) != set(names) | {f for f, _ in failed}:
        return None
    return CacheResult(features, names, tuple((f, r) for f, r in failed)), content


def _write(cache_path: Path, signature: str, content: str, features: np.ndarray, names: Sequence[str],
           failed: Sequence[tuple[str, str]]) -> None:
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}.tmp")
    with h5py.File(tmp, "w") as h5:
        h5.attrs["signature"] = signature
        h5.attrs["content"] = content
        h5.attrs["failed"] = json.dumps([list(x) for x in failed])
        h5.create_dataset("logmel", data=features, chunks=(1, *features.shape[1:]) if len(features) else None)
        h5.create_dataset("filenames", data=np.array([n.encode() for n in names], dtype="S"))
    os.replace(tmp, cache_path)
