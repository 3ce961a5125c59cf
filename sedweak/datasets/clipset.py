"""``ClipSet``, the common currency of every reader: the clips of one split with their
labels, and the helpers readers share to build them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sedweak.labels import Event, LabelError

log = logging.getLogger(__name__)
ROLES = ("train", "valid", "eval")


@dataclass(frozen=True)
class ClipSet:
    """Clips of one split. ``strong[name]`` is None for a weakly labelled clip."""

    name: str
    audio_paths: tuple[Path, ...]
    filenames: tuple[str, ...]
    weak: dict[str, list[str]]
    strong: dict[str, list[Event] | None]

    def __len__(self) -> int:
        return len(self.filenames)

    @property
    def strong_reference(self) -> dict[str, list[Event]]:
        """Strongly labelled clips only: the reference for detection metrics."""
        return {f: list(ev) for f, ev in self.strong.items() if ev is not None}

    def subset(self, keep: Sequence[int]) -> "ClipSet":
        names = tuple(self.filenames[i] for i in keep)
        return ClipSet(self.name, tuple(self.audio_paths[i] for i in keep), names,
                       {n: self.weak[n] for n in names}, {n: self.strong[n] for n in names})


def classes_in(*clipsets: ClipSet) -> list[str]:
    """Sorted union of the labels used in ``clipsets``."""
    return sorted({label for cs in clipsets for labels in cs.weak.values() for label in labels})


def resolve(root: Path, path: str) -> Path:
    """``path`` itself when absolute, else relative to the dataset ``root``."""
    return Path(path) if Path(path).is_absolute() else Path(root) / path


def check_roles(splits: Sequence[str]) -> None:
    unknown = [s for s in splits if s not in ROLES]
    if unknown:
        raise ValueError(f"unknown split role(s) {unknown}; readers serve {list(ROLES)}")


def make_clipset(name: str, clips: dict[str, tuple[Path, list[str], list[Event] | None]]) -> ClipSet:
    """ClipSet from ``{clip id: (audio path, weak labels, strong events or None)}``, sorted by id."""
    ids = tuple(sorted(clips))
    return ClipSet(name, tuple(Path(clips[i][0]).absolute() for i in ids), ids,
                   {i: sorted(set(clips[i][1])) for i in ids}, {i: clips[i][2] for i in ids})


def keep_existing_audio(clipset: ClipSet, where: str) -> ClipSet:
    """Drop clips whose audio file is missing, with one warning giving the count (not fatal)."""
    missing = [i for i, path in enumerate(clipset.audio_paths) if not path.is_file()]
    if not missing:
        return clipset
    names = [clipset.filenames[i] for i in missing]
    log.warning("%s: %d of %d labelled clips have no audio file and are excluded (first: %s)",
                where, len(missing), len(clipset), ", ".join(names[:5]))
    gone = set(missing)
    return clipset.subset([i for i in range(len(clipset)) if i not in gone])


def check_label(where: str, label: str, classes: Sequence[str] | None) -> None:
    """LabelError naming ``where`` (``file:line``) when ``label`` is not in ``classes``."""
    if classes is not None and label not in classes:
        raise LabelError(f"{where}: unknown label {label!r}; known labels: {list(classes)}")


def whole_clip_events(clipset: ClipSet, clip_seconds: float) -> ClipSet:
    """Each weak label as one event from 0 to the clip's duration (header read, <= ``clip_seconds``)."""
    import soundfile as sf

    strong = {}
    for path, name in zip(clipset.audio_paths, clipset.filenames):
        try:
            seconds = min(float(sf.info(str(path)).duration), clip_seconds)
        except Exception:  # unreadable audio: the feature cache skips and reports it
            seconds = clip_seconds
        strong[name] = [Event(name, 0.0, round(seconds, 6), label) for label in clipset.weak[name]]
    return ClipSet(clipset.name, clipset.audio_paths, clipset.filenames, clipset.weak, strong)
