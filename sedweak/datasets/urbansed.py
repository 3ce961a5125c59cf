"""URBAN-SED as downloaded (Salamon et al., 10 s Scaper soundscapes of UrbanSound8K events).

    audio/{train,validate,test}/soundscape_*.wav
    annotations/{train,validate,test}/soundscape_*.txt    onset<TAB>offset<TAB>label, no header
    annotations/{train,validate,test}/soundscape_*.jams   JAMS (JSON)

Roles: train = ``train``, valid = ``validate``, eval = ``test`` (folder names are options).
Option ``annotation_format`` picks ``txt`` (default) or ``jams``. A JAMS file is read with
``json`` (no jams package): the first annotation whose ``namespace`` is ``scaper`` or
``sound_event``; its ``data`` is a list of observations ``{time, duration, value,
confidence}`` (or, as older JAMS wrote, a dict of columns). ``value`` is a Scaper dict
(``label``, ``role``, ``snr``, ...) -- ``role: background`` observations (the noise bed)
are not events -- or a plain label string. The clips are the annotation files; a clip
whose audio is missing is excluded with one warning.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sedweak.datasets.clipset import (
    ClipSet,
    check_label,
    check_roles,
    keep_existing_audio,
    make_clipset,
    resolve,
)
from sedweak.datasets.registry import reader_options
from sedweak.labels import Event, LabelError

URBAN_CLASSES = ("air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling", "engine_idling",
                 "gun_shot", "jackhammer", "siren", "street_music")
JAMS_NAMESPACES = ("scaper", "sound_event")


@dataclass(frozen=True)
class UrbanSedOptions:
    """``data.reader_options`` of ``dataset: urbansed``."""

    annotation_format: str = "txt"  # "txt" (onset, offset, label) or "jams"
    audio_dir: str = "audio"
    annotations_dir: str = "annotations"
    train_folder: str = "train"
    valid_folder: str = "validate"
    eval_folder: str = "test"

    def __post_init__(self) -> None:
        from sedweak.config import ConfigError

        if self.annotation_format not in ("txt", "jams"):
            raise ConfigError(f"data.reader_options.annotation_format must be txt or jams, "
                              f"got {self.annotation_format!r}")


def _event(where: str, clip: str, onset: float, offset: float, label: str, classes) -> Event:
    if not (math.isfinite(onset) and math.isfinite(offset)) or onset < 0 or offset < onset:
        raise LabelError(f"{where}: need 0 <= onset <= offset, got {onset}, {offset}")
    if not label:
        raise LabelError(f"{where}: empty label")
    check_label(where, label, classes)
    return Event(clip, onset, offset, label)


def read_txt_events(path: Path, clip: str, classes: Sequence[str] | None) -> list[Event]:
    """Events of a Scaper ``.txt`` annotation: ``onset<TAB>offset<TAB>label`` per line, no header."""
    events = []
    for line, text in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not text.strip():
            continue
        cells = text.split("\t") if "\t" in text else text.split()
        if len(cells) != 3:
            raise LabelError(f"{path}:{line}: expected onset<TAB>offset<TAB>label (no header), got {text!r}")
        try:
            onset, offset = float(cells[0]), float(cells[1])
        except ValueError:
            raise LabelError(f"{path}:{line}: onset/offset must be numbers (the file has no header), "
                             f"got {cells[0]!r}, {cells[1]!r}") from None
        events.append(_event(f"{path}:{line}", clip, onset, offset, cells[2].strip(), classes))
    return sorted(events, key=lambda e: (e.onset_seconds, e.label))


def _observations(path: Path, jam: dict) -> tuple[str, list[dict]]:
    """(JSON path of the annotation, its observations) of the first Scaper / sound_event annotation."""
    annotations = jam.get("annotations") if isinstance(jam, dict) else None
    if not isinstance(annotations, list):
        raise LabelError(f"{path}: not a JAMS file (no 'annotations' list)")
    for k, annotation in enumerate(annotations):
        if isinstance(annotation, dict) and annotation.get("namespace") in JAMS_NAMESPACES:
            data = annotation.get("data")
            if isinstance(data, dict):  # column layout: {"time": [...], "duration": [...], ...}
                columns = [data.get(key, []) for key in ("time", "duration", "value")]
                data = [dict(zip(("time", "duration", "value"), row)) for row in zip(*columns)]
            if not isinstance(data, list):
                raise LabelError(f"{path}: annotations[{k}].data must be a list of observations")
            return f"annotations[{k}]", data
    raise LabelError(f"{path}: no annotation with namespace {' or '.join(JAMS_NAMESPACES)}")


def read_jams_events(path: Path, clip: str, classes: Sequence[str] | None) -> list[Event]:
    """Foreground events of a URBAN-SED / Scaper JAMS file (background observations skipped)."""
    try:
        jam = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise LabelError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    where, observations = _observations(path, jam)
    events = []
    for j, obs in enumerate(observations):
        at = f"{path}: {where}.data[{j}]"
        value = obs.get("value") if isinstance(obs, dict) else None
        if isinstance(value, dict):
            if value.get("role") == "background":
                continue
            value = value.get("label")
        if not isinstance(value, str):
            raise LabelError(f"{at}: expected a value with a label, got {obs!r}")
        try:
            onset = float(obs["time"])
            offset = round(onset + float(obs["duration"]), 6)  # no float dust: 0.3 + 1.4 -> 1.7
        except (KeyError, TypeError, ValueError):
            raise LabelError(f"{at}: time and duration must be numbers, got {obs!r}") from None
        events.append(_event(at, clip, onset, offset, value.strip(), classes))
    return sorted(events, key=lambda e: (e.onset_seconds, e.label))


def read_folder(role: str, root: Path, folder: str, options: UrbanSedOptions, classes) -> ClipSet:
    """One URBAN-SED split: every annotation file of ``annotations/<folder>`` and its audio."""
    annotation_dir = resolve(root, options.annotations_dir) / folder
    audio_dir = resolve(root, options.audio_dir) / folder
    files = sorted(annotation_dir.glob(f"*.{options.annotation_format}"))
    if not files:
        raise LabelError(f"{annotation_dir}: no .{options.annotation_format} annotation files "
                         f"(data.reader_options.annotation_format)")
    parse = read_txt_events if options.annotation_format == "txt" else read_jams_events
    clips = {}
    for path in files:
        clip = f"{path.stem}.wav"
        events = parse(path, clip, classes)
        clips[clip] = (audio_dir / clip, [e.label for e in events], events)
    return keep_existing_audio(make_clipset(role, clips), f"{audio_dir}")


def read(root: Path, data, splits: Sequence[str]) -> dict[str, ClipSet]:
    """Registry entry for ``dataset: urbansed``; labels checked against ``data.classes``
    (default: the 10 UrbanSound classes)."""
    check_roles(splits)
    options = reader_options(UrbanSedOptions, data)
    classes = list(data.classes) or list(URBAN_CLASSES)
    folders = {"train": options.train_folder, "valid": options.valid_folder, "eval": options.eval_folder}
    return {role: read_folder(role, Path(root), folders[role], options, classes) for role in splits}
