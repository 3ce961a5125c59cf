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

An **embedding-only** model (its one output ``embedding``, e.g. the patch CNN of
:mod:`sedweak.embeddings.models`, :func:`sedweak.export.graph.embedding_only`) has no GRU:
exported ``with_embedding``, its file outputs ``embedding`` (1, E) alone (the sidecar's
``outputs`` lists nothing else), in the float modes and in ``int8`` too (no loop to
calibrate through; float input and output, the final L2 normalisation kept float).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from sedweak.errors import ExportError, ExportSettingsError
from sedweak.export.calibration import fit_waveform, fit_window
from sedweak.export.convert import convert_saved_model
from sedweak.export.graph import embedding_dim, embedding_only
from sedweak.export.sidecar import (
    OUTPUT_NAMES,
    SIGNATURE_KEY,
    add_embedding,
    embedding_section,
    input_shape,
    sidecar_json,
    sidecar_path,
)
from sedweak.export.staged import FRONTEND_SCOPE
from sedweak.io_utils import atomic_write_bytes, atomic_write_json
from sedweak.models.saving import ModelInfo

WHOLE_CLIP_MODES = ("float32", "float16", "dynamic")
EMBEDDING_ONLY_MODES = WHOLE_CLIP_MODES + ("int8",)     # no GRU, no WHILE: int8 calibrates


def output_names(model, with_embedding: bool) -> tuple[str, ...]:
    """The file's outputs: ``strong``, ``weak`` [, ``embedding``]; ``embedding`` alone for an
    embedding-only model."""
    if embedding_only(model):
        return ("embedding",)
    return OUTPUT_NAMES + (("embedding",) if with_embedding else ())


def _serving_function(model, info: ModelInfo, waveform_input: bool, with_embedding: bool = False):
    """x (input_shape) -> {"strong": (1, T', K), "weak": (1, K) [, "embedding": (1, E)]} (an
    embedding-only model: {"embedding": (1, E)}), inference mode."""
    frontend = None
    if waveform_input:
        from sedweak.models.frontend import LogMel

        frontend = LogMel.from_feature_config(info.features, name=FRONTEND_SCOPE)

    names = output_names(model, with_embedding)

    def serve(x):
        features = frontend(x) if frontend is not None else x
        outputs = model(features, training=False)
        return {name: outputs[name] for name in names}

    return serve


def write_saved_model(model, info: ModelInfo, waveform_input: bool, directory: str | Path,
                      with_embedding: bool = False) -> Path:
    """Fixed batch-1 SavedModel with one signature ``serve`` (input named ``logmel``/``waveform``,
    outputs :func:`output_names`)."""
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
                  waveform_input: bool = False, source: str = "", with_embedding: bool = False,
                  calibration=None) -> Path:
    """Convert ``model`` and write ``out`` (.tflite) plus ``out.json``. Returns ``out``.

    ``dynamic`` with ``waveform_input`` is refused: dynamic-range quantization of the
    in-graph mel matmul ruins the front end (export/README.md, "Front end in int8").
    ``with_embedding``: keep the ``embedding`` output (1, E) (:class:`ExportSettingsError`
    naming the model when it has none). An embedding-only model needs ``with_embedding``
    and also offers ``int8``, calibrated on ``calibration``: log-mels ((T, F) arrays, cut or
    padded to the window), or waveforms with ``waveform_input``.
    """
    name = source or f"model {model.name!r}"
    only = embedding_only(model)
    if only and not with_embedding:
        raise ExportSettingsError(f"{name}: this model has only an embedding output: pass --with-embedding (the "
                                  "file then gives the clip embedding alone)")
    if mode not in (EMBEDDING_ONLY_MODES if only else WHOLE_CLIP_MODES):
        if only:
            raise ExportSettingsError(f"--mode {mode}: an embedding-only file is offered in "
                                      f"{', '.join(EMBEDDING_ONLY_MODES)}")
        raise ExportSettingsError(f"--mode {mode}: this whole-clip graph keeps the GRU as a WHILE loop, which the int8 "
                                  "calibrator cannot run (segfault); use sedweak.export.export_staged (what "
                                  "`sedweak export --mode int8` does) or a --streaming export")
    if mode == "dynamic" and waveform_input:
        raise ExportSettingsError("--mode dynamic would quantize the in-graph log-mel front end, which ruins it; export "
                                  "log-mel input for dynamic, or use float32/float16 with --waveform-input")
    dim = embedding_dim(model, name) if with_embedding else None
    representative = _representative(info, calibration, waveform_input) if mode == "int8" else None
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="sedweak-export-") as tmp:
        saved = write_saved_model(model, info, waveform_input, Path(tmp) / "sm", with_embedding)
        if mode == "int8":
            flatbuffer = convert_saved_model(saved, mode, representative, float_outputs=("embedding",),
                                             float_scopes=_float_scopes(model, waveform_input))
        else:
            flatbuffer = convert_saved_model(saved, mode)
    meta = sidecar_json(info, mode, waveform_input, source)
    if only:
        meta["outputs"] = []                               # no strong / weak: add_embedding lists the one output
    if with_embedding:
        meta = add_embedding(meta, embedding_section("embedding", dim, "final", SIGNATURE_KEY), [1, dim])
    atomic_write_bytes(out, flatbuffer)
    atomic_write_json(sidecar_path(out), meta)
    return out


def _representative(info: ModelInfo, clips, waveform_input: bool):
    """int8 calibration: the clips fitted to the window as ``serve``'s one input: log-mels cut
    or padded to ``clip_frames`` (a WAA run's E: its training segment, a whole number of 200 ms
    patches), waveforms to ``clip_samples``."""
    if not clips:
        raise ExportSettingsError("--mode int8 needs calibration clips (--calibration)")
    fit = fit_waveform if waveform_input else fit_window
    windows = [fit(np.asarray(clip, np.float32), info)[np.newaxis] for clip in clips]
    return lambda: iter([[window] for window in windows])


def _float_scopes(model, waveform_input: bool) -> tuple[str, ...]:
    """Name scopes an int8 embedding-only file keeps float: the final ``L2Normalize`` layer
    named ``embedding`` (a quantized division; the norm would drift), and the in-graph front end."""
    from sedweak.models.layers import L2Normalize

    final = any(layer.name == "embedding" and isinstance(layer, L2Normalize) for layer in model.layers)
    return (("embedding",) if final else ()) + ((FRONTEND_SCOPE,) if waveform_input else ())


def run_tflite(path: str | Path, x: np.ndarray, num_threads: int = 1) -> dict[str, np.ndarray]:
    """Run the ``serve`` signature on one input of the exported shape; outputs by name."""
    from sedweak_runtime.interpreter import open_interpreter

    interpreter = open_interpreter(path, num_threads=num_threads)
    runner = interpreter.get_signature_runner(SIGNATURE_KEY)
    (name,) = runner.get_input_details()
    return {k: np.asarray(v) for k, v in runner(**{name: np.asarray(x, np.float32)}).items()}
