"""SavedModel -> TFLite flatbuffer with builtin ops only, in one of the export modes,
and the quantization rules every file obeys.

Route (export/README.md): fixed batch-1 ``tf.function`` signatures through
``keras.export.ExportArchive`` -> SavedModel -> ``TFLiteConverter.from_saved_model``
(``from_keras_model`` fails on the GRU's TensorList ops).

Modes: ``float32`` (no optimisation), ``float16`` (float16 weights, float32 compute),
``dynamic`` (int8 weights, dynamic-range activations), ``int8`` (full-integer, calibrated;
loop-free graphs only: staged and streaming), ``int16x8`` (int16 activations, streaming only).
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import numpy as np
from sedweak_runtime.interpreter import native_stderr_to_log, open_interpreter

from sedweak.config import EXPORT_MODES
from sedweak.errors import ExportError, ExportSettingsError
from sedweak.export.flatbuffer import (
    flatbuffer_tensor_types,
    quantized_ops,
    requantizing_copies,
)
from sedweak.export.sidecar import SIGNATURE_KEY

# Ops no int8 file may quantize: TFLite's int8 DIV aborts the whole invoke when a divisor
# rounds to its zero point (tflite/kernels/div.cc "data[i] != zero_point"), e.g. the
# epsilon-guarded sum(p) of linear-softmax pooling on silence.
FLOAT_OPS = ("DIV",)

log = logging.getLogger(__name__)


def convert_saved_model(directory: str | Path, mode: str, representative=None, full_integer: bool = False,
                        signature_keys=(SIGNATURE_KEY,), float_scopes: tuple[str, ...] = (),
                        float_outputs: tuple[str, ...] = ()) -> bytes:
    """SavedModel -> TFLite flatbuffer bytes, builtin ops only, in ``mode``.

    ``int8`` needs ``representative`` (a callable yielding lists of signature inputs) and
    a loop-free graph: the calibrator segfaults on any WHILE (measured, even one of plain
    ops), so int8 is offered for the staged and streaming graphs only. Every int8 / int16x8
    result is checked with :func:`requantizing_copies` (ExportError if a data-movement op
    got two quantizations). ``full_integer``: int8
    input and output tensors too (else float, with quantize / dequantize in the graph).
    ``int16x8``: the same with int16 activations (closer to float, slower kernels).
    With several ``signature_keys``, ``representative`` yields ``(signature, {input: array})``.
    ``float_scopes``: in ``int8`` / ``int16x8``, ops whose tensor names lie under one of these
    name scopes stay float (selective quantization, :func:`_keep_float`): the in-graph
    log-mel front end, the weak pooling head. ``float_outputs``: signature outputs (of the first
    signature) whose tensors stay float too, so that no int8 re-quantization follows the last
    float op (a unit-norm embedding computed in float would come out re-quantized to the range
    calibration saw: norms of 0.997 measured, 0.5 on an input outside that range).
    """
    import tensorflow as tf

    if mode not in EXPORT_MODES:
        raise ExportSettingsError(f"export mode must be one of {EXPORT_MODES}, got {mode!r}")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(directory), signature_keys=list(signature_keys))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode in ("float16", "dynamic", "int8", "int16x8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if full_integer:
            converter.inference_input_type = converter.inference_output_type = tf.int8
    if mode == "int16x8":
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    try:
        with native_stderr_to_log(log), warnings.catch_warnings():
            # The calibrator opens TensorFlow's own (deprecated) tf.lite.Interpreter.
            warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated")
            if (float_scopes or float_outputs) and mode in ("int8", "int16x8"):
                flatbuffer = _keep_float(converter, tuple(float_scopes), tuple(float_outputs), signature_keys[0])
            else:
                flatbuffer = converter.convert()
    except Exception as err:  # ConverterError carries the MLIR diagnostics
        raise ExportError(f"TFLite conversion ({mode}) failed: {err}") from None
    if mode in ("int8", "int16x8"):
        hazards = quantized_ops(flatbuffer, FLOAT_OPS)
        if hazards:
            raise ExportError(f"TFLite conversion ({mode}) left integer {list(FLOAT_OPS)} ops, which abort the "
                              f"invoke when a divisor rounds to zero (e.g. on silence): {hazards[:3]}")
    mismatches = requantizing_copies(flatbuffer)
    if mismatches:
        raise ExportError(f"TFLite conversion ({mode}) gave data-movement ops different input and output "
                          f"quantization, which their kernels ignore (silently wrong outputs): {mismatches[:3]}")
    return flatbuffer


def in_scope(tensor_name: str, scope: str) -> bool:
    """Whether a converted tensor's name lies under name scope ``scope``: ``weak`` matches
    ``weak/Sum`` and ``weak_1/Sum`` (TensorFlow's uniquified scopes), not ``weakness/...``."""
    return re.search(rf"(^|/){re.escape(scope)}(_\d+)?/", tensor_name) is not None


def _keep_float(converter, scopes: tuple[str, ...], outputs: tuple[str, ...] = (),
                signature: str = SIGNATURE_KEY) -> bytes:
    """Quantize everything but the ops whose output tensors lie under one of ``scopes`` (and
    the tensors of ``signature``'s outputs named in ``outputs``).

    TensorFlow's own selective quantization: ``QuantizationDebugger`` calibrates once,
    then re-quantizes with those tensors denylisted. Used for the log-mel front end
    (quantized, it is off by tens of dB; kept float, it matches the float file: see
    export/README.md) and the weak pooling head (linear-softmax divides by sum(p), which int8
    rounds to its zero point on silence: the DIV kernel then aborts the invoke).
    """
    import tensorflow as tf

    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter)
    names = list(flatbuffer_tensor_types(debugger.calibrated_model))                 # every signature
    for scope in scopes:
        if not any(in_scope(name, scope) for name in names):
            raise ExportError(f"no tensor in name scope {scope!r} to keep float in the converted graph")
    nodes = [name for name in names if any(in_scope(name, scope) for scope in scopes)]
    nodes += signature_output_tensors(debugger.calibrated_model, signature, outputs)
    # A DIV's own output carries the signature's output name, outside any scope: keep every
    # DIV float by op type (a quantized DIV is a crash hazard wherever it is).
    # QuantizationDebugger.get_nondebug_quantized_model() is this same call with float
    # inputs and outputs always; a full-integer file asks mlir_quantize for int8 ones.
    from tensorflow.lite.python import convert as lite_convert

    io_type = converter.inference_input_type if converter.inference_input_type == tf.int8 else tf.float32
    return lite_convert.mlir_quantize(debugger.calibrated_model,
                                      disable_per_channel=converter._experimental_disable_per_channel,
                                      fully_quantize=False, input_data_type=io_type, output_data_type=io_type,
                                      denylisted_ops=list(FLOAT_OPS), denylisted_nodes=nodes)


def signature_output_tensors(flatbuffer: bytes, signature: str, outputs: tuple[str, ...]) -> list[str]:
    """Tensor names of ``signature``'s outputs ``outputs`` in a converted model (ExportError
    for an output the signature lacks)."""
    if not outputs:
        return []
    interpreter = open_interpreter(model_content=flatbuffer)
    details = interpreter.get_signature_runner(signature).get_output_details()
    missing = sorted(set(outputs) - set(details))
    if missing:
        raise ExportError(f"signature {signature!r} has no output {missing} to keep float (outputs: {sorted(details)})")
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    return [names[details[name]["index"]] for name in outputs]


def io_quantization(flatbuffer: bytes, signatures=(SIGNATURE_KEY,)) -> dict:
    """signature -> {"inputs": {name: q}, "outputs": {name: q}}, q = {"scale", "zero_point",
    "dtype"}: how the runtime (de)quantizes each signature tensor (an input and an output
    may share a name, e.g. a carried state, and differ)."""
    interpreter = open_interpreter(model_content=flatbuffer)
    describe = lambda details: {name: {"scale": float(d["quantization"][0]), "zero_point": int(d["quantization"][1]),
                                       "dtype": np.dtype(d["dtype"]).name} for name, d in details.items()}
    table = {}
    for signature in signatures:
        runner = interpreter.get_signature_runner(signature)
        table[signature] = {"inputs": describe(runner.get_input_details()),
                            "outputs": describe(runner.get_output_details())}
    return table
