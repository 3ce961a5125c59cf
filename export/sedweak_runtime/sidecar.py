"""The ``MODEL.tflite.json`` sidecar written by ``sedweak export``: its formats and how to read it."""

from __future__ import annotations

import json
from pathlib import Path

from .embedding import FINISHES

SIDECAR_FORMAT = "sedweak-tflite-1"
EMBEDDING_SIDECAR_FORMAT = "sedweak-tflite-2"   # format 1 + an "embedding" section (--with-embedding)
# An embedding-only file (a model whose one output is its embedding) is format 2 whose
# "outputs" list the embedding alone: no "strong", so no events (has_detection).
SIDECAR_FORMATS = (SIDECAR_FORMAT, EMBEDDING_SIDECAR_FORMAT)
STAGED_FORMAT = "sedweak-staged-3"          # sedweak's staged export layout (StagedModel checks it)


# What every runtime path reads: a sidecar without one of these is refused up front, by name.
REQUIRED_KEYS = ("mode", "input", "classes", "features", "postprocess", "time_pooling", "clip_frames",
                 "clip_samples", "model_frames_per_second")
REQUIRED_SUBKEYS = {
    "input": ("name", "kind"),
    "features": ("sample_rate_hz", "window_samples", "hop_samples", "n_fft", "n_mels", "mel_min_hz",
                 "mel_max_hz", "amin_power"),
    "postprocess": ("thresholds", "median_filter_seconds", "min_duration_seconds", "min_gap_seconds"),
    "embedding": ("output", "dim", "finish"),
}


def sidecar_path(model_path: str | Path) -> Path:
    """``MODEL.tflite`` -> ``MODEL.tflite.json`` beside it."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def has_detection(meta: dict) -> bool:
    """Whether the file gives frame probabilities (its ``outputs`` list ``strong``): False for an
    embedding-only file, whose one output is the clip embedding. Sidecars without ``outputs``
    are of detection files."""
    outputs = meta.get("outputs")
    return not isinstance(outputs, list) or any(isinstance(o, dict) and o.get("name") == "strong" for o in outputs)


def read_sidecar(model_path: str | Path) -> dict:
    """The sidecar of a model file, checked to be of one of :data:`SIDECAR_FORMATS` (format 2
    must carry an ``embedding`` section; format 1 has none: no embedding; a file without
    detection outputs, :func:`has_detection`, must have an embedding).

    Raises FileNotFoundError when the model or its sidecar is missing, ValueError when the
    sidecar is not JSON or not of these formats."""
    model_path, sidecar = Path(model_path), sidecar_path(model_path)
    if not model_path.is_file() or not sidecar.is_file():
        raise FileNotFoundError(f"{model_path}: need the model and its sidecar {sidecar.name}")
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{sidecar}: not JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") not in SIDECAR_FORMATS:
        raise ValueError(f"{sidecar}: not a {' or '.join(SIDECAR_FORMATS)} sidecar")
    if meta["format"] == SIDECAR_FORMAT:
        meta.pop("embedding", None)            # format 1 carries no embedding, whatever else it holds
    missing = [key for key in REQUIRED_KEYS if key not in meta]
    missing += ["embedding"] if meta["format"] == EMBEDDING_SIDECAR_FORMAT and "embedding" not in meta else []
    missing += [f"{section}.{key}" for section, keys in REQUIRED_SUBKEYS.items()
                if isinstance(meta.get(section), dict) for key in keys if key not in meta[section]]
    if missing:
        raise ValueError(f"{sidecar}: missing keys {missing} (re-export the model with `sedweak export`)")
    embedding = meta.get("embedding")
    if embedding is not None and (not isinstance(embedding, dict) or embedding.get("finish") not in FINISHES):
        raise ValueError(f"{sidecar}: embedding section {embedding!r}: need a finish of {FINISHES} "
                         "(update sedweak-runtime, or re-export the model)")
    if embedding is None and not has_detection(meta):
        raise ValueError(f"{sidecar}: lists neither a 'strong' output nor a clip embedding: nothing to compute")
    return meta
