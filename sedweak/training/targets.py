"""Training targets from clip labels, at the model's frame rate (feature rate / time pooling):

  strong (clips, model_frames, classes) in {0, 1} or ``losses.MASKED`` (no strong label)
  weak   (clips, classes) in {0, 1}
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from sedweak.datasets.clipset import ClipSet
from sedweak.labels import events_to_frames, weak_vector
from sedweak.losses import MASKED


def build_targets(clips: ClipSet, filenames: Sequence[str], classes: Sequence[str], model_frames: int,
                  model_frames_per_second: float, label_type: str = "strong",
                  weak_clip_strong_target: str = "repeat") -> tuple[np.ndarray, np.ndarray]:
    """Strong and weak targets for ``filenames`` (a subset/order of ``clips``).

    A clip without strong labels -- or every clip when ``label_type == "weak"`` --
    gets its clip label repeated on every frame (``"repeat"``, Adavanne & Virtanen)
    or a fully masked strong target (``"mask"``, DESED practice).
    """
    strong = np.zeros((len(filenames), model_frames, len(classes)), np.float32)
    weak = np.zeros((len(filenames), len(classes)), np.float32)
    for i, name in enumerate(filenames):
        weak[i] = weak_vector(clips.weak[name], classes, where=name)
        events = clips.strong.get(name)
        if label_type == "strong" and events is not None:
            strong[i] = events_to_frames(events, classes, model_frames, model_frames_per_second)
        elif weak_clip_strong_target == "repeat":
            strong[i] = weak[i][None, :]
        else:
            strong[i] = MASKED
    return strong, weak


def unite_targets(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Targets of a mixture: union of events; unknown (masked) wins over anything."""
    return np.where((a < 0) | (b < 0), MASKED, np.maximum(a, b)).astype(np.float32)
