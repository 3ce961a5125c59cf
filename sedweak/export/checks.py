"""The checks every exported file goes through before it is written in place.

1. **Ops**: builtin only (no Flex / custom ops), from the flatbuffer.
2. **Smoke run** (always): the file runs, through the device runtime
   (:mod:`sedweak_runtime`), on the inputs that have crashed int8 files before:
   digital silence, -80 dBFS noise, full-scale clipped noise, a 0.3 s clip, a 65 s
   clip (several windows, stitched) and real recordings of the embedded sound bank.
   A crash or a non-finite output refuses the file (:class:`ExportError`).
3. **Parity** (``sedweak export --check``): the same inputs through the Keras model;
   the largest |tflite - keras| of the frame probabilities (and of the weak output, on
   the first window) must stay within the mode's :data:`TOLERANCES`.

A file with a clip embedding (``--with-embedding``) must give a finite, unit-norm
embedding on every input (:data:`UNIT_NORM_TOLERANCE`), and with parity its cosine
similarity with the Keras model's must reach the mode's :data:`EMBEDDING_MIN_COSINE`.
A file of an embedding-only model (no ``strong`` / ``weak``) is judged on that alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sedweak.models.saving import ModelInfo
from sedweak.export.convert import ExportError
from sedweak.export.flatbuffer import tflite_ops
from sedweak.export.sidecar import clip_samples, read_sidecar

# Max |tflite - keras| of frame / clip probabilities a file may show on the check inputs,
# per mode. float32 is the same maths (measured <= 1e-6); float16 weights lose ~3
# decimal digits; dynamic-range and int8 round activations to 8 bits (trained models:
# see export/README.md for the measured values, well inside these bounds).
TOLERANCES = {"float32": 1e-4, "float16": 2e-2, "dynamic": 0.15, "int8": 0.25, "int16x8": 0.1}
# Min cosine(tflite, keras) of the clip embedding on the check inputs, per mode (a cosine,
# not a |difference|, so that the tolerance does not depend on E; int8 quantizes the
# per-frame projections). Measured on tiny random CRNNs (tests/test_export_matrix.py):
# float32 0.9999999, float16 0.999995, int8 0.980 (staged) / 0.986 (streaming), int16x8 0.9996.
EMBEDDING_MIN_COSINE = {"float32": 0.9999, "float16": 0.999, "dynamic": 0.99, "int8": 0.95, "int16x8": 0.98}
UNIT_NORM_TOLERANCE = 1e-3    # | |embedding| - 1 | a file may show on any input (float32 rounding: ~1e-7)


@dataclass(frozen=True)
class ExportCheck:
    """What :func:`check_tflite` found. ``max_abs_diff``: output name -> max |tflite - keras|
    over the check inputs (empty without a Keras model); ``inputs``: names of the inputs run."""

    path: str
    size_bytes: int
    ops: dict[str, int]
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    tolerance: float | None = None
    min_cosine: dict[str, float] = field(default_factory=dict)    # "embedding" -> min cosine(tflite, keras)
    cosine_tolerance: float | None = None
    graph: str = ""                                                 # whole_clip | staged | streaming (export_model)


@dataclass(frozen=True)
class Parity:
    """What :func:`run_checks` measured: output name -> max |tflite - keras| (``strong``,
    ``weak``) and -> min cosine similarity (``embedding``); empty without a reference."""

    max_abs_diff: dict[str, float] = field(default_factory=dict)
    min_cosine: dict[str, float] = field(default_factory=dict)


def check_inputs(info: ModelInfo, bank_clips: int = 20, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """(name, mono waveform at the model rate) pairs: the synthetic extremes and
    ``bank_clips`` real recordings of the embedded sound bank (foregrounds, spread over
    the classes, each at most one training clip long)."""
    rng = np.random.default_rng(seed)
    rate, samples = info.features.sample_rate_hz, clip_samples(info)
    t = np.arange(int(0.3 * rate)) / rate
    inputs = [
        ("digital silence", np.zeros(samples, np.float32)),
        ("noise -80 dBFS", 1e-4 * rng.standard_normal(samples)),
        ("full-scale clipped noise", np.clip(4.0 * rng.standard_normal(samples), -1.0, 1.0)),
        ("0.3 s tone burst", 0.5 * np.sin(2 * np.pi * 1000.0 * t) + 0.01 * rng.standard_normal(len(t))),
        ("65 s noise and tones", _long_input(rng, rate, 65.0)),
    ]
    inputs += [(f"bank {name}", waveform[:samples]) for name, waveform in bank_waveforms(rate, bank_clips)]
    return [(name, np.asarray(w, np.float32)) for name, w in inputs]


def _long_input(rng, rate: int, seconds: float) -> np.ndarray:
    """Pink-ish noise with a tone every few seconds: many windows, some with events."""
    samples = int(seconds * rate)
    x = 0.05 * np.cumsum(rng.standard_normal(samples)) / np.sqrt(np.arange(1, samples + 1))
    for start in range(0, samples - rate, 7 * rate):
        t = np.arange(rate) / rate
        x[start:start + rate] += 0.3 * np.sin(2 * np.pi * (300.0 + start / rate * 20.0) * t)
    return np.clip(x, -1.0, 1.0)


def bank_waveforms(rate: int, count: int) -> list[tuple[str, np.ndarray]]:
    """``count`` foreground recordings of the embedded sound bank, round-robin over its
    classes (sorted, deterministic), resampled to ``rate``."""
    from sedweak.audio import load_audio
    from sedweak.soundbank import SoundBank

    if count <= 0:
        return []
    bank = SoundBank.open("embedded")
    by_label = {label: sorted(bank.foreground(label), key=lambda c: c.relative_path)
                for label in bank.foreground_classes}
    chosen, round_ = [], 0
    while len(chosen) < count and any(round_ < len(v) for v in by_label.values()):
        chosen += [clips[round_] for _, clips in sorted(by_label.items()) if round_ < len(clips)]
        round_ += 1
    return [(c.relative_path, load_audio(c.path, rate)) for c in chosen[:count]]


def _keras_outputs(model, info: ModelInfo, waveform: np.ndarray, embedding: bool = False) -> dict[str, np.ndarray]:
    """What the Keras model gives for one input, in the forms the files are compared on:

    ``strong``         frame probabilities of the whole input (as ``sedweak predict``);
    ``weak``           weak output of the first window of the whole input's log-mel;
    ``window_strong``, ``window_weak``: outputs of the input's first window cut from the
        waveform, features computed on that window alone (what a waveform-input file sees);
    ``whole_strong``   the whole input in one call, the recurrence never restarted (what a
        streaming file computes).

    With ``embedding``, (E,) vectors too: ``file_embedding`` (the windows' embeddings
    averaged and re-normalised, as ``sedweak embed`` and the runtime's per-file result),
    ``window_embedding`` (the first window alone) and ``whole_embedding`` (the whole input
    in one call). An embedding-only model gives the embeddings alone (no ``whole_embedding``:
    its files are whole-clip).
    """
    from sedweak.export.calibration import fit_waveform, fit_window
    from sedweak.export.graph import embedding_only
    from sedweak.features import logmel_librosa
    from sedweak.inference import predict_logmel

    logmel = logmel_librosa(waveform, info.features)
    window = logmel_librosa(fit_waveform(waveform, info), info.features)
    alone = model.predict_on_batch(fit_window(window, info)[np.newaxis])
    out = {}
    if not embedding_only(model):
        first = model.predict_on_batch(fit_window(logmel, info)[np.newaxis])
        whole = model.predict_on_batch(logmel[np.newaxis]) if len(logmel) >= info.time_pooling else None
        out = {"strong": predict_logmel(model, logmel, info), "weak": np.asarray(first["weak"])[0],
               "window_strong": np.asarray(alone["strong"])[0], "window_weak": np.asarray(alone["weak"])[0],
               "whole_strong": None if whole is None else np.asarray(whole["strong"])[0]}
        if embedding:
            out["whole_embedding"] = None if whole is None else np.asarray(whole["embedding"])[0]
    if embedding:
        from sedweak.embeddings.extract import embed_logmel, embedding_function

        out["file_embedding"] = embed_logmel(embedding_function(model), logmel, info)[0][0]
        out["window_embedding"] = np.asarray(alone["embedding"])[0]
    return out


def _device_outputs(detector, info: ModelInfo, waveform: np.ndarray) -> dict[str, np.ndarray]:
    """The file's outputs on one input, keyed like :func:`_keras_outputs`: every file gives
    ``strong`` (the whole input, windows stitched by the runtime); whole-clip and staged
    files also give the first window's outputs (``weak``, or ``window_*`` for waveform
    input). A file with an embedding gives its per-file result (``file_embedding``, or
    ``whole_embedding`` for a streaming file) and, for waveform input, ``window_embedding``.
    An embedding-only file gives no ``strong`` / ``weak`` keys."""
    from sedweak.export.calibration import fit_waveform, fit_window
    from sedweak.features import logmel_librosa

    probabilities, embedding = detector.stitched_outputs([waveform])
    if detector.streaming is not None:                              # no weak output
        out = {"whole_strong": probabilities}
        return out if embedding is None else {**out, "whole_embedding": embedding}
    out = {"strong": probabilities, "file_embedding": embedding}
    if detector.meta["input"]["kind"] == "waveform":
        window = detector.window_outputs(fit_waveform(waveform, info))
        out.update({f"window_{name}": np.asarray(value)[0] for name, value in window.items()})
    else:
        window = detector.window_outputs(fit_window(logmel_librosa(waveform, info.features), info))
        out["weak"] = np.asarray(window["weak"])[0] if "weak" in window else None
    return {key: value for key, value in out.items() if value is not None}


def reference_outputs(model, info: ModelInfo, inputs, embedding: bool = False) -> list[dict[str, np.ndarray]]:
    """The Keras model's outputs (:func:`_keras_outputs`) for each input; ``embedding``: with
    its clip embeddings (for files exported ``--with-embedding``)."""
    return [_keras_outputs(model, info, waveform, embedding) for _, waveform in inputs]


def _compared(detector) -> dict[str, str]:
    """output name -> the key of :func:`_keras_outputs` / :func:`_device_outputs` it is judged on.

    A waveform-input file computes each window's features from that window alone: its
    stitched track differs from whole-file features at window edges, so its parity is
    judged on one window (its stitched track is still run, for crashes). A streaming file
    never restarts its recurrence: compared with the model run over the whole input."""
    if detector.meta["input"]["kind"] == "waveform":
        return {"strong": "window_strong", "weak": "window_weak", "embedding": "window_embedding"}
    if detector.streaming is not None:
        return {"strong": "whole_strong", "embedding": "whole_embedding"}
    return {"strong": "strong", "weak": "weak", "embedding": "file_embedding"}


def _check_unit_norms(path, name: str, got: dict[str, np.ndarray]) -> None:
    """Every embedding of one input unit-norm, else :class:`ExportError` naming the file and input."""
    for key in (k for k in got if k.endswith("embedding")):
        norm = float(np.linalg.norm(got[key]))
        if abs(norm - 1.0) > UNIT_NORM_TOLERANCE:
            raise ExportError(f"{path}: the clip embedding ({key}) has norm {norm:.6g}, not 1, on the check "
                              f"input '{name}'")


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def run_checks(path: str | Path, info: ModelInfo, inputs, reference=None) -> Parity:
    """Every input through the device runtime; with ``reference`` (:func:`reference_outputs`
    of the same inputs), max |tflite - keras| per output (``strong`` over all frames,
    ``weak`` on the first window; streaming files have no weak output) and, for a file with
    an embedding, the min cosine similarity of its clip embeddings (reference made with
    ``embedding=True``). Bidirectional streaming files are an approximation: no parity.

    Raises:
        ExportError: an input crashed the interpreter or gave non-finite outputs, or an
            embedding that is not unit-norm.
    """
    from sedweak_runtime import Detector

    detector = Detector(path)
    exact = read_sidecar(path).get("streaming", {}).get("exact", True)
    pairs = _compared(detector)
    parity = Parity()
    for i, (name, waveform) in enumerate(inputs):
        try:
            got = _device_outputs(detector, info, waveform)
        except Exception as err:  # an interpreter abort surfaces as RuntimeError
            raise ExportError(f"{path}: crashed on the check input '{name}' ({len(waveform)} samples): "
                              f"{type(err).__name__}: {err}") from None
        if not all(np.all(np.isfinite(v)) for v in got.values()):
            raise ExportError(f"{path}: non-finite outputs on the check input '{name}'")
        _check_unit_norms(path, name, got)
        if reference is None or not exact:
            continue
        for output, key in pairs.items():
            if key not in got or reference[i].get(key) is None:
                continue
            expected = reference[i][key]
            if got[key].shape != expected.shape:
                raise ExportError(f"{path}: {output} output of shape {got[key].shape} on '{name}', the Keras "
                                  f"model gives {expected.shape}")
            if output == "embedding":
                parity.min_cosine[output] = min(parity.min_cosine.get(output, 1.0), _cosine(got[key], expected))
            else:
                worst = float(np.max(np.abs(got[key] - expected)))
                parity.max_abs_diff[output] = max(parity.max_abs_diff.get(output, 0.0), worst)
    return parity


def check_ops(path: str | Path) -> dict[str, int]:
    """Operator counts; raises :class:`ExportError` on non-builtin ops."""
    ops = tflite_ops(path)
    bad = tuple(name for name in ops if name.startswith("CUSTOM") or "FLEX" in name.upper())
    if bad:
        raise ExportError(f"{path}: non-builtin ops {list(bad)} (the device runtime has builtins only)")
    return ops


def check_tflite(path: str | Path, info: ModelInfo, model=None, bank_clips: int = 20) -> ExportCheck:
    """Ops, a smoke run of every check input and, given the Keras model, parity within
    :data:`TOLERANCES` (bidirectional streaming files are an approximation: no parity).

    Raises:
        ExportError: non-builtin ops, a crash, non-finite outputs, or a difference over
            the mode's tolerance.
    """
    ops = check_ops(path)
    inputs = check_inputs(info, bank_clips)
    meta = read_sidecar(path)
    reference = None if model is None else reference_outputs(model, info, inputs, "embedding" in meta)
    parity = run_checks(path, info, inputs, reference)
    mode = meta["mode"]
    tolerance, cosine_tolerance = TOLERANCES[mode], EMBEDDING_MIN_COSINE[mode]
    over = {k: v for k, v in parity.max_abs_diff.items() if v > tolerance}
    if over:
        raise ExportError(f"{path}: {mode} outputs differ from the Keras model by "
                          + ", ".join(f"{k} {v:.3g}" for k, v in over.items())
                          + f" (tolerance {tolerance:g}) on the check inputs")
    low = {k: v for k, v in parity.min_cosine.items() if v < cosine_tolerance}
    if low:
        raise ExportError(f"{path}: {mode} clip embedding is off the Keras model's: min cosine similarity "
                          + ", ".join(f"{v:.6f}" for v in low.values())
                          + f" (tolerance >= {cosine_tolerance:g}) on the check inputs")
    return ExportCheck(str(path), Path(path).stat().st_size, ops, parity.max_abs_diff, tuple(n for n, _ in inputs),
                       tolerance if parity.max_abs_diff else None, parity.min_cosine,
                       cosine_tolerance if parity.min_cosine else None)
