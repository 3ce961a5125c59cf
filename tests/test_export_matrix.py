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
    diffs = run_checks(out, info, _inputs(), reference)          # raises ExportError on a crash
    assert set(diffs) == ({"strong"} if graph == "streaming" else {"strong", "weak"})
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
    real = sedweak_runtime.Detector.frame_probabilities

    def abort_on_silence(self, waveform):
        if not np.any(waveform):
            raise RuntimeError("tflite/kernels/div.cc:262 data[i] != zero_point was not true.")
        return real(self, waveform)

    monkeypatch.setattr(sedweak_runtime.Detector, "frame_probabilities", abort_on_silence)
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
