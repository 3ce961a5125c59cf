"""Trained models on disk: ``NAME.keras`` plus ``NAME.json`` with what inference needs.

The sidecar carries the class list, the front-end parameters, the post-processing
settings and the model's time pooling, so ``predict`` and the edge export need
nothing else. Both files are written atomically.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from sedweak.config import FeatureConfig, PostprocessConfig, from_dict, to_dict
from sedweak.errors import OutputPathError, UserError
from sedweak.io_utils import atomic_path, atomic_write_json


class ModelFileError(UserError, FileNotFoundError):
    """A model file or its sidecar is missing or unreadable."""


@dataclass(frozen=True)
class ModelInfo:
    classes: tuple[str, ...]
    features: FeatureConfig
    postprocess: PostprocessConfig
    time_pooling: int
    clip_seconds: float

    @property
    def model_frames_per_second(self) -> float:
        return self.features.frames_per_second / self.time_pooling

    @property
    def clip_frames(self) -> int:
        """Feature frames of one training clip (the inference window)."""
        return self.features.num_frames(int(round(self.clip_seconds * self.features.sample_rate_hz)))

    def to_json(self) -> dict:
        return {"classes": list(self.classes), "features": asdict(self.features),
                "postprocess": to_dict(self.postprocess), "time_pooling": self.time_pooling,
                "clip_seconds": self.clip_seconds, "format": "sedweak-model-1"}

    @classmethod
    def from_json(cls, data: dict) -> "ModelInfo":
        return cls(tuple(data["classes"]), from_dict(FeatureConfig, data["features"], "features"),
                   from_dict(PostprocessConfig, data["postprocess"], "postprocess"),
                   int(data["time_pooling"]), float(data["clip_seconds"]))


def sidecar_path(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


def save_model(model, path: str | Path, info: ModelInfo) -> Path:
    """Save ``model`` as ``.keras`` (temporary name, then rename) and its sidecar."""
    path = Path(path)
    if path.suffix != ".keras":
        raise OutputPathError(f"{path}: model files end in .keras")
    with atomic_path(path) as tmp:   # .<stem>.<pid>.tmp.keras: Keras wants the suffix
        model.save(tmp)
        atomic_write_json(sidecar_path(path), info.to_json())
    return path


def load_info(path: str | Path) -> ModelInfo:
    side = sidecar_path(path)
    if not side.is_file():
        raise ModelFileError(f"{side}: model sidecar not found (it is written next to every .keras by sedweak)")
    try:
        return ModelInfo.from_json(json.loads(side.read_text()))
    except (ValueError, KeyError) as err:
        raise ModelFileError(f"{side}: unreadable model sidecar ({err})") from None


def load_model(path: str | Path, compile: bool = False):
    """Returns ``(keras_model, ModelInfo)``."""
    import keras

    import sedweak.losses  # noqa: F401  (registers custom objects)
    import sedweak.models.frontend  # noqa: F401
    import sedweak.models.layers  # noqa: F401
    from sedweak.models.mean_teacher import MeanTeacher  # a mean-teacher run's checkpoints

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    info = load_info(path)
    if not zipfile.is_zipfile(path):   # Keras would say "File not found" for a cut-off archive
        raise ModelFileError(f"{path}: not a valid .keras archive (truncated or corrupt, "
                             f"{path.stat().st_size} bytes)")
    try:
        model = keras.saving.load_model(path, compile=compile)
    except Exception as err:
        raise ModelFileError(f"{path}: cannot load Keras model ({err})") from None
    network = model.student if isinstance(model, MeanTeacher) else model
    outputs = network.output if isinstance(network.output, dict) else {}
    if "strong" in outputs and outputs["strong"].shape[-1] != len(info.classes):
        raise ModelFileError(f"{sidecar_path(path)}: lists {len(info.classes)} classes, the model in {path.name} "
                             f"has {outputs['strong'].shape[-1]} outputs: the sidecar belongs to another model")
    return model, info
