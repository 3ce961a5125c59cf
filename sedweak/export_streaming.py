"""Streaming TFLite export: one chunk of feature frames + recurrent states -> chunk outputs + states.

The graph is :func:`sedweak.models.streaming.stream_chunk` (plain-op GRU, no WHILE),
so it converts in float32 / float16 / dynamic and, being loop-free, in full-integer
``int8`` (calibrated on windows of real log-mel clips streamed through the float
model, so the states seen in calibration are the states seen at run time).

Signature ``serve``: inputs ``logmel`` (1, L + C + L, n_mels) dB, ``mask`` (1, L + C + L)
(1 = a real frame, 0 = beyond the stream's start or end), ``state_i`` (1, U_i);
outputs ``strong`` (1, C // P, K) and ``state_i``. Exact for forward-only recurrences;
a bidirectional layer's backward direction is reset at every chunk (an approximation).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from sedweak.artifacts import ModelInfo
from sedweak.export import (
    SIGNATURE_KEY,
    convert_saved_model,
    evenly_spaced,
    io_quantization,
    sidecar_json,
    sidecar_path,
)
from sedweak.io_utils import atomic_write_bytes, atomic_write_json

STREAMING_MODES = ("float32", "float16", "dynamic", "int8", "int16x8")


def _specs(model, info: ModelInfo, chunk_frames: int, lookahead: int):
    import tensorflow as tf

    from sedweak.models.streaming import context_frames, state_units

    window = chunk_frames + lookahead + 2 * context_frames(model)
    return ([tf.TensorSpec((1, window, info.features.n_mels), tf.float32, name="logmel"),
             tf.TensorSpec((1, window), tf.float32, name="mask")]
            + [tf.TensorSpec((1, u), tf.float32, name=f"state_{i}") for i, u in enumerate(state_units(model))])


def step_function(model, chunk_frames: int, lookahead: int = 0):
    """(logmel, mask, *states) -> {"strong", "state_i"}: the streaming step as a plain function."""
    from sedweak.models.streaming import context_frames, stream_chunk, time_pooling

    pool = time_pooling(model)
    if chunk_frames <= 0 or chunk_frames % pool or lookahead < 0 or lookahead % pool:
        raise ValueError(f"chunk_frames {chunk_frames} (> 0) and lookahead {lookahead} (>= 0) must be "
                         f"multiples of the time pooling {pool}")
    context = context_frames(model)

    def serve(logmel, mask, *states):
        strong, new_states = stream_chunk(model, logmel, mask, list(states), context, lookahead)
        return {"strong": strong, **{f"state_{i}": s for i, s in enumerate(new_states)}}

    return serve


def calibration_windows(model, logmels, chunk_frames: int, lookahead: int = 0, max_windows: int = 400) -> list[dict]:
    """Signature inputs {logmel, mask, state_i} seen when streaming ``logmels`` ((T, n_mels) each)
    through the float step; spread evenly over the clips, at most ``max_windows``."""
    import tensorflow as tf

    from sedweak.models.streaming import stream_logmel

    step = tf.function(step_function(model, chunk_frames, lookahead), autograph=False)  # static Python loops only
    seen: list[dict] = []

    def recording_step(window, mask, states):
        seen.append({"logmel": window, "mask": mask, **{f"state_{i}": np.asarray(s) for i, s in enumerate(states)}})
        out = step(window, mask, *states)
        return out["strong"], [out[f"state_{i}"] for i in range(len(states))]

    for logmel in logmels:
        stream_logmel(model, np.asarray(logmel, np.float32), chunk_frames, recording_step, lookahead)
    return [seen[i] for i in evenly_spaced(len(seen), max_windows)]


def streaming_sidecar(model, info: ModelInfo, mode: str, chunk_frames: int, lookahead: int, flatbuffer: bytes,
                      source: str) -> dict:
    """The offline sidecar plus a ``streaming`` section and per-tensor int8 parameters."""
    from sedweak.models.streaming import context_frames, recurrent_layers, state_units

    meta = sidecar_json(info, mode, False, source)
    context = context_frames(model)
    bidirectional = any(hasattr(layer, "backward_layer") for layer in recurrent_layers(model))
    meta["input"] = {"name": "logmel", "kind": "logmel_stream", "shape": [1, chunk_frames + lookahead + 2 * context,
                                                                         info.features.n_mels], "dtype": "float32"}
    meta["outputs"] = [{"name": "strong", "shape": [1, chunk_frames // info.time_pooling, len(info.classes)]}]
    meta["streaming"] = {"chunk_frames": chunk_frames, "context_frames": context, "lookahead_frames": lookahead,
                         "state_units": state_units(model), "exact": not bidirectional,
                         "approximation": (f"backward GRU from zero {lookahead} frames past each chunk"
                                           if bidirectional else ""),
                         "tensors": io_quantization(flatbuffer)[SIGNATURE_KEY]}
    return meta


def export_streaming(model, info: ModelInfo, out: str | Path, chunk_frames: int = 20, mode: str = "float32",
                     calibration=None, full_integer: bool = False, source: str = "", lookahead: int = 0) -> Path:
    """Write the streaming step ``out`` (.tflite) and its sidecar. Returns ``out``.

    ``lookahead``: feature frames past each chunk that a bidirectional layer's backward
    direction reads (0 for forward-only models, which need none); latency grows by as much.
    ``calibration``: log-mel clips ((T, n_mels) arrays), required for ``int8``.
    ``full_integer``: int8 inputs / outputs (the sidecar holds their scale and zero point).
    """
    import keras

    if mode not in STREAMING_MODES:
        raise ValueError(f"streaming mode must be one of {STREAMING_MODES}, got {mode!r}")
    if full_integer and mode != "int8":
        raise ValueError("--full-integer needs --mode int8")
    representative = None
    if mode in ("int8", "int16x8"):
        if not calibration:
            raise ValueError(f"--mode {mode} needs calibration clips (--calibration)")
        windows = calibration_windows(model, calibration, chunk_frames, lookahead)
        representative = lambda: iter(windows)
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="sedweak-stream-") as tmp:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(SIGNATURE_KEY, step_function(model, chunk_frames, lookahead),
                             input_signature=_specs(model, info, chunk_frames, lookahead))
        archive.write_out(str(Path(tmp) / "sm"), verbose=False)
        flatbuffer = convert_saved_model(Path(tmp) / "sm", mode, representative, full_integer)
    atomic_write_bytes(out, flatbuffer)
    atomic_write_json(sidecar_path(out),
                      streaming_sidecar(model, info, mode, chunk_frames, lookahead, flatbuffer, source))
    return out


def calibration_logmels(source: str | Path, info: ModelInfo, max_clips: int = 64) -> list[np.ndarray]:
    """Log-mel clips ((T, n_mels) each) to calibrate int8 on, from ``source``:

    * a run's ``config.yaml``: its training split through :func:`sedweak.data_prep.prepare_data`
      (the run's feature cache is reused when it exists);
    * a folder of audio files at the model's rate: :func:`sedweak.features.logmel_librosa`.
    Clips are taken evenly over the sorted list, at most ``max_clips``.
    """
    from sedweak.features import logmel_librosa

    source = Path(source)
    if source.suffix in (".yaml", ".yml") and source.is_file():
        features = _training_data(source).features["train"]
        keep = evenly_spaced(len(features.filenames), max_clips)
        return [np.asarray(features.features[int(i)], np.float32) for i in keep]
    return [logmel_librosa(w, info.features) for w in calibration_waveforms(source, info, max_clips)]


def calibration_waveforms(source: str | Path, info: ModelInfo, max_clips: int = 64) -> list[np.ndarray]:
    """Mono waveforms at the model's rate to calibrate a waveform-input int8 file on: a run's
    ``config.yaml`` (the audio of its training split) or a folder of audio files."""
    from sedweak.audio import load_audio
    from sedweak.inference import audio_files

    source = Path(source)
    if source.suffix in (".yaml", ".yml") and source.is_file():
        paths = list(_training_data(source).clips["train"].audio_paths)
    elif source.is_dir():
        paths = audio_files([source])
    else:
        raise FileNotFoundError(f"{source}: --calibration takes a run's config.yaml or a folder of audio files")
    if not paths:
        raise FileNotFoundError(f"{source}: no audio files to calibrate on")
    return [load_audio(paths[i], info.features.sample_rate_hz) for i in evenly_spaced(len(paths), max_clips)]


def _training_data(config_path: Path):
    from sedweak.config import load_config
    from sedweak.data_prep import prepare_data

    return prepare_data(load_config(config_path), config_path.parent, splits=("train",), progress=False)

