"""The sidecar ``MODEL.tflite.json``: everything the device runtime needs next to an
exported file (labels, front end, post-processing, clip length, tensor names and, for
quantized files, each input and output tensor's scale and zero point)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sedweak_runtime.embedding import FINISHES as RUNTIME_FINISHES

from sedweak.models.saving import ModelInfo

SIDECAR_FORMAT = "sedweak-tflite-1"
# Format 1 plus an "embedding" section: written for files exported --with-embedding only, so
# every other file stays readable by runtimes that know format 1 alone (sedweak_runtime.sidecar).
EMBEDDING_SIDECAR_FORMAT = "sedweak-tflite-2"
SIGNATURE_KEY = "serve"
OUTPUT_NAMES = ("strong", "weak")
# How the runtime turns the embedding output into the unit-norm clip embedding:
#   final          the output is the model's embedding of the window (1, E) (whole-clip files);
#   mean_then_l2   the output holds per-frame projections Dense(x_t) (1, frames, E): average
#                  them over the clip's frames (a staged window, or a whole stream), then L2-normalise.
EMBEDDING_FINISHES = RUNTIME_FINISHES                      # one list: the runtime's


def sidecar_path(tflite_path: str | Path) -> Path:
    """``model.tflite`` -> ``model.tflite.json``."""
    tflite_path = Path(tflite_path)
    return tflite_path.with_name(tflite_path.name + ".json")


def clip_samples(info: ModelInfo) -> int:
    """Samples of one inference window (the training clip)."""
    return int(round(info.clip_seconds * info.features.sample_rate_hz))


def input_shape(info: ModelInfo, waveform_input: bool) -> tuple[int, ...]:
    """(1, clip_samples) for waveform input, else (1, clip_frames, n_mels)."""
    if waveform_input:
        return (1, clip_samples(info))
    return (1, info.clip_frames, info.features.n_mels)


def sidecar_json(info: ModelInfo, mode: str, waveform_input: bool, source: str) -> dict:
    """Everything the device runtime needs next to the .tflite file."""
    features = info.features
    return {
        "format": SIDECAR_FORMAT, "source_model": source, "mode": mode, "signature": SIGNATURE_KEY,
        "input": {"name": "waveform" if waveform_input else "logmel",
                  "kind": "waveform" if waveform_input else "logmel",
                  "shape": list(input_shape(info, waveform_input)), "dtype": "float32",
                  "pad_value": 0.0 if waveform_input else float(10.0 * np.log10(features.amin_power))},
        "outputs": [{"name": "strong", "shape": [1, info.clip_frames // info.time_pooling, len(info.classes)]},
                    {"name": "weak", "shape": [1, len(info.classes)]}],
        "classes": list(info.classes),
        "features": {"sample_rate_hz": features.sample_rate_hz, "window_samples": features.window_samples,
                     "hop_samples": features.hop_samples, "n_fft": features.n_fft, "n_mels": features.n_mels,
                     "mel_min_hz": features.mel_min_hz, "mel_max_hz": features.mel_max_hz,
                     "amin_power": features.amin_power, "window": "hann_periodic",
                     "mel_scale": "slaney", "mel_norm": "slaney", "center_padding": "zeros"},
        "postprocess": {"thresholds": info.postprocess.thresholds_for(info.classes),
                        "median_filter_seconds": info.postprocess.median_filter_seconds,
                        "min_duration_seconds": info.postprocess.min_duration_seconds,
                        "min_gap_seconds": info.postprocess.min_gap_seconds},
        "time_pooling": info.time_pooling, "clip_seconds": info.clip_seconds,
        "clip_frames": info.clip_frames, "clip_samples": clip_samples(info),
        "model_frames_per_second": info.model_frames_per_second,
    }


def embedding_section(output: str, dim: int, finish: str, signature: str) -> dict:
    """The sidecar's ``embedding`` section: which output (of which signature) carries it, its
    dimension E and how the runtime finishes it (:data:`EMBEDDING_FINISHES`)."""
    if finish not in EMBEDDING_FINISHES:
        raise ValueError(f"embedding finish must be one of {EMBEDDING_FINISHES}, got {finish!r}")
    return {"output": output, "signature": signature, "dim": int(dim), "finish": finish}


def add_embedding(meta: dict, section: dict, shape: list[int]) -> dict:
    """``meta`` recording an embedding: format :data:`EMBEDDING_SIDECAR_FORMAT`, the
    ``embedding`` section (:func:`embedding_section`) and the output (``shape``) in ``outputs``."""
    meta["format"] = EMBEDDING_SIDECAR_FORMAT
    meta["embedding"] = section
    meta["outputs"] = list(meta["outputs"]) + [{"name": section["output"], "shape": [int(n) for n in shape]}]
    return meta


def read_sidecar(path: str | Path) -> dict:
    """The ``MODEL.tflite.json`` written by :func:`export_tflite`."""
    side = sidecar_path(path)
    if not side.is_file():
        raise FileNotFoundError(f"{side}: sidecar of {path} not found (written by `sedweak export`)")
    return json.loads(side.read_text())
