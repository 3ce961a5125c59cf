"""A dataset folder in the DESED layout, the common currency of sedweak.

    <root>/audio/<split>/<clip>.wav
    <root>/metadata/<split>.tsv        strong labels (optional)
    <root>/metadata/<split>_weak.tsv   weak labels (optional)

A split needs at least one of the two label files. Clips listed in the strong
TSV have strong labels; clips only in the weak TSV have weak labels only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from sedweak.datasets.clipset import ClipSet
from sedweak.labels import (
    Event,
    LabelError,
    read_strong_tsv,
    read_weak_tsv,
    weak_from_strong,
)


def load_split(root: str | Path, split: str, classes: Sequence[str] | None = None) -> ClipSet:
    """Read one split of a dataset folder; label names outside ``classes`` are errors."""
    root = Path(root)
    strong_path = root / "metadata" / f"{split}.tsv"
    weak_path = root / "metadata" / f"{split}_weak.tsv"
    if not strong_path.is_file() and not weak_path.is_file():
        raise LabelError(f"{root}: split {split!r} has neither {strong_path.name} nor {weak_path.name} "
                         f"in {root / 'metadata'}")
    strong: dict[str, list[Event] | None] = {}
    weak: dict[str, list[str]] = {}
    if strong_path.is_file():
        events = read_strong_tsv(strong_path, classes)
        strong.update(events)
        weak.update(weak_from_strong(events))
    if weak_path.is_file():
        for name, labels in read_weak_tsv(weak_path, classes).items():
            if name in strong and set(weak[name]) != set(labels):
                raise LabelError(f"{weak_path}: weak labels of {name} {labels} disagree with "
                                 f"{strong_path.name} {weak[name]}")
            strong.setdefault(name, None)
            weak[name] = labels
    names = tuple(sorted(strong))
    audio_dir = root / "audio" / split
    return ClipSet(split, tuple(audio_dir / n for n in names), names, weak, strong)


def read(root: Path, data, splits: Sequence[str]) -> dict[str, ClipSet]:
    """Registry entry: every split of a DESED-layout folder (no reader options)."""
    if data.reader_options:
        raise LabelError(f"{root}: the folder layout takes no data.reader_options, got {dict(data.reader_options)}")
    return {split: load_split(root, split, list(data.classes) or None) for split in splits}
