"""Audio inputs named on a command line -> the files, each with the key it is reported under.

A file given directly is keyed by its name; a folder's files by their path relative to
the folder (``a/clip.wav``, as DESED's nested eval folders need), so ``a/clip.wav`` and
``b/clip.wav`` stay two files. Two files that would share a key are refused, naming both.
``sedweak predict`` and ``sedweak-detect`` both key their results this way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au")


class DuplicateKeyError(ValueError):
    """Two input files would be reported under one key."""


def folder_audio(folder: str | Path) -> list[Path]:
    """Audio files under ``folder`` (recursive; hidden files and folders left out), sorted
    by their path relative to it."""
    folder = Path(folder)
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in files
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in AUDIO_EXTENSIONS]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def keyed_inputs(inputs: Sequence[str | Path]) -> tuple[list[tuple[str, Path]], list[str], list[Path]]:
    """Inputs -> ([(key, path)] in order, [inputs that do not exist], [folders without audio]).

    Raises :class:`DuplicateKeyError` when two files would share a key."""
    items, missing, empty, owner = [], [], [], {}
    for item in inputs:
        root = Path(item)
        if root.is_dir():
            found = [(p.relative_to(root).as_posix(), p) for p in folder_audio(root)]
            if not found:
                empty.append(root)
        elif root.exists():
            found = [(root.name, root)]
        else:
            missing.append(str(item))
            continue
        for key, path in found:
            if key in owner:
                raise DuplicateKeyError(f"{owner[key]} and {path} would both be reported as {key!r}: "
                                        "give their folders, or rename one")
            owner[key] = path
            items.append((key, path))
    return items, missing, empty
