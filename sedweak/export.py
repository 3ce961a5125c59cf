"""TFLite export of a trained CRNN and the checks every exported file goes through.

Route (GUIDE §5): a fixed batch-1 ``tf.function`` signature through
``keras.export.ExportArchive`` -> SavedModel -> ``TFLiteConverter.from_saved_model``
with builtin ops only (``from_keras_model`` fails on the GRU's TensorList ops; the
GRU becomes a builtin WHILE loop). The exported graph has two outputs, ``strong``
(1, clip_frames // time_pooling, classes) and ``weak`` (1, classes); the embedding
head is dropped (the device runtime does not use it, and it costs weights).

Input kinds:
  ``logmel``    (1, clip_frames, n_mels) float32 dB, features computed outside;
  ``waveform``  (1, clip_samples) float32, the :class:`LogMel` front end inside the
                graph, always float32 (quantizing it destroys it, GUIDE §5).

Modes: ``float32`` (no optimisation), ``float16`` (float16 weights, float32
compute), ``dynamic`` (int8 weights, dynamic-range activations); full-integer ``int8``
needs a loop-free graph: the staged whole-clip file (:mod:`sedweak.export_staged`) or
the streaming step (:mod:`sedweak.export_streaming`). Everything the
device runtime needs (labels, front end, post-processing, clip length, input and
output names) goes into a sidecar ``MODEL.tflite.json``.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sedweak.artifacts import ModelInfo
from sedweak.io_utils import atomic_write_bytes, atomic_write_json

EXPORT_MODES = ("float32", "float16", "dynamic", "int8", "int16x8")
OUTPUT_NAMES = ("strong", "weak")
SIGNATURE_KEY = "serve"
SIDECAR_FORMAT = "sedweak-tflite-1"


class ExportError(RuntimeError):
    """A conversion that failed or produced a file that fails its checks."""


@dataclass(frozen=True)
class ExportCheck:
    """What :func:`check_tflite` found. ``max_abs_diff``: output name -> max |tflite - keras|."""

    path: str
    size_bytes: int
    ops: dict[str, int]
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    clips: int = 0


def evenly_spaced(count: int, most: int) -> list[int]:
    """At most ``most`` indices spread evenly over ``range(count)`` (calibration subsets)."""
    return [int(i) for i in np.linspace(0, count - 1, min(most, count)).round()] if count else []


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


def _serving_function(model, info: ModelInfo, waveform_input: bool):
    """x (input_shape) -> {"strong": (1, T', K), "weak": (1, K)}, inference mode."""
    frontend = None
    if waveform_input:
        from sedweak.models.frontend import LogMel

        frontend = LogMel.from_feature_config(info.features, name="logmel_frontend")

    def serve(x):
        features = frontend(x) if frontend is not None else x
        outputs = model(features, training=False)
        return {name: outputs[name] for name in OUTPUT_NAMES}

    return serve


def write_saved_model(model, info: ModelInfo, waveform_input: bool, directory: str | Path) -> Path:
    """Fixed batch-1 SavedModel with one signature ``serve`` (input named ``logmel``/``waveform``)."""
    import keras
    import tensorflow as tf

    name = "waveform" if waveform_input else "logmel"
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE_KEY, _serving_function(model, info, waveform_input),
                         input_signature=[tf.TensorSpec(input_shape(info, waveform_input), tf.float32, name=name)])
    archive.write_out(str(directory), verbose=False)
    return Path(directory)


def convert_saved_model(directory: str | Path, mode: str, representative=None, full_integer: bool = False,
                        signature_keys=(SIGNATURE_KEY,), float_scope: str | None = None) -> bytes:
    """SavedModel -> TFLite flatbuffer bytes, builtin ops only, in ``mode``.

    ``int8`` needs ``representative`` (a callable yielding lists of signature inputs) and
    a loop-free graph: the calibrator segfaults on any WHILE (measured, even one of plain
    ops), so int8 is offered for the staged and streaming graphs only. Every int8 / int16x8
    result is checked with :func:`requantizing_copies` (ExportError if a data-movement op
    got two quantizations). ``full_integer``: int8
    input and output tensors too (else float, with quantize / dequantize in the graph).
    ``int16x8``: the same with int16 activations (closer to float, slower kernels).
    With several ``signature_keys``, ``representative`` yields ``(signature, {input: array})``.
    ``float_scope``: in ``int8`` / ``int16x8``, ops whose tensor names contain it stay float
    (selective quantization, :func:`_keep_float`), e.g. the in-graph log-mel front end.
    """
    import tensorflow as tf

    if mode not in EXPORT_MODES:
        raise ValueError(f"export mode must be one of {EXPORT_MODES}, got {mode!r}")
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
        if float_scope and mode in ("int8", "int16x8"):
            flatbuffer = _keep_float(converter, float_scope)
        else:
            flatbuffer = converter.convert()
    except Exception as err:  # ConverterError carries the MLIR diagnostics
        raise ExportError(f"TFLite conversion ({mode}) failed: {err}") from None
    mismatches = requantizing_copies(flatbuffer)
    if mismatches:
        raise ExportError(f"TFLite conversion ({mode}) gave data-movement ops different input and output "
                          f"quantization, which their kernels ignore (silently wrong outputs): {mismatches[:3]}")
    return flatbuffer


def _keep_float(converter, scope: str) -> bytes:
    """Quantize everything but the ops whose output tensors are named ``*scope*``.

    TensorFlow's own selective quantization: ``QuantizationDebugger`` calibrates once,
    then re-quantizes with those tensors denylisted (GUIDE §5: a quantized log-mel front
    end is off by 33-90 dB; kept float it matches the float file, 1e-3 dB).
    """
    import tensorflow as tf

    if converter.inference_input_type == tf.int8:
        raise ExportError("a float front end needs float inputs: --full-integer cannot go with --waveform-input")
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter)
    nodes = [name for name in flatbuffer_tensor_types(debugger.calibrated_model) if scope in name]   # every signature
    if not nodes:
        raise ExportError(f"no tensor named *{scope}* to keep float in the converted graph")
    debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=nodes)
    return debugger.get_nondebug_quantized_model()


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


def export_tflite(model, info: ModelInfo, out: str | Path, mode: str = "float32",
                  waveform_input: bool = False, source: str = "") -> Path:
    """Convert ``model`` and write ``out`` (.tflite) plus ``out.json``. Returns ``out``.

    ``dynamic`` with ``waveform_input`` is refused: dynamic-range quantization of the
    in-graph mel matmul ruins the front end (88 dB error measured, GUIDE §5).
    """
    if mode in ("int8", "int16x8"):
        raise ValueError(f"--mode {mode}: this whole-clip graph keeps the GRU as a WHILE loop, which the int8 "
                         "calibrator cannot run (segfault); use sedweak.export_staged.export_staged (what "
                         "`sedweak export --mode int8` does) or a --streaming export")
    if mode == "dynamic" and waveform_input:
        raise ValueError("--mode dynamic would quantize the in-graph log-mel front end (GUIDE §5: 88 dB "
                         "error); export log-mel input for dynamic, or use float32/float16 with --waveform-input")
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="sedweak-export-") as tmp:
        flatbuffer = convert_saved_model(write_saved_model(model, info, waveform_input, Path(tmp) / "sm"), mode)
    atomic_write_bytes(out, flatbuffer)
    atomic_write_json(sidecar_path(out), sidecar_json(info, mode, waveform_input, source))
    return out


# ----------------------------------------------------------------------------- checks


def _read_flatbuffer(path: str | Path | bytes):
    """A .tflite path, or its bytes -> (schema module, root ``Model``)."""
    from ai_edge_litert import schema_py_generated as schema

    data = path if isinstance(path, bytes) else Path(path).read_bytes()
    return schema, schema.Model.GetRootAsModel(data, 0)


def _operator_names(schema, model) -> list[str]:
    """The model's operator-code table as names (``CONV_2D``, ``CUSTOM:<name>``, ...),
    indexed like ``Operator.OpcodeIndex()``."""
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = names.get(builtin, str(builtin))
        codes.append(f"CUSTOM:{code.CustomCode().decode()}" if name == "CUSTOM" else name)
    return codes


def tflite_ops(path: str | Path) -> dict[str, int]:
    """Operator name -> count over all subgraphs (WHILE bodies included), from the flatbuffer.

    Custom ops appear as ``CUSTOM:<name>`` (Flex ops are ``CUSTOM:Flex...``).
    """
    schema, model = _read_flatbuffer(path)
    codes = _operator_names(schema, model)
    counts: Counter = Counter()
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for o in range(graph.OperatorsLength()):
            counts[codes[graph.Operators(o).OpcodeIndex()]] += 1
    return dict(sorted(counts.items()))


# Kernels that move quantized values without rescaling them: their input and output must
# share scale and zero point (the converter's quantizer should ensure it, and for
# REVERSE_V2 it did not: 0.108 / -5 in, 0.164 / 7 out, measured in a GRU graph).
RAW_COPY_OPS = ("REVERSE_V2", "TRANSPOSE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "GATHER", "GATHER_ND",
                "STRIDED_SLICE", "SLICE", "PACK", "UNPACK", "SPLIT", "SPLIT_V", "TILE")


def requantizing_copies(path: str | Path | bytes) -> list[str]:
    """``"OP: input (scale, zero point) -> output (...)"`` for every :data:`RAW_COPY_OPS` op
    whose quantized input and output disagree; empty for a sound file."""
    schema, model = _read_flatbuffer(path)
    codes = _operator_names(schema, model)
    found = []
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)

        def quantization(index):
            q = graph.Tensors(index).Quantization()
            scale = None if q is None else q.ScaleAsNumpy()
            if scale is None or isinstance(scale, int) or len(scale) != 1:
                return None                                        # float, or per-channel weights
            return float(scale[0]), int(q.ZeroPointAsNumpy()[0])

        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            if codes[op.OpcodeIndex()] not in RAW_COPY_OPS:
                continue
            source = quantization(op.Inputs(0 if codes[op.OpcodeIndex()] != "SPLIT" else 1))
            for k in range(op.OutputsLength()):
                target = quantization(op.Outputs(k))
                if source and target and (abs(source[0] - target[0]) > 1e-6 * source[0] or source[1] != target[1]):
                    found.append(f"{codes[op.OpcodeIndex()]} {graph.Tensors(op.Outputs(k)).Name().decode()}: "
                                 f"{source} -> {target}")
    return found


def flatbuffer_tensor_types(path: str | Path | bytes) -> dict[str, str]:
    """Tensor name -> element type (``FLOAT32``, ``INT8``, ...) over all subgraphs: what a
    selective quantization left float."""
    schema, model = _read_flatbuffer(path)
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    out = {}
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for t in range(graph.TensorsLength()):
            out[graph.Tensors(t).Name().decode()] = types.get(graph.Tensors(t).Type(), "?")
    return out


def buffer_sizes(path: str | Path, top: int = 10) -> list[tuple[str, str, tuple[int, ...], int]]:
    """Largest constant buffers: (tensor name, dtype, shape, bytes), biggest first.

    A buffer shared by several tensors is listed once, under its first tensor.
    """
    schema, model = _read_flatbuffer(path)
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    seen, rows = set(), []
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            index = tensor.Buffer()
            size = model.Buffers(index).DataLength() if index < model.BuffersLength() else 0
            if size == 0 or index in seen:
                continue
            seen.add(index)
            rows.append((tensor.Name().decode(), types.get(tensor.Type(), "?"),
                         tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else (), size))
    return sorted(rows, key=lambda row: -row[3])[:top]


def run_tflite(path: str | Path, x: np.ndarray, num_threads: int = 1) -> dict[str, np.ndarray]:
    """Run the ``serve`` signature on one input of the exported shape; outputs by name."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    runner = interpreter.get_signature_runner(SIGNATURE_KEY)
    (name,) = runner.get_input_details()
    return {k: np.asarray(v) for k, v in runner(**{name: np.asarray(x, np.float32)}).items()}


def check_clips(info: ModelInfo, count: int = 3, seed: int = 0) -> np.ndarray:
    """Test waveforms (count, clip_samples): seeded noise, a 440 Hz sine + noise, silence-ish chirp."""
    rng = np.random.default_rng(seed)
    samples, rate = clip_samples(info), info.features.sample_rate_hz
    t = np.arange(samples) / rate
    clips = [0.1 * rng.standard_normal(samples),
             0.5 * np.sin(2 * np.pi * 440.0 * t) + 0.01 * rng.standard_normal(samples),
             0.3 * np.sin(2 * np.pi * (200.0 + 400.0 * t) * t) * (t > t[-1] / 2)]
    return np.stack([clips[i % len(clips)] for i in range(count)]).astype(np.float32)


def compare_with_keras(path: str | Path, model, info: ModelInfo, waveforms: np.ndarray) -> dict[str, float]:
    """Max |tflite - keras| per output over ``waveforms`` (clips, clip_samples).

    Keras always sees librosa features (:func:`logmel_librosa`); a waveform-input
    file sees the waveform, so its difference includes the in-graph front end's.
    """
    from sedweak.features import logmel_librosa

    meta = read_sidecar(path)
    kind = meta["input"]["kind"]
    worst = {name: 0.0 for name in OUTPUT_NAMES}
    for waveform in waveforms:
        logmel = logmel_librosa(waveform, info.features)[np.newaxis]          # (1, T, F)
        expected = model.predict_on_batch(logmel)
        if "staged" in meta:
            from sedweak.export_staged import run_staged_file

            got = run_staged_file(path, waveform[np.newaxis] if kind == "waveform" else logmel)
        else:
            got = run_tflite(path, waveform[np.newaxis] if kind == "waveform" else logmel)
        for name in OUTPUT_NAMES:
            worst[name] = max(worst[name], float(np.max(np.abs(got[name] - np.asarray(expected[name])))))
    return worst


def io_quantization(flatbuffer: bytes, signatures=(SIGNATURE_KEY,)) -> dict:
    """signature -> {"inputs": {name: q}, "outputs": {name: q}}, q = {"scale", "zero_point",
    "dtype"}: how the runtime (de)quantizes each signature tensor (an input and an output
    may share a name, e.g. a carried state, and differ)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    describe = lambda details: {name: {"scale": float(d["quantization"][0]), "zero_point": int(d["quantization"][1]),
                                       "dtype": np.dtype(d["dtype"]).name} for name, d in details.items()}
    table = {}
    for signature in signatures:
        runner = interpreter.get_signature_runner(signature)
        table[signature] = {"inputs": describe(runner.get_input_details()),
                            "outputs": describe(runner.get_output_details())}
    return table


def read_sidecar(path: str | Path) -> dict:
    """The ``MODEL.tflite.json`` written by :func:`export_tflite`."""
    side = sidecar_path(path)
    if not side.is_file():
        raise FileNotFoundError(f"{side}: sidecar of {path} not found (written by `sedweak export`)")
    return json.loads(side.read_text())


def check_tflite(path: str | Path, model=None, info: ModelInfo | None = None, clips: int = 3) -> ExportCheck:
    """Ops (no Flex/custom allowed), file size and, given the Keras model, max abs diffs.

    Raises:
        ExportError: the file contains non-builtin ops.
    """
    ops = tflite_ops(path)
    bad = tuple(name for name in ops if name.startswith("CUSTOM") or "FLEX" in name.upper())
    if bad:
        raise ExportError(f"{path}: non-builtin ops {list(bad)} (the device runtime has builtins only)")
    diffs = {}
    if model is not None and info is not None and clips > 0:
        diffs = compare_with_keras(path, model, info, check_clips(info, clips))
    return ExportCheck(str(path), Path(path).stat().st_size, ops, diffs, clips if diffs else 0)
