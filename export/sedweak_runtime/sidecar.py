"""The ``MODEL.tflite.json`` sidecar written by ``sedweak export``: its formats and how to read it."""

from __future__ import annotations

import json
from pathlib import Path

SIDECAR_FORMAT = "sedweak-tflite-1"
STAGED_FORMAT = "sedweak-staged-3"          # sedweak's staged export layout (StagedModel checks it)


# What every runtime path reads: a sidecar without one of these is refused up front, by name.
REQUIRED_KEYS = ("mode", "input", "classes", "features", "postprocess", "time_pooling", "clip_frames",
                 "clip_samples", "model_frames_per_second")
REQUIRED_SUBKEYS = {
    "input": ("name", "kind"),
    "features": ("sample_rate_hz", "window_samples", "hop_samples", "n_fft", "n_mels", "mel_min_hz",
                 "mel_max_hz", "amin_power"),
    "postprocess": ("thresholds", "median_filter_seconds", "min_duration_seconds", "min_gap_seconds"),
}


def sidecar_path(model_path: str | Path) -> Path:
    """``MODEL.tflite`` -> ``MODEL.tflite.json`` beside it."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def read_sidecar(model_path: str | Path) -> dict:
    """The sidecar of a model file, checked to be a :data:`SIDECAR_FORMAT` one.

    Raises FileNotFoundError when the model or its sidecar is missing, ValueError when the
    sidecar is not JSON or not of this format."""
    model_path, sidecar = Path(model_path), sidecar_path(model_path)
    if not model_path.is_file() or not sidecar.is_file():
        raise FileNotFoundError(f"{model_path}: need the model and its sidecar {sidecar.name}")
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{sidecar}: not JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
        raise ValueError(f"{sidecar}: not a {SIDECAR_FORMAT} sidecar")
    missing = [key for key in REQUIRED_KEYS if key not in meta]
    missing += [f"{section}.{key}" for section, keys in REQUIRED_SUBKEYS.items()
                if isinstance(meta.get(section), dict) for key in keys if key not in meta[section]]
    if missing:
        raise ValueError(f"{sidecar}: missing keys {missing} (re-export the model with `sedweak export`)")
    return meta
