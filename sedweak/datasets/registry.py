"""Dataset readers by name. A reader turns a local copy of a dataset into ClipSets.

Contract: ``read(root: Path, data: DataConfig, splits: Sequence[str]) -> {split: ClipSet}``
for the roles in ``splits`` (``train``, ``valid``, ``eval``). Labels outside
``data.classes`` (when given) are errors naming the file and line. Clips whose audio
file is missing are excluded and listed by the reader; corrupt audio is skipped and
listed by the feature cache. Reader
options come from ``data.reader_options`` and are validated by the reader itself
(a frozen dataclass loaded with ``sedweak.config.from_dict``: unknown keys are errors).

Readers are imported lazily (module path strings), so naming one costs nothing.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Sequence

from sedweak.config import DATASETS, ConfigError

# name (one of sedweak.config.DATASETS, where recipes are validated) -> "module:function"
READERS: dict[str, str] = {
    "folder": "sedweak.datasets.folder:read",
    "synth": "sedweak.datasets.folder:read",  # synthesized into the DESED folder layout
    "audioset": "sedweak.datasets.audioset:read",  # AudioSet segments CSVs + ontology, weak labels
    "dcase2017_task4": "sedweak.datasets.dcase2017:read",  # DCASE 2017 task 4, 17 classes
    "desed": "sedweak.datasets.desed:read",  # DESED as downloaded (DCASE task 4)
    "urbansed": "sedweak.datasets.urbansed:read",  # URBAN-SED soundscapes, txt or JAMS annotations
    "urbansound8k": "sedweak.datasets.urbansound8k:read",  # UrbanSound8K slices, split by fold
    "generic": "sedweak.datasets.generic:read",  # class subfolders or a filename,label(s) CSV/TSV
}


if set(READERS) != set(DATASETS):  # pragma: no cover - a developer's slip, caught at import
    raise ImportError(f"readers {sorted(READERS)} and sedweak.config.DATASETS {sorted(DATASETS)} differ")


def reader_names() -> list[str]:
    return sorted(READERS)


def read_dataset(name: str, root: Path, data, splits: Sequence[str]) -> dict:
    """``{split: ClipSet}`` from the reader registered as ``name``."""
    if name not in READERS:
        raise ConfigError(f"unknown dataset {name!r}; known datasets: {reader_names()}")
    module, function = READERS[name].split(":")
    return getattr(importlib.import_module(module), function)(Path(root), data, splits)


def reader_options(cls: type, data):
    """``data.reader_options`` as the reader's frozen dataclass ``cls`` (strict, typed)."""
    from sedweak.config import from_dict

    return from_dict(cls, dict(data.reader_options), "data.reader_options")
