"""Whole-clip TFLite export: one signature ``serve``, the GRU as a builtin WHILE loop.

The exported graph has two outputs, ``strong`` (1, clip_frames // time_pooling, classes)
and ``weak`` (1, classes); with ``with_embedding`` a third, ``embedding`` (1, E), the
model's L2-normalised clip embedding of the window (sidecar finish ``final``). Without
it the embedding head is dropped (it costs weights).

Input kinds:
  ``logmel``    (1, clip_frames, n_mels) float32 dB, features computed outside;
  ``waveform``  (1, clip_samples) float32, the :class:`LogMel` front end inside the
                graph, always float32 (quantized, it is off by tens of dB: export/README.md).

Modes ``float32``, ``float16`` and ``dynamic``; full-integer ``int8`` needs a loop-free
graph (the calibrator segfaults on any WHILE): the staged file
(:mod:`sedweak.export.staged`) or the streaming step (:mod:`sedweak.export.streaming`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from sedweak.errors import ExportError, ExportSettingsError
from sedweak.export.convert import convert_saved_model
from sedweak.export.graph import embedding_dim
from sedweak.export.sidecar import (
    OUTPUT_NAMES,
    SIGNATURE_KEY,
    add_embedding,
    embedding_section,
    input_shape,
    sidecar_json,
    sidecar_path,
)
from sedweak.io_utils import atomic_write_bytes, atomic_write_json
from sedweak.models.saving import ModelInfo

WHOLE_CLIP_MODES = ("float32", "float16", "dynamic")


def _serving_function(model, info: ModelInfo, waveform_input: bool, with_embedding: bool = False):
    """x (input_shape) -> {"strong": (1, T', K), "weak": (1, K) [, "embedding": (1, E)]}, inference mode."""
    frontend = None
    if waveform_input:
        from sedweak.models.frontend import LogMel

        frontend = LogMel.from_feature_config(info.features, name="logmel_frontend")

    names = OUTPUT_NAMES + (("embedding",) if with_embedding else ())

    def serve(x):
        features = frontend(x) if frontend is not None else x
        outputs = model(features, training=False)
        return {name: outputs[name] for name in names}

    return serve


def write_saved_model(model, info: ModelInfo, waveform_input: bool, directory: str | Path,
                      with_embedding: bool = False) -> Path:
    """Fixed batch-1 SavedModel with one signature ``serve`` (input named ``logmel``/``waveform``)."""
    import keras
    import tensorflow as tf

    name = "waveform" if waveform_input else "logmel"
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE_KEY, _serving_function(model, info, waveform_input, with_embedding),
                         input_signature=[tf.TensorSpec(input_shape(info, waveform_input), tf.float32, name=name)])
    archive.write_out(str(directory), verbose=False)
    return Path(directory)


def export_tflite(model, info: ModelInfo, out: str | Path, mode: str = "float32",
                  waveform_input: bool = False, source: str = "", with_embedding: bool = False) -> Path:
    """Convert ``model`` and write ``out`` (.tflite) plus ``out.json``. Returns ``out``.

    ``dynamic`` with ``waveform_input`` is refused: dynamic-range quantization of the
    in-graph mel matmul ruins the front end (export/README.md, "Front end in int8").
    ``with_embedding``: keep the ``embedding`` output (1, E) (:class:`ExportSettingsError`
    naming the model when it has none).
    """
    if mode not in WHOLE_CLIP_MODES:
        raise ExportSettingsError(f"--mode {mode}: this whole-clip graph keeps the GRU as a WHILE loop, which the int8 "
                                  "calibrator cannot run (segfault); use sedweak.export.export_staged (what "
                                  "`sedweak export --mode int8` does) or a --streaming export")
    if mode == "dynamic" and waveform_input:
        raise ExportSettingsError("--mode dynamic would quantize the in-graph log-mel front end, which ruins it; export "
                                  "log-mel input for dynamic, or use float32/float16 with --waveform-input")
    dim = embedding_dim(model, source or f"model {model.name!r}") if with_embedding else None
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="sedweak-export-") as tmp:
        saved = write_saved_model(model, info, waveform_input, Path(tmp) / "sm", with_embedding)
        flatbuffer = convert_saved_model(saved, mode)
    meta = sidecar_json(info, mode, waveform_input, source)
    if with_embedding:
        meta = add_embedding(meta, embedding_section("embedding", dim, "final", SIGNATURE_KEY), [1, dim])
    atomic_write_bytes(out, flatbuffer)
    atomic_write_json(sidecar_path(out), meta)
    return out


def run_tflite(path: str | Path, x: np.ndarray, num_threads: int = 1) -> dict[str, np.ndarray]:
    """Run the ``serve`` signature on one input of the exported shape; outputs by name."""
    from sedweak_runtime.interpreter import open_interpreter

    interpreter = open_interpreter(path, num_threads=num_threads)
    runner = interpreter.get_signature_runner(SIGNATURE_KEY)
    (name,) = runner.get_input_details()
    return {k: np.asarray(v) for k, v in runner(**{name: np.asarray(x, np.float32)}).items()}
