"""Whole-clip TFLite export as loop-free stages: exact for every CRNN, bidirectional
included, and convertible to full-integer int8.

The whole-clip graph of :mod:`sedweak.export.whole_clip` keeps the GRU as a WHILE loop, which
the int8 calibrator cannot run (it segfaults: export/README.md); the streaming step of
:mod:`sedweak.export.streaming` has no loop but is exact for forward-only models only.
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
           [+ ``embedding_frames`` (1, T', E) with ``with_embedding``: the embedding head's
           Dense on every frame; Dense is affine, so their mean over the window, L2-normalised
           by the runtime (sidecar finish ``mean_then_l2``), is the model's embedding exactly]

The runtime (:class:`sedweak_runtime.StagedModel`, which the library runs too: one loop) calls ``conv`` once,
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

from sedweak.errors import ExportError, ExportSettingsError
from sedweak.export.calibration import evenly_spaced, fit_waveform, fit_window
from sedweak.export.convert import convert_saved_model, io_quantization
from sedweak.export.graph import conv_stack, dense_stack, embedding_frames, embedding_projection, recurrent_layers
from sedweak.export.gru import gru_steps, gru_weights, paired_steps
from sedweak.export.sidecar import add_embedding, embedding_section, input_shape, sidecar_json, sidecar_path
from sedweak.io_utils import atomic_write_bytes, atomic_write_json
from sedweak.models.saving import ModelInfo

STAGED_FORMAT = "sedweak-staged-3"          # read by sedweak_runtime.StagedModel
STAGED_MODES = ("float32", "float16", "dynamic", "int8")
FRONTEND_SCOPE = "logmel_frontend"
# The weak pooling layer's name in every CRNN (sedweak.models.crnn): kept float in int8
# files, see :func:`sedweak.export.convert._keep_float`.
WEAK_SCOPE = "weak"


def layer_specs(model) -> list[dict]:
    """One dict per recurrent layer: ``signature``, ``units``, ``bidirectional``."""
    return [{"signature": f"gru_{i}", "bidirectional": hasattr(layer, "backward_layer"),
             "units": int(gru_weights(getattr(layer, "forward_layer", layer))[1].shape[0])}
            for i, layer in enumerate(recurrent_layers(model))]


def _conv_function(model, info: ModelInfo, waveform_input: bool):
    frontend = None
    if waveform_input:
        from sedweak.models.frontend import LogMel

        frontend = LogMel.from_feature_config(info.features, name=FRONTEND_SCOPE)

    def conv(x):
        features, _ = conv_stack(model, frontend(x) if frontend is not None else x)
        return {"features": features}

    return conv


def _gru_function(layer):
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
    def head(x):
        features = dense_stack(model, x)              # what the strong layer and attention pooling read
        strong = model.get_layer("strong")(features)
        return {"strong": strong, "weak": model.get_layer("weak")([strong, features])}

    return head


def _with_embedding_frames(model, head):
    """``head`` plus the output ``embedding_frames`` (1, T', E) (:func:`embedding_frames`)."""
    def head_and_embedding(x):
        return {**head(x), "embedding_frames": embedding_frames(model, x)}

    return head_and_embedding


def stage_signatures(model, info: ModelInfo, steps: int, waveform_input: bool = False,
                     with_embedding: bool = False) -> dict:
    """name -> (function, input TensorSpecs) for every stage; ``steps`` = S model frames per GRU call;
    ``with_embedding``: the head also outputs ``embedding_frames``."""
    import tensorflow as tf

    probe, _ = conv_stack(model, np.zeros((1, info.clip_frames, info.features.n_mels), np.float32))
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
    head = _head_function(model)
    signatures["head"] = (_with_embedding_frames(model, head) if with_embedding else head,
                          [spec((1, model_frames, width), "x")])
    return signatures


def _stage_outputs(name: str, layer: dict | None, with_embedding: bool = False) -> tuple[str, ...]:
    if name == "conv":
        return ("features",)
    if name == "head":
        return ("strong", "weak") + (("embedding_frames",) if with_embedding else ())
    return ("y_forward", "state_forward") + (("y_backward", "state_backward") if layer["bidirectional"] else ())


def keras_staged_model(model, info: ModelInfo, steps: int, record: dict | None = None,
                       waveform_input: bool = False, with_embedding: bool = False):
    """The float stages run in TensorFlow behind the runtime's :class:`sedweak_runtime.StagedModel`
    (the one chunk loop): ``staged(window) -> {"strong", "weak"[, "embedding" (1, E)]}``.
    ``record``: signature -> list of the inputs each stage saw (int8 calibration)."""
    import tensorflow as tf
    from sedweak_runtime import StagedModel

    signatures = stage_signatures(model, info, steps, waveform_input, with_embedding)
    layers = {meta["signature"]: meta for meta in layer_specs(model)}
    float32 = {"dtype": "float32", "scale": 0.0, "zero_point": 0}
    tensors = {name: {"inputs": {s.name: float32 for s in specs},
                      "outputs": {o: float32 for o in _stage_outputs(name, layers.get(name), with_embedding)}}
               for name, (_, specs) in signatures.items()}

    def runner(name):
        fn, specs = signatures[name]
        compiled = tf.function(fn, input_signature=specs, autograph=False)
        order = [s.name for s in specs]

        def run(**inputs):
            if record is not None:
                record.setdefault(name, []).append({k: np.array(v, np.float32) for k, v in inputs.items()})
            return {k: v.numpy() for k, v in compiled(*[tf.constant(inputs[n], tf.float32) for n in order]).items()}

        return run

    meta = {"input": {"name": "waveform" if waveform_input else "logmel"},
            "staged": {"format": STAGED_FORMAT, "steps": steps, "layers": list(layers.values()), "tensors": tensors}}
    if with_embedding:
        meta["embedding"] = _embedding_section(model)
    return StagedModel({name: runner(name) for name in signatures}, meta)


def _embedding_section(model, source: str = "") -> dict:
    """The sidecar's ``embedding`` section of a staged file: per-frame projections out of ``head``."""
    dense = embedding_projection(model, source or f"model {model.name!r}")
    return embedding_section("embedding_frames", dense.units, "mean_then_l2", "head")


def calibration_inputs(model, info: ModelInfo, steps: int, clips, per_signature: int = 300,
                       waveform_input: bool = False) -> list[tuple]:
    """(signature, inputs) pairs seen when the float stages run on ``clips`` (log-mels (T, F),
    or waveforms (samples,) with ``waveform_input``) cut or padded to the exported window,
    at most ``per_signature`` each, spread evenly."""
    record: dict = {}
    staged = keras_staged_model(model, info, steps, record, waveform_input)
    for clip in clips:
        clip = np.asarray(clip, np.float32)
        staged((fit_waveform(clip, info) if waveform_input else fit_window(clip, info))[None])
    pairs = []
    for signature, seen in record.items():
        pairs += [(signature, seen[i]) for i in evenly_spaced(len(seen), per_signature)]
    return pairs


def run_staged_file(path: str | Path, window: np.ndarray, num_threads: int = 1) -> dict[str, np.ndarray]:
    """A staged .tflite (and its sidecar) on one window (1, T, F) log-mel, or (1, clip_samples)
    for a waveform-input file: ``strong``, ``weak`` (and ``embedding`` (1, E) when the file has
    one), through the device runtime."""
    from sedweak_runtime import Detector

    return Detector(path, num_threads).staged(np.asarray(window, np.float32))


def float_scopes(mode: str, waveform_input: bool) -> tuple[str, ...]:
    """Name scopes kept float in a ``mode`` file: in int8, the weak pooling head always
    (see :func:`sedweak.export._keep_float`), and the log-mel front end when in the graph."""
    if mode != "int8":
        return ()
    return (WEAK_SCOPE,) + ((FRONTEND_SCOPE,) if waveform_input else ())


def export_staged(model, info: ModelInfo, out: str | Path, mode: str = "int8", steps: int = 10,
                  calibration=None, full_integer: bool = False, source: str = "",
                  waveform_input: bool = False, with_embedding: bool = False) -> Path:
    """Write the staged file ``out`` (.tflite) and its sidecar. Returns ``out``.

    ``steps``: model frames per ``gru_i`` call. ``calibration``: clips, required for
    ``int8``: log-mels ((T, F) arrays), or waveforms ((samples,) arrays) with
    ``waveform_input``. ``full_integer``: int8 inputs and outputs on every signature (their
    scale and zero point in the sidecar). ``waveform_input``: the log-mel front end inside
    ``conv``, float32 in every mode (``dynamic`` would quantize it, so it is refused).
    ``with_embedding``: ``head`` also outputs ``embedding_frames`` (1, T', E) (sidecar finish
    ``mean_then_l2``); :class:`ExportSettingsError` naming the model when it has no CRNN embedding head.
    """
    import keras

    if mode not in STAGED_MODES:
        raise ExportSettingsError(f"staged export mode must be one of {STAGED_MODES}, got {mode!r} (int16x8: the "
                                  "converter's int16 GRU stages come out wrong: export/README.md)")
    if steps < 1:
        raise ExportSettingsError(f"steps (model frames per GRU call) must be >= 1, got {steps}")
    if full_integer and mode != "int8":
        raise ExportSettingsError("--full-integer needs --mode int8")
    if waveform_input and (full_integer or mode == "dynamic"):
        raise ExportSettingsError("--waveform-input keeps the log-mel front end float: not with --full-integer or --mode dynamic")
    embedding = _embedding_section(model, source) if with_embedding else None
    representative = None
    if mode == "int8":
        if not calibration:
            raise ExportSettingsError(f"--mode {mode} needs calibration clips (--calibration)")
        pairs = calibration_inputs(model, info, steps, calibration, waveform_input=waveform_input)
        representative = lambda: iter(pairs)
    signatures = stage_signatures(model, info, steps, waveform_input, with_embedding)
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="sedweak-staged-") as tmp:
        archive = keras.export.ExportArchive()
        archive.track(model)
        for name, (fn, specs) in signatures.items():
            archive.add_endpoint(name, fn, input_signature=specs)
        archive.write_out(str(Path(tmp) / "sm"), verbose=False)
        flatbuffer = convert_saved_model(Path(tmp) / "sm", mode, representative, full_integer,
                                         signature_keys=list(signatures),
                                         float_scopes=float_scopes(mode, waveform_input))
    meta = sidecar_json(info, mode, waveform_input, source)
    model_frames = info.clip_frames // info.time_pooling
    meta["outputs"] = [{"name": "strong", "shape": [1, model_frames, len(info.classes)]},
                       {"name": "weak", "shape": [1, len(info.classes)]}]
    if embedding is not None:
        meta = add_embedding(meta, embedding, [1, model_frames, embedding["dim"]])
    meta["signature"] = None                                     # several: see "staged"
    meta["staged"] = {"format": STAGED_FORMAT, "steps": steps, "layers": layer_specs(model),
                      "tensors": io_quantization(flatbuffer, signatures)}
    atomic_write_bytes(out, flatbuffer)
    atomic_write_json(sidecar_path(out), meta)
    return out
