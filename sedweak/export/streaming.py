"""Streaming TFLite export: one chunk of feature frames + recurrent states -> chunk outputs + states.

The graph is :func:`sedweak.export.graph.stream_chunk` (plain-op GRU, no WHILE),
so it converts in float32 / float16 / dynamic and, being loop-free, in full-integer
``int8`` (calibrated on windows of real log-mel clips streamed through the float
model, so the states seen in calibration are the states seen at run time).

Signature ``serve``: inputs ``logmel`` (1, L + C + L, n_mels) dB, ``mask`` (1, L + C + L)
(1 = a real frame, 0 = beyond the stream's start or end), ``state_i`` (1, U_i);
outputs ``strong`` (1, C // P, K) and ``state_i`` [+ ``embedding_frames`` (1, C // P, E) with
``with_embedding``: the embedding head's Dense on each of the chunk's frames; the runtime
keeps their running sum and count and L2-normalises the mean on demand (sidecar finish
``mean_then_l2``), the model's embedding of everything streamed so far]. Exact for
forward-only recurrences; a bidirectional layer's backward direction is reset at every
chunk (an approximation).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from sedweak.errors import ExportError, ExportSettingsError
from sedweak.export.calibration import evenly_spaced
from sedweak.export.convert import convert_saved_model, io_quantization
from sedweak.export.graph import (
    context_frames,
    embedding_projection,
    recurrent_layers,
    state_units,
    stream_chunk,
    stream_logmel,
    time_pooling,
)
from sedweak.export.sidecar import SIGNATURE_KEY, add_embedding, embedding_section, sidecar_json, sidecar_path
from sedweak.io_utils import atomic_write_bytes, atomic_write_json
from sedweak.models.saving import ModelInfo

STREAMING_MODES = ("float32", "float16", "dynamic", "int8", "int16x8")


def _specs(model, info: ModelInfo, chunk_frames: int, lookahead: int):
    import tensorflow as tf

    window = chunk_frames + lookahead + 2 * context_frames(model)
    return ([tf.TensorSpec((1, window, info.features.n_mels), tf.float32, name="logmel"),
             tf.TensorSpec((1, window), tf.float32, name="mask")]
            + [tf.TensorSpec((1, u), tf.float32, name=f"state_{i}") for i, u in enumerate(state_units(model))])


def step_function(model, chunk_frames: int, lookahead: int = 0, with_embedding: bool = False):
    """(logmel, mask, *states) -> {"strong", "state_i"[, "embedding_frames"]}: the streaming step
    as a plain function."""
    pool = time_pooling(model)
    if chunk_frames <= 0 or chunk_frames % pool or lookahead < 0 or lookahead % pool:
        raise ExportSettingsError(f"chunk_frames {chunk_frames} (> 0) and lookahead {lookahead} (>= 0) must be "
                                  f"multiples of the time pooling {pool}")
    context = context_frames(model)

    def serve(logmel, mask, *states):
        strong, new_states, *embedding = stream_chunk(model, logmel, mask, list(states), context, lookahead,
                                                      with_embedding)
        return {"strong": strong, **{f"state_{i}": s for i, s in enumerate(new_states)},
                **({"embedding_frames": embedding[0]} if with_embedding else {})}

    return serve


def calibration_windows(model, logmels, chunk_frames: int, lookahead: int = 0, max_windows: int = 400) -> list[dict]:
    """Signature inputs {logmel, mask, state_i} seen when streaming ``logmels`` ((T, n_mels) each)
    through the float step; spread evenly over the clips, at most ``max_windows``."""
    import tensorflow as tf

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
                      source: str, embedding: dict | None = None) -> dict:
    """The offline sidecar plus a ``streaming`` section and per-tensor int8 parameters
    (and ``embedding``, the :func:`embedding_section` of a file that has one)."""
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
    if embedding is not None:
        meta = add_embedding(meta, embedding, [1, chunk_frames // info.time_pooling, embedding["dim"]])
    return meta


def export_streaming(model, info: ModelInfo, out: str | Path, chunk_frames: int = 20, mode: str = "float32",
                     calibration=None, full_integer: bool = False, source: str = "", lookahead: int = 0,
                     with_embedding: bool = False) -> Path:
    """Write the streaming step ``out`` (.tflite) and its sidecar. Returns ``out``.

    ``lookahead``: feature frames past each chunk that a bidirectional layer's backward
    direction reads (0 for forward-only models, which need none); latency grows by as much.
    ``calibration``: log-mel clips ((T, n_mels) arrays), required for ``int8``.
    ``full_integer``: int8 inputs / outputs (the sidecar holds their scale and zero point).
    ``with_embedding``: the step also outputs ``embedding_frames`` (1, C // P, E);
    :class:`ExportSettingsError` naming the model when it has no CRNN embedding head.
    """
    import keras

    if mode not in STREAMING_MODES:
        raise ExportSettingsError(f"streaming mode must be one of {STREAMING_MODES}, got {mode!r}")
    if full_integer and mode != "int8":
        raise ExportSettingsError("--full-integer needs --mode int8")
    embedding = None
    if with_embedding:
        dense = embedding_projection(model, source or f"model {model.name!r}")
        embedding = embedding_section("embedding_frames", dense.units, "mean_then_l2", SIGNATURE_KEY)
    representative = None
    if mode in ("int8", "int16x8"):
        if not calibration:
            raise ExportSettingsError(f"--mode {mode} needs calibration clips (--calibration)")
        windows = calibration_windows(model, calibration, chunk_frames, lookahead)
        representative = lambda: iter(windows)
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="sedweak-stream-") as tmp:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(SIGNATURE_KEY, step_function(model, chunk_frames, lookahead, with_embedding),
                             input_signature=_specs(model, info, chunk_frames, lookahead))
        archive.write_out(str(Path(tmp) / "sm"), verbose=False)
        flatbuffer = convert_saved_model(Path(tmp) / "sm", mode, representative, full_integer)
    atomic_write_bytes(out, flatbuffer)
    atomic_write_json(sidecar_path(out),
                      streaming_sidecar(model, info, mode, chunk_frames, lookahead, flatbuffer, source, embedding))
    return out
