"""DESED as downloaded (DCASE task 4; paths as in DESED_task's recipe ``data:`` sections).

    audio/train/synthetic21_train/soundscapes/*.wav   metadata/train/synthetic21_train/soundscapes.tsv  (strong)
    audio/train/weak/*.wav                            metadata/train/weak.tsv                           (weak)
    audio/train/unlabel_in_domain/*.wav               metadata/train/unlabel_in_domain.tsv              (filename)
    audio/validation/validation/*.wav                 metadata/validation/validation.tsv                (strong)
    audio/eval/public/*.wav                           metadata/eval/public.tsv                          (strong)

Strong TSVs: ``filename<TAB>onset<TAB>offset<TAB>event_label``; weak TSV:
``filename<TAB>event_labels`` (comma-separated) -- parsed by ``sedweak.labels``.
Roles: train = synthetic soundscapes (strong) + weak clips (``strong`` None);
valid = validation; eval = public eval. Every path is a reader option (relative to the
root, or absolute), e.g. ``valid_tsv`` can point at a synthetic validation set.
Clips listed in a TSV whose audio is missing are excluded with one warning.
With ``use_unlabelled`` the role ``unlabelled`` reads the unlabelled in-domain clips (TSV:
``filename`` only) for the mean teacher (``train.mean_teacher``); their tags are never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sedweak.config import ConfigError
from sedweak.datasets.clipset import (
    ClipSet,
    check_roles,
    keep_existing_audio,
    make_clipset,
    resolve,
)
from sedweak.datasets.registry import reader_options
from sedweak.labels import LabelError, read_strong_tsv, read_tsv_rows, read_weak_tsv

DESED_CLASSES = ("Alarm_bell_ringing", "Blender", "Cat", "Dishes", "Dog", "Electric_shaver_toothbrush",
                 "Frying", "Running_water", "Speech", "Vacuum_cleaner")


@dataclass(frozen=True)
class DesedOptions:
    """``data.reader_options`` of ``dataset: desed``: where each part of DESED lies."""

    synthetic_audio: str = "audio/train/synthetic21_train/soundscapes"
    synthetic_tsv: str = "metadata/train/synthetic21_train/soundscapes.tsv"
    weak_audio: str = "audio/train/weak"
    weak_tsv: str = "metadata/train/weak.tsv"
    unlabelled_audio: str = "audio/train/unlabel_in_domain"
    unlabelled_tsv: str = "metadata/train/unlabel_in_domain.tsv"
    valid_audio: str = "audio/validation/validation"
    valid_tsv: str = "metadata/validation/validation.tsv"
    eval_audio: str = "audio/eval/public"
    eval_tsv: str = "metadata/eval/public.tsv"
    use_synthetic: bool = True  # train on the strongly labelled synthetic soundscapes
    use_weak: bool = True  # train on the weakly labelled real clips
    use_unlabelled: bool = False  # the "unlabelled" role, for train.mean_teacher

    def __post_init__(self) -> None:
        if not (self.use_synthetic or self.use_weak):
            raise ConfigError("data.reader_options: use_synthetic and use_weak are both false: no training clips")


def strong_part(name: str, root: Path, audio: str, tsv: str, classes: Sequence[str]) -> ClipSet:
    """Clips of a strong-label TSV (every clip gets ``strong`` events and the implied weak tags)."""
    events = read_strong_tsv(resolve(root, tsv), classes)
    audio_dir = resolve(root, audio)
    return make_clipset(name, {f: (audio_dir / f, [e.label for e in ev], ev) for f, ev in events.items()})


def weak_part(name: str, root: Path, audio: str, tsv: str, classes: Sequence[str]) -> ClipSet:
    """Clips of a weak-label TSV (``strong`` None)."""
    tags = read_weak_tsv(resolve(root, tsv), classes)
    audio_dir = resolve(root, audio)
    return make_clipset(name, {f: (audio_dir / f, labels, None) for f, labels in tags.items()})


def unlabelled_part(name: str, root: Path, audio: str, tsv: str) -> ClipSet:
    """Clips of a ``filename``-only TSV (DESED's unlabel_in_domain.tsv): no tags, no events."""
    path = resolve(root, tsv)
    rows = [r for r in read_tsv_rows(path) if any(cell.strip() for cell in r)]
    if not rows or rows[0][0].strip() != "filename":
        raise LabelError(f"{path}: expected a header line starting with 'filename'")
    audio_dir = resolve(root, audio)
    return make_clipset(name, {r[0].strip(): (audio_dir / r[0].strip(), [], None) for r in rows[1:]})


def union(name: str, parts: Sequence[ClipSet]) -> ClipSet:
    """One ClipSet from disjoint parts; a clip name in two parts is an error."""
    clips: dict = {}
    for part in parts:
        for path, f in zip(part.audio_paths, part.filenames):
            if f in clips:
                raise LabelError(f"{name}: clip {f} is listed twice ({clips[f][0]} and {path})")
            clips[f] = (path, part.weak[f], part.strong[f])
    return make_clipset(name, clips)


def read(root: Path, data, splits: Sequence[str]) -> dict[str, ClipSet]:
    """Registry entry for ``dataset: desed``. Labels are checked against ``data.classes``
    (default: the 10 DESED classes)."""
    check_roles([s for s in splits if s != "unlabelled"])
    options = reader_options(DesedOptions, data)
    classes = list(data.classes) or list(DESED_CLASSES)
    out = {}
    for role in splits:
        if role == "unlabelled":
            if not options.use_unlabelled:
                raise ConfigError("DESED: the unlabelled role needs data.reader_options.use_unlabelled: true")
            clipset = unlabelled_part(role, root, options.unlabelled_audio, options.unlabelled_tsv)
        elif role == "train":
            parts = []
            if options.use_synthetic:
                parts.append(strong_part(role, root, options.synthetic_audio, options.synthetic_tsv, classes))
            if options.use_weak:
                parts.append(weak_part(role, root, options.weak_audio, options.weak_tsv, classes))
            clipset = union(role, parts)
        else:
            audio, tsv = (options.valid_audio, options.valid_tsv) if role == "valid" else \
                (options.eval_audio, options.eval_tsv)
            clipset = strong_part(role, root, audio, tsv, classes)
        out[role] = keep_existing_audio(clipset, f"{root} (DESED {role})")
    return out
