"""Whole-clip TFLite export as loop-free stages: exact for every CRNN, bidirectional
included, and convertible to full-integer int8.

The whole-clip graph of :mod:`sedweak.export` keeps the GRU as a WHILE loop, which
the int8 calibrator cannot run (segfault, GUIDE §5); the streaming step of
:mod:`sedweak.export_streaming` has no loop but is exact for forward-only models only.
A *staged* file cuts the model where the recurrence needs the whole clip: one
``.tflite`` with several signatures (batch 1, static shapes), each loop-free:

``conv``   ``logmel`` (1, T, F) dB -> ``features`` (1, T', D0)    T' = T // P, the whole window
           (``--waveform-input``: ``waveform`` (1, clip_samples), the log-mel front end inside,
           kept float32 in int8 files by selective quantization)
``gru_i``  one recurrent layer over S model frames, its two directions batched:
           ``x_forward`` (1, S, D), ``state_forward`` (1, U)
           [+ ``x_backward`` (1, S, D) time-reversed, ``state_backward`` (1, U)]
           -> ``y_forward`` (1, S, U), ``state_forward`` [+ ``y_backward``, ``state_backward``]
``head``   ``x`` (1, T', D) -> ``strong`` (1, T', K), ``weak`` (1, K)

The runtime (``export/sedweak_runtime.py``, :func:`run_staged` here) calls ``conv`` once,
then walks each layer's n = ceil(T' / S) chunks in one pass, call k running the forward
direction over chunk k of the sequence and the backward direction over chunk k of the
time-reversed sequence (reversed once per layer by the caller, outputs too: no flips in
the graph), both states carried; then ``head`` once: the numbers of the Keras model
(float32: ~1e-6), in 2 + layers x n calls. Each direction's sequence is padded with zeros
to n S after its end, which it meets only after its last real frame: no mask.
The chunk length S trades file size (each unrolled step adds ops) against calls.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from sedweak.artifacts import ModelInfo
from sedweak.export import (
    convert_saved_model,
    evenly_spaced,
    io_quantization,
    sidecar_json,
    sidecar_path,
)
from sedweak.io_utils import atomic_write_bytes, atomic_write_json

STAGED_FORMAT = "sedweak-staged-3"
STAGED_MODES = ("float32", "float16", "dynamic", "int8")


def layer_specs(model) -> list[dict]:
    """One dict per recurrent layer: ``signature``, ``units``, ``bidirectional``."""
    from sedweak.models.streaming import gru_weights, recurrent_layers

    return [{"signature": f"gru_{i}", "bidirectional": hasattr(layer, "backward_layer"),
             "units": int(gru_weights(getattr(layer, "forward_layer", layer))[1].shape[0])}
            for i, layer in enumerate(recurrent_layers(model))]


FRONTEND_SCOPE = "logmel_frontend"


def _conv_function(model, info: ModelInfo, waveform_input: bool):
    from sedweak.models.streaming import _conv_stack

    frontend = None
    if waveform_input:
        from sedweak.models.frontend import LogMel

        frontend = LogMel.from_feature_config(info.features, name=FRONTEND_SCOPE)

    def conv(x):
        features, _ = _conv_stack(model, frontend(x) if frontend is not None else x)
        return {"features": features}

    return conv


def _gru_function(layer):
    from sedweak.models.streaming import gru_steps, gru_weights, paired_steps

    if not hasattr(layer, "backward_layer"):
        def gru(x_forward, state_forward):
            y, state = gru_steps(x_forward, state_forward, gru_weights(layer))
            return {"y_forward": y, "state_forward": state}

        return gru

    def bigru(x_forward, x_backward, state_forward, state_backward):
        forward, backward, (state_f, state_b) = paired_steps(
            x_forward, x_backward, state_forward, state_backward, gru_weights(layer.forward_layer),
            gru_weights(layer.backward_layer), backward_reversed=True)
        return {"y_forward": forward, "y_backward": backward, "state_forward": state_f, "state_backward": state_b}

    return bigru


def _head_function(model):
    from sedweak.models.streaming import _head

    def head(x):
        strong = _head(model, x)
        return {"strong": strong, "weak": model.get_layer("weak")([strong, x])}

    return head


def stage_signatures(model, info: ModelInfo, steps: int, waveform_input: bool = False) -> dict:
    """name -> (function, input TensorSpecs) for every stage; ``steps`` = S model frames per GRU call."""
    import tensorflow as tf

    from sedweak.export import input_shape
    from sedweak.models.streaming import _conv_stack, recurrent_layers

    frames = info.clip_frames
    probe, _ = _conv_stack(model, np.zeros((1, frames, info.features.n_mels), np.float32))
    width, model_frames = int(probe.shape[-1]), int(probe.shape[1])
    spec = lambda shape, name: tf.TensorSpec(shape, tf.float32, name=name)
    signatures = {"conv": (_conv_function(model, info, waveform_input),
                           [spec(input_shape(info, waveform_input), "waveform" if waveform_input else "logmel")])}
    for layer, meta in zip(recurrent_layers(model), layer_specs(model)):
        units = meta["units"]
        inputs = [spec((1, steps, width), "x_forward")]
        if meta["bidirectional"]:
            inputs += [spec((1, steps, width), "x_backward"), spec((1, units), "state_forward"),
                       spec((1, units), "state_backward")]
        else:
            inputs += [spec((1, units), "state_forward")]
        signatures[meta["signature"]] = (_gru_function(layer), inputs)
        width = units * (2 if meta["bidirectional"] else 1)
    signatures["head"] = (_head_function(model), [spec((1, model_frames, width), "x")])
    return signatures


def run_staged(call, window: np.ndarray, layers: list[dict], steps: int, input_name: str = "logmel") -> dict[str, np.ndarray]:
    """The stages over one window: ``call(signature, {input: array}) -> {output: array}``.

    ``window``: ``logmel`` (1, T, F) of the exported window length, or with
    ``input_name="waveform"`` (1, clip_samples). Returns ``strong`` (1, T', K) and
    ``weak`` (1, K). The same loop as ``StagedModel`` in ``export/sedweak_runtime.py``.
    """
    x = np.asarray(call("conv", {input_name: window})["features"])[0]           # (T', D)
    for layer in layers:
        x = _recurrent_layer(call, x, layer, steps)
    out = call("head", {"x": x[None]})
    return {"strong": np.asarray(out["strong"]), "weak": np.asarray(out["weak"])}


def _recurrent_layer(call, x: np.ndarray, layer: dict, steps: int) -> np.ndarray:
    """(T', D) -> (T', U or 2U): one layer's chunk calls. The backward direction reads the
    time-reversed sequence; each sequence is padded after its end (met last)."""
    frames, chunks = x.shape[0], -(-x.shape[0] // steps)
    pad = np.zeros((chunks * steps - frames, x.shape[1]), np.float32)
    x_forward, x_backward = np.concatenate([x, pad]), np.concatenate([x[::-1], pad])
    units, both = layer["units"], layer["bidirectional"]
    states = {"state_forward": np.zeros((1, units), np.float32)}
    if both:
        states["state_backward"] = np.zeros((1, units), np.float32)
    forward, backward = [], []
    for k in range(chunks):
        inputs = {"x_forward": x_forward[None, k * steps:(k + 1) * steps], **states}
        if both:
            inputs["x_backward"] = x_backward[None, k * steps:(k + 1) * steps]
        out = call(layer["signature"], inputs)
        states = {name: np.asarray(out[name]) for name in states}
        forward.append(np.asarray(out["y_forward"])[0])
        if both:
            backward.append(np.asarray(out["y_backward"])[0])
    y = np.concatenate(forward)[:frames]
    return y if not both else np.concatenate([y, np.concatenate(backward)[:frames][::-1]], axis=-1)


def keras_stage_caller(model, info: ModelInfo, steps: int, record: dict | None = None, waveform_input: bool = False):
    """``call`` for :func:`run_staged` running the float stages in TensorFlow; ``record``:
    signature -> list of the inputs seen (for int8 calibration)."""
    import tensorflow as tf

    signatures = stage_signatures(model, info, steps, waveform_input)
    functions = {name: tf.function(fn, input_signature=specs, autograph=False)
                 for name, (fn, specs) in signatures.items()}
    order = {name: [s.name for s in specs] for name, (_, specs) in signatures.items()}

    def call(signature, inputs):
        if record is not None:
            record.setdefault(signature, []).append({k: np.asarray(v, np.float32) for k, v in inputs.items()})
        args = [tf.constant(inputs[name], tf.float32) for name in order[signature]]
        return {k: v.numpy() for k, v in functions[signature](*args).items()}

    return call


def calibration_inputs(model, info: ModelInfo, steps: int, clips, per_signature: int = 300,
                       waveform_input: bool = False) -> list[tuple]:
    """(signature, inputs) pairs seen when the float stages run on ``clips`` (log-mels (T, F),
    or waveforms (samples,) with ``waveform_input``) cut or padded to the exported window,
    at most ``per_signature`` each, spread evenly."""
    record: dict = {}
    call = keras_stage_caller(model, info, steps, record, waveform_input)
    layers = layer_specs(model)
    for clip in clips:
        clip = np.asarray(clip, np.float32)
        window = fit_waveform(clip, info) if waveform_input else fit_window(clip, info)
        run_staged(call, window[None], layers, steps, "waveform" if waveform_input else "logmel")
    pairs = []
    for signature, seen in record.items():
        pairs += [(signature, seen[i]) for i in evenly_spaced(len(seen), per_signature)]
    return pairs


def fit_window(logmel: np.ndarray, info: ModelInfo) -> np.ndarray:
    """(T, F) -> (clip_frames, F): cut, or padded with the -100 dB floor as ``sedweak predict``."""
    frames = info.clip_frames
    if logmel.shape[0] >= frames:
        return logmel[:frames]
    floor = np.float32(10.0 * np.log10(info.features.amin_power))
    return np.concatenate([logmel, np.full((frames - logmel.shape[0], logmel.shape[1]), floor, np.float32)])


def fit_waveform(waveform: np.ndarray, info: ModelInfo) -> np.ndarray:
    """(samples,) -> (clip_samples,): cut, or padded with zeros."""
    from sedweak.export import clip_samples

    samples = clip_samples(info)
    return np.pad(waveform[:samples], (0, max(0, samples - len(waveform))))


def run_staged_file(path: str | Path, window: np.ndarray, num_threads: int = 1) -> dict[str, np.ndarray]:
    """A staged .tflite (and its sidecar) on one window (1, T, F) log-mel, or (1, clip_samples)
    for a waveform-input file: strong and weak.
    Inputs are quantized and outputs dequantized where the file is full-integer."""
    from ai_edge_litert.interpreter import Interpreter

    from sedweak.export import read_sidecar

    meta = read_sidecar(path)
    staged = meta["staged"]
    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    runners = {name: interpreter.get_signature_runner(name) for name in staged["tensors"]}

    def call(signature, inputs):
        tensors = staged["tensors"][signature]
        out = runners[signature](**{k: _quantize(v, tensors["inputs"][k]) for k, v in inputs.items()})
        return {k: _dequantize(v, tensors["outputs"][k]) for k, v in out.items()}

    return run_staged(call, np.asarray(window, np.float32), staged["layers"], staged["steps"], meta["input"]["name"])


def _quantize(x, tensor: dict) -> np.ndarray:
    if tensor["dtype"] != "int8":
        return np.asarray(x, np.float32)
    return np.clip(np.round(np.asarray(x) / tensor["scale"] + tensor["zero_point"]), -128, 127).astype(np.int8)


def _dequantize(x, tensor: dict) -> np.ndarray:
    x = np.asarray(x)
    return x.astype(np.float32) if tensor["dtype"] != "int8" else (x.astype(np.float32) - tensor["zero_point"]) * tensor["scale"]


def export_staged(model, info: ModelInfo, out: str | Path, mode: str = "int8", steps: int = 10,
                  calibration=None, full_integer: bool = False, source: str = "",
                  waveform_input: bool = False) -> Path:
    """Write the staged file ``out`` (.tflite) and its sidecar. Returns ``out``.

    ``steps``: model frames per ``gru_i`` call. ``calibration``: clips, required for
    ``int8``: log-mels ((T, F) arrays), or waveforms ((samples,) arrays) with
    ``waveform_input``. ``full_integer``: int8 inputs and outputs on every signature (their
    scale and zero point in the sidecar). ``waveform_input``: the log-mel front end inside
    ``conv``, float32 in every mode (``dynamic`` would quantize it, so it is refused).
    """
    import keras

    if mode not in STAGED_MODES:
        raise ValueError(f"staged export mode must be one of {STAGED_MODES}, got {mode!r} (int16x8: the "
                         "converter's int16 GRU stages came out wrong, max diff 0.93 on a trained model)")
    if steps < 1:
        raise ValueError(f"steps (model frames per GRU call) must be >= 1, got {steps}")
    if full_integer and mode != "int8":
        raise ValueError("--full-integer needs --mode int8")
    if waveform_input and (full_integer or mode == "dynamic"):
        raise ValueError("--waveform-input keeps the log-mel front end float: not with --full-integer or --mode dynamic")
    representative = None
    if mode == "int8":
        if not calibration:
            raise ValueError(f"--mode {mode} needs calibration clips (--calibration)")
        pairs = calibration_inputs(model, info, steps, calibration, waveform_input=waveform_input)
        representative = lambda: iter(pairs)
    signatures = stage_signatures(model, info, steps, waveform_input)
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="sedweak-staged-") as tmp:
        archive = keras.export.ExportArchive()
        archive.track(model)
        for name, (fn, specs) in signatures.items():
            archive.add_endpoint(name, fn, input_signature=specs)
        archive.write_out(str(Path(tmp) / "sm"), verbose=False)
        flatbuffer = convert_saved_model(Path(tmp) / "sm", mode, representative, full_integer,
                                         signature_keys=list(signatures),
                                         float_scope=FRONTEND_SCOPE if waveform_input else None)
    atomic_write_bytes(out, flatbuffer)
    meta = sidecar_json(info, mode, waveform_input, source)
    meta["outputs"] = [{"name": "strong", "shape": [1, info.clip_frames // info.time_pooling, len(info.classes)]},
                       {"name": "weak", "shape": [1, len(info.classes)]}]
    meta["signature"] = None                                     # several: see "staged"
    meta["staged"] = {"format": STAGED_FORMAT, "steps": steps, "layers": layer_specs(model),
                      "tensors": io_quantization(flatbuffer, signatures)}
    atomic_write_json(sidecar_path(out), meta)
    return out
