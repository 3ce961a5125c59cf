"""From a config to ready arrays: synthesize or open the dataset, cache log-mels.

``prepare_data`` is the one entry point training, evaluation and the demo share.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sedweak.config import Config
from sedweak.datasets.cache import CacheResult, cache_signature, cached_logmels
from sedweak.datasets.clipset import ClipSet, classes_in
from sedweak.datasets.folder import load_split
from sedweak.datasets.registry import read_dataset

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "eval")
FAST_DEV_CLIPS = {"num_train_clips": 16, "num_valid_clips": 8, "num_eval_clips": 8}


@dataclass(frozen=True)
class PreparedData:
    """Splits of a dataset; ``features[split].features`` is in memory or streamed from its h5
    cache, by size (``cache.in_memory_max_mb``)."""

    root: Path
    classes: tuple[str, ...]
    clips: dict[str, ClipSet]
    features: dict[str, CacheResult]

    def failures(self) -> list[tuple[str, str]]:
        return [(f"{s}/{name}", why) for s, r in self.features.items() for name, why in r.failed]


def fast_dev_synth(synth):
    """A few clips per split (``FAST_DEV_CLIPS``), the extra eval splits too."""
    small = {k: min(v, getattr(synth, k)) for k, v in FAST_DEV_CLIPS.items()}
    small["num_eval_seen_clips"] = min(synth.num_eval_seen_clips, FAST_DEV_CLIPS["num_eval_clips"])
    small["num_unlabelled_clips"] = min(synth.num_unlabelled_clips, FAST_DEV_CLIPS["num_train_clips"])
    small["remix"] = dataclasses.replace(synth.remix, num_clips=min(synth.remix.num_clips,
                                                                    FAST_DEV_CLIPS["num_eval_clips"]))
    return dataclasses.replace(synth, **small)


def dataset_splits(config: Config) -> tuple[str, ...]:
    """train / valid / eval, and the extra splits a config asks for: a synthetic set's extra
    eval splits and unlabelled mixes, DESED's unlabelled in-domain clips."""
    if config.data.dataset == "desed" and dict(config.data.reader_options).get("use_unlabelled"):
        return (*SPLITS, "unlabelled")
    if config.data.dataset != "synth":
        return SPLITS
    from sedweak.synth import split_counts

    return tuple(split_counts(config.data.synth))


def data_root(config: Config, workdir: Path) -> Path:
    return Path(config.data.root) if config.data.root else Path(workdir) / "data"


def synthesize_if_needed(config: Config, root: Path) -> list[str]:
    """Render the synthetic soundscapes (skipped when already complete). Returns classes."""
    from sedweak.soundbank import SoundBank
    from sedweak.synth import synthesize

    synth = config.data.synth
    if config.train.fast_dev_run:
        synth = fast_dev_synth(synth)
    bank = SoundBank.open(config.data.soundbank)
    result = synthesize(bank, synth, root, clip_seconds=config.data.clip_seconds,
                        sample_rate_hz=config.features.sample_rate_hz,
                        classes=list(config.data.classes) or None)
    return list(result["classes"])


def prepare_data(config: Config, workdir: Path, splits: Sequence[str] | None = None,
                 progress: bool = True) -> PreparedData:
    """Dataset splits (default :func:`dataset_splits`) and their cached log-mels for ``config``."""
    splits = dataset_splits(config) if splits is None else tuple(splits)
    root = data_root(config, workdir)
    classes = list(config.data.classes)
    if config.data.dataset == "synth":
        classes = synthesize_if_needed(config, root)
        clips = {s: load_split(root, s, classes) for s in splits}
    else:
        clips = read_dataset(config.data.dataset, root, config.data, splits)
    classes = classes or classes_in(*clips.values())
    signature = cache_signature(config.features, config.data.clip_seconds)
    tag = hashlib.sha1(signature.encode()).hexdigest()[:10]
    features = {}
    for split, clipset in clips.items():
        # The clip list is part of the name: another selection of the same dataset (an
        # UrbanSound8K fold, an AudioSet class subset) gets its own cache, never a rebuild
        # of this one.
        members = hashlib.sha1("\n".join(clipset.filenames).encode()).hexdigest()[:8]
        cache = root / "features" / f"{split}-{tag}-{members}.h5"
        features[split] = cached_logmels(cache, clipset.audio_paths, clipset.filenames, config.features,
                                         config.data.clip_seconds, progress=progress,
                                         num_workers=config.cache.num_workers,
                                         in_memory_max_mb=config.cache.in_memory_max_mb,
                                         flush_every_clips=config.cache.flush_every_clips)
        for name, why in features[split].failed:
            log.warning("skipped %s/%s: %s", split, name, why)
    return PreparedData(root, tuple(classes), clips, features)
