"""Every weak pooling x every export variant x the inputs that crash devices.

Inputs (sedweak.export.checks.check_inputs): digital silence, -80 dBFS noise, full-scale
clipped noise, a 0.3 s clip, a 65 s clip and 20 real recordings of the embedded sound
bank. Acceptance: no input crashes any file, and every file stays within its mode's
stated tolerance of the Keras model (``TOLERANCES``).

The models are tiny random CRNNs (2 s clips) whose class ``b`` is silent everywhere
(strong bias -30, as a class absent from a clip is in a trained model): before the
weak head was kept float, the int8 linear-softmax file aborted on exactly that class
("div.cc data[i] != zero_point").
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_streaming import _randomize

from sedweak.models.saving import ModelInfo
from sedweak.config import FeatureConfig, PostprocessConfig

POOLINGS = ("max", "mean", "attention", "linear_softmax")
# variant -> (export graph, mode, full_integer, waveform_input)
VARIANTS = {
    "float32": ("whole_clip", "float32", False, False),
    "float16": ("whole_clip", "float16", False, False),
    "dynamic": ("whole_clip", "dynamic", False, False),
    "int8 staged": ("staged", "int8", False, False),
    "int8 full-integer": ("staged", "int8", True, False),
    "int8 waveform-input": ("staged", "int8", False, True),
    "streaming float32": ("streaming", "float32", False, False),
    "streaming int8": ("streaming", "int8", False, False),
}
_CACHE: dict = {}


def _model(pooling: str, bidirectional: bool):
    from sedweak.models.crnn import build_crnn, forward_crnn
    from sedweak.config import get_preset

    config = dataclasses.replace(get_preset("fast"), conv_filters=(4, 4, 4), rnn_units=(6,), weak_pooling=pooling)
    model = _randomize((build_crnn if bidirectional else forward_crnn)(config, 3), seed=1)
    bias = model.get_layer("strong").bias
    bias.assign(np.array([0.0, -30.0, -1.0], np.float32))                 # class b: never active
    return model, ModelInfo(("a", "b", "c"), FeatureConfig(), PostprocessConfig(), 4, 2.0)


def _inputs():
    from sedweak.export import check_inputs

    if "inputs" not in _CACHE:
        _, info = _model("max", True)
        _CACHE["inputs"] = check_inputs(info, bank_clips=20)
    return _CACHE["inputs"]


def _calibration(info, waveform_input: bool):
    """Quiet and loud noise and tones: int8 ranges that include near-silence."""
    from sedweak.features import logmel_librosa

    rng = np.random.default_rng(7)
    t = np.arange(32_000) / 16_000
    waves = [level * rng.standard_normal(32_000) for level in (1e-3, 0.03, 0.3)]
    waves += [0.5 * np.sin(2 * np.pi * f * t) * (t > 0.5) for f in (440.0, 2500.0)]
    waves = [w.astype(np.float32) for w in waves]
    return waves if waveform_input else [logmel_librosa(w, info.features) for w in waves]


def _reference(pooling: str, bidirectional: bool):
    from sedweak.export.checks import reference_outputs

    key = (pooling, bidirectional)
    if key not in _CACHE:
        model, info = _model(pooling, bidirectional)
        _CACHE[key] = (model, info, reference_outputs(model, info, _inputs()))
    return _CACHE[key]


# Float files cannot hit the int8 crash: their variants run over every pooling with
# `-m slow` and over linear-softmax (the pooling that divides) in the default suite.
FLOAT_VARIANTS = ("float32", "float16", "dynamic", "streaming float32")
CASES = [pytest.param(pooling, variant, marks=[pytest.mark.slow] if variant in FLOAT_VARIANTS
                      and pooling != "linear_softmax" else [])
         for pooling in POOLINGS for variant in VARIANTS]


@pytest.mark.parametrize("pooling, variant", CASES)
def test_no_input_crashes_and_outputs_stay_within_tolerance(tmp_path, pooling, variant):
    from sedweak.export import TOLERANCES, export_staged, export_streaming, export_tflite, tflite_ops
    from sedweak.export.checks import run_checks

    graph, mode, full_integer, waveform_input = VARIANTS[variant]
    model, info, reference = _reference(pooling, bidirectional=graph != "streaming")
    calibration = _calibration(info, waveform_input) if mode == "int8" else None
    out = tmp_path / "m.tflite"
    if graph == "whole_clip":
        export_tflite(model, info, out, mode)
    elif graph == "staged":
        export_staged(model, info, out, mode, 10, calibration, full_integer, waveform_input=waveform_input)
    else:
        export_streaming(model, info, out, 20, mode, calibration)
    parity = run_checks(out, info, _inputs(), reference)          # raises ExportError on a crash
    diffs = parity.max_abs_diff
    assert set(diffs) == ({"strong"} if graph == "streaming" else {"strong", "weak"}) and not parity.min_cosine
    assert max(diffs.values()) <= TOLERANCES[mode], diffs
    if mode == "int8":
        assert "WHILE" not in tflite_ops(out)


def test_the_check_inputs_are_the_ones_the_issue_names():
    from sedweak.export import check_inputs

    _, info = _model("max", True)
    inputs = dict(check_inputs(info, bank_clips=20))
    assert len(inputs) == 25 and sum(name.startswith("bank ") for name in inputs) == 20
    assert not np.any(inputs["digital silence"])
    assert 20 * np.log10(np.sqrt(np.mean(inputs["noise -80 dBFS"] ** 2))) == pytest.approx(-80.0, abs=0.5)
    assert np.max(np.abs(inputs["full-scale clipped noise"])) == 1.0
    assert len(inputs["0.3 s tone burst"]) == 4800 and len(inputs["65 s noise and tones"]) == 65 * 16_000
    labels = {name.split("/")[1] for name in inputs if name.startswith("bank ")}
    assert len(labels) >= 9                                          # every foreground class of the bank


def test_a_file_that_crashes_is_refused_before_it_is_written(tmp_path, monkeypatch):
    """Export-time smoke run: an interpreter abort on any check input refuses the file and
    leaves neither it nor its sidecar behind."""
    import sedweak_runtime

    from sedweak.config import ExportConfig
    from sedweak.export import ExportError, export_model

    model, info = _model("linear_softmax", True)
    real = sedweak_runtime.Detector.window_outputs

    def abort_on_silence(self, window):           # digital silence: every log-mel frame at the -100 dB floor
        if np.all(window <= -99.0):
            raise RuntimeError("tflite/kernels/div.cc:262 data[i] != zero_point was not true.")
        return real(self, window)

    monkeypatch.setattr(sedweak_runtime.Detector, "window_outputs", abort_on_silence)
    out = tmp_path / "m.tflite"
    with pytest.raises(ExportError, match="digital silence.*div.cc"):
        export_model(model, info, out, ExportConfig(mode="float32", check=False), bank_clips=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_int8_files_keep_the_weak_head_and_every_division_float(tmp_path):
    from sedweak.export import export_staged, flatbuffer_tensor_types, quantized_ops

    model, info = _model("linear_softmax", True)
    out = export_staged(model, info, tmp_path / "q.tflite", "int8", 10, _calibration(info, False))
    types = flatbuffer_tensor_types(out)
    assert {t for name, t in types.items() if name.startswith("weak")} == {"FLOAT32"}
    assert quantized_ops(out, ("DIV",)) == []
    assert any(t == "INT8" for name, t in types.items() if "conv_block" in name)       # the body stays int8


# ----------------------------------------------------------------------------- --with-embedding

# every graph x every mode it offers, the embedding kept: variant -> (graph, mode, full_integer, waveform_input)
EMBEDDING_VARIANTS = {
    "whole_clip float32": ("whole_clip", "float32", False, False),
    "whole_clip float16": ("whole_clip", "float16", False, False),
    "whole_clip dynamic": ("whole_clip", "dynamic", False, False),
    "whole_clip float32 waveform-input": ("whole_clip", "float32", False, True),
    "staged float32": ("staged", "float32", False, False),
    "staged float16": ("staged", "float16", False, False),
    "staged dynamic": ("staged", "dynamic", False, False),
    "staged int8": ("staged", "int8", False, False),
    "staged int8 full-integer": ("staged", "int8", True, False),
    "staged int8 waveform-input": ("staged", "int8", False, True),
    "streaming float32": ("streaming", "float32", False, False),
    "streaming float16": ("streaming", "float16", False, False),
    "streaming dynamic": ("streaming", "dynamic", False, False),
    "streaming int8": ("streaming", "int8", False, False),
    "streaming int8 full-integer": ("streaming", "int8", True, False),
    "streaming int16x8": ("streaming", "int16x8", False, False),
}
# the default suite: one variant per graph, int8 where the graph offers it (~20 s); the rest with -m slow
EMBEDDING_DEFAULT = ("whole_clip float32", "staged int8", "streaming int8")


def _embedding_inputs():
    """Silence, the extremes, 0.3 s, 65 s and 3 sound-bank clips (the full 20 are run by the
    slow variants' export, `sedweak export --with-embedding --check`, through check_tflite)."""
    from sedweak.export import check_inputs

    if "embedding inputs" not in _CACHE:
        _, info = _model("linear_softmax", True)
        _CACHE["embedding inputs"] = check_inputs(info, bank_clips=3)
    return _CACHE["embedding inputs"]


def _embedding_reference(bidirectional: bool):
    from sedweak.export.checks import reference_outputs

    key = ("embedding", bidirectional)
    if key not in _CACHE:
        model, info = _model("linear_softmax", bidirectional)
        _CACHE[key] = (model, info, reference_outputs(model, info, _embedding_inputs(), embedding=True))
    return _CACHE[key]


def _embedding_file(variant: str, tmp_path_factory):
    """(the variant's file exported --with-embedding, model, info, reference), once per session."""
    graph, mode, full_integer, waveform_input = EMBEDDING_VARIANTS[variant]
    model, info, reference = _embedding_reference(bidirectional=graph != "streaming")
    if ("file", variant) not in _CACHE:
        out = tmp_path_factory.mktemp("embedding") / "e.tflite"
        _CACHE[("file", variant)] = _export_with_embedding(model, info, out, *EMBEDDING_VARIANTS[variant])
    return _CACHE[("file", variant)], model, info, reference


def _export_with_embedding(model, info, out, graph, mode, full_integer, waveform_input):
    from sedweak.export import export_staged, export_streaming, export_tflite

    calibration = _calibration(info, waveform_input) if mode in ("int8", "int16x8") else None
    if graph == "whole_clip":
        return export_tflite(model, info, out, mode, waveform_input, with_embedding=True)
    if graph == "staged":
        return export_staged(model, info, out, mode, 10, calibration, full_integer, waveform_input=waveform_input,
                             with_embedding=True)
    return export_streaming(model, info, out, 20, mode, calibration, full_integer, with_embedding=True)


@pytest.mark.parametrize("variant", [pytest.param(v, marks=[] if v in EMBEDDING_DEFAULT else [pytest.mark.slow])
                                     for v in EMBEDDING_VARIANTS])
def test_with_embedding_every_graph_and_mode_is_unit_norm_and_close_to_keras(tmp_path_factory, variant):
    """Silence, extremes and bank clips: the file's clip embedding is finite and unit-norm
    (run_checks refuses it otherwise) and its cosine with the Keras model's embedding (of the
    same windows, or of the whole input for a stream) reaches EMBEDDING_MIN_COSINE.
    Measured (linear-softmax tiny models): float32 >= 0.9999999, float16 0.999995, dynamic
    1.0 (tensors too small to quantize), int8 0.980 staged / 0.986 streamed, int16x8 0.9996."""
    import sedweak_runtime

    from sedweak.export import EMBEDDING_MIN_COSINE, TOLERANCES, read_sidecar
    from sedweak.export.checks import run_checks

    graph, mode, _, _ = EMBEDDING_VARIANTS[variant]
    out, _, info, reference = _embedding_file(variant, tmp_path_factory)
    parity = run_checks(out, info, _embedding_inputs(), reference)
    assert set(parity.min_cosine) == {"embedding"}
    assert parity.min_cosine["embedding"] >= EMBEDDING_MIN_COSINE[mode], parity
    assert max(parity.max_abs_diff.values()) <= TOLERANCES[mode], parity          # strong / weak unchanged
    section = read_sidecar(out)["embedding"]
    assert section["dim"] == 64 and section["finish"] == ("final" if graph == "whole_clip" else "mean_then_l2")
    detector = sedweak_runtime.Detector(out)
    _, silence = _embedding_inputs()[0]
    _, embedding = detector.stitched_outputs([silence])
    assert embedding.shape == (64,) and embedding.dtype == np.float32
    assert abs(float(np.linalg.norm(embedding)) - 1.0) < 1e-5


def test_a_file_whose_embedding_is_not_unit_norm_is_refused(tmp_path_factory, monkeypatch):
    """The smoke check's unit-norm rule (a zero or unscaled embedding fails, naming the input)."""
    import sedweak_runtime

    from sedweak.export import ExportError
    from sedweak.export.checks import run_checks

    out, _, info, _ = _embedding_file("whole_clip float32", tmp_path_factory)
    real = sedweak_runtime.Detector.stitched_outputs

    def unscaled(self, blocks):
        probabilities, embedding = real(self, blocks)
        return probabilities, 2.0 * embedding

    monkeypatch.setattr(sedweak_runtime.Detector, "stitched_outputs", unscaled)
    with pytest.raises(ExportError, match="e.tflite: the clip embedding .* norm 2.*'digital silence'"):
        run_checks(out, info, _embedding_inputs()[:1])
