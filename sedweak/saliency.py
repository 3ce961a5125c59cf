"""Saliency maps: which log-mel bins drive one class's strong and weak outputs.

Adavanne & Virtanen show, for one recording, the gradient of the strong output and the
gradient of the weak output with respect to the log-mel input. For a class C:

* strong target ``sum_t strong[t, C]`` over the model frames ``strong_frames`` (the
  frames of the detected events of C), or over every frame when none are given;
* weak target ``weak[C]``.

Methods, each giving ``(frames, n_mels)`` maps:

* ``gradient``: d target / d log-mel (probability per dB).
* ``smoothgrad``: the mean gradient over ``samples`` noisy copies of the input; noise
  standard deviation = ``noise_fraction`` x the clip's log-mel range (max - min, dB),
  seeded (Smilkov et al. 2017).
* ``integrated-gradients``: ``(x - b) *`` the mean gradient at ``steps`` points on the
  straight path from the baseline ``b`` to ``x`` (midpoint Riemann sum; Sundararajan et
  al. 2017). ``b`` is the silence floor ``10 log10(amin_power)`` dB (-100 dB), the
  log-mel of a digital-silence clip, so the attributions explain the output relative to
  silence and sum to about ``f(x) - f(b)`` (completeness), in probability units.

``maps["strong"]`` / ``maps["weak"]`` are absolute values (how much a bin matters,
whichever way); ``maps["strong_signed"]`` / ``maps["weak_signed"]`` keep the sign
(positive: more energy in that bin raises the output).

The compiled gradient function (:func:`_tf_gradient_function`) is the only
TensorFlow-specific piece; everything else is numpy.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from sedweak.audio import AudioError
from sedweak.labels import Event, LabelError

METHODS = ("gradient", "smoothgrad", "integrated-gradients")
EVENT_FRAMES = ("detected", "all")
MAP_KEYS = ("strong", "weak", "strong_signed", "weak_signed")

# One compiled gradient function per model object (tracing costs seconds; calls ~0.1 s).
_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class SaliencyOptions:
    """Method parameters. ``samples``: SmoothGrad copies; ``noise_fraction``: SmoothGrad
    noise sd as a fraction of the input's dB range; ``steps``: integrated-gradients path
    points; ``batch_size``: copies per compiled call; ``seed``: SmoothGrad noise."""

    samples: int = 16
    noise_fraction: float = 0.1
    steps: int = 32
    batch_size: int = 16
    seed: int = 0


@dataclass(frozen=True)
class FileSaliency:
    """Saliency of one audio file for one class.

    ``maps``: MAP_KEYS -> (clip_frames, n_mels) float32; ``logmel``: (clip_frames,
    n_mels) dB, the model's input; ``events``: detected events of the class;
    ``strong_frames``: bool (model_frames,), the frames whose strong output was summed.
    """

    path: Path
    class_name: str
    method: str
    maps: dict
    logmel: np.ndarray
    events: list
    strong_frames: np.ndarray


def _tf_gradient_function(model):
    """Compiled ``(x (B, T, F), class_index, frame_mask (T',)) -> (d strong / dx, d weak / dx,
    strong target (B,), weak target (B,))``, traced once per model (fixed signature)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise NotImplementedError(f"saliency needs the TensorFlow backend, not {keras.backend.backend()!r}")
    import tensorflow as tf

    frames, n_mels = model.input_shape[1], model.input_shape[2]
    model_ref = weakref.ref(model)  # a strong reference here would pin the cache key forever

    @tf.function(input_signature=[tf.TensorSpec((None, frames, n_mels), tf.float32),
                                  tf.TensorSpec((), tf.int32), tf.TensorSpec((None,), tf.float32)])
    def gradients(x, class_index, frame_mask):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            outputs = model_ref()(x, training=False)
            strong = tf.reduce_sum(outputs["strong"][:, :, class_index] * frame_mask[tf.newaxis, :], axis=1)
            weak = outputs["weak"][:, class_index]
        # Copies in a batch do not interact (training=False), so the gradient of the batch
        # sum is each copy's own gradient.
        return tape.gradient(strong, x), tape.gradient(weak, x), strong, weak

    return gradients


def _gradient_function(model):
    if model not in _COMPILED:
        _COMPILED[model] = _tf_gradient_function(model)
    return _COMPILED[model]


def strong_output_shape(model, frames: int) -> tuple[int, int]:
    """(model frames, classes) of the strong output for ``frames`` feature frames (symbolic)."""
    import keras

    spec = model.compute_output_spec(keras.KerasTensor((1, frames, model.input_shape[2])))
    return int(spec["strong"].shape[1]), int(spec["strong"].shape[2])


def conv_receptive_field_frames(model) -> int:
    """Receptive field over time of the model's conv stack, in feature frames.

    Each ``ConvBlock`` adds ``(kernel - 1) * jump`` then ``(pool_time - 1) * jump``.
    The tiny test CRNN (kernel 3, time pools 2, 2, 1) sees 18 frames (0.18 s at 100 fps).
    The GRU that follows sees the whole clip, so this is where saliency *should* stay.
    """
    field, jump = 1, 1
    for layer in model.layers:
        if hasattr(layer, "kernel_size") and hasattr(layer, "pool_time"):
            field += (layer.kernel_size - 1) * jump
            field += (layer.pool_time - 1) * jump
            jump *= layer.pool_time
    return field


def frame_mask(strong_frames, num_model_frames: int) -> np.ndarray:
    """``None`` (all frames), a slice, or a bool mask -> bool (num_model_frames,)."""
    if strong_frames is None:
        return np.ones(num_model_frames, bool)
    if isinstance(strong_frames, slice):
        mask = np.zeros(num_model_frames, bool)
        mask[strong_frames] = True
        return mask
    mask = np.asarray(strong_frames, bool)
    if mask.shape != (num_model_frames,):
        raise ValueError(f"strong_frames mask must have shape ({num_model_frames},), got {mask.shape}")
    return mask


def event_frame_mask(events: Sequence[Event], num_model_frames: int, frames_per_second: float) -> np.ndarray:
    """bool (num_model_frames,): frames ``[i / r, (i + 1) / r)`` overlapping any event."""
    mask = np.zeros(num_model_frames, bool)
    for event in events:
        first = int(np.floor(event.onset_seconds * frames_per_second + 1e-6))
        stop = int(np.ceil(event.offset_seconds * frames_per_second - 1e-6))
        mask[max(0, first):max(0, min(stop, num_model_frames))] = True
    return mask


def _mean_gradients(gradients, copies: np.ndarray, class_index: int, mask: np.ndarray,
                    batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (strong, weak) gradient over ``copies`` (N, T, F), ``batch_size`` per call."""
    strong_sum = np.zeros(copies.shape[1:], np.float64)
    weak_sum = np.zeros(copies.shape[1:], np.float64)
    mask = mask.astype(np.float32)
    for start in range(0, len(copies), batch_size):
        batch = np.ascontiguousarray(copies[start:start + batch_size], np.float32)
        d_strong, d_weak, _, _ = gradients(batch, np.int32(class_index), mask)
        strong_sum += np.asarray(d_strong, np.float64).sum(axis=0)
        weak_sum += np.asarray(d_weak, np.float64).sum(axis=0)
    return strong_sum / len(copies), weak_sum / len(copies)


def method_inputs(logmel: np.ndarray, method: str, options: SaliencyOptions,
                  baseline_db: float) -> np.ndarray:
    """The (copies, frames, n_mels) inputs whose gradients a method averages."""
    if method == "gradient":
        return logmel[np.newaxis]
    if method == "smoothgrad":
        sd_db = options.noise_fraction * float(logmel.max() - logmel.min())
        noise = np.random.default_rng(options.seed).normal(0.0, 1.0, (options.samples,) + logmel.shape)
        return (logmel[np.newaxis] + sd_db * noise).astype(np.float32)
    if method == "integrated-gradients":
        alphas = (np.arange(options.steps) + 0.5) / options.steps  # midpoints of M equal steps
        path = baseline_db + alphas[:, None, None] * (logmel[np.newaxis] - baseline_db)
        return path.astype(np.float32)
    raise ValueError(f"unknown saliency method {method!r}; choose from {', '.join(METHODS)}")


def saliency_maps(model, logmel: np.ndarray, class_index: int, method: str = "gradient",
                  strong_frames=None, options: SaliencyOptions = SaliencyOptions(),
                  baseline_db: float = -100.0) -> dict:
    """Saliency of class ``class_index`` for one clip.

    Args:
        model: a sedweak CRNN (or any Keras model with the same contract) on the TF backend.
        logmel: (frames, n_mels) dB, already fitted to the model's clip length.
        class_index: column of the class in the model's outputs.
        method: one of METHODS.
        strong_frames: model frames whose strong output is summed: None (all), a slice or
            a bool mask of shape (frames // time_pooling,).
        baseline_db: integrated-gradients baseline (the silence floor
            ``10 * log10(amin_power)``, -100 dB for the default front end).

    Returns:
        MAP_KEYS -> (frames, n_mels) float32 (absolute and signed; see the module doc).
    """
    logmel = np.asarray(logmel, np.float32)
    expected = model.input_shape[1:]
    if logmel.ndim != 2 or any(e is not None and e != s for e, s in zip(expected, logmel.shape)):
        raise ValueError(f"logmel must have shape {expected} (frames, n_mels), got {logmel.shape}")
    model_frames, num_classes = strong_output_shape(model, logmel.shape[0])
    if not 0 <= class_index < num_classes:
        raise ValueError(f"class_index {class_index} out of range for {num_classes} classes")
    mask = frame_mask(strong_frames, model_frames)
    copies = method_inputs(logmel, method, options, baseline_db)
    strong, weak = _mean_gradients(_gradient_function(model), copies, class_index, mask, options.batch_size)
    if method == "integrated-gradients":
        strong, weak = strong * (logmel - baseline_db), weak * (logmel - baseline_db)
    strong, weak = strong.astype(np.float32), weak.astype(np.float32)
    return {"strong": np.abs(strong), "weak": np.abs(weak), "strong_signed": strong, "weak_signed": weak}


def class_index(classes: Sequence[str], class_name: str) -> int:
    """Position of ``class_name`` in ``classes``; an unknown name lists the known ones."""
    if class_name not in classes:
        raise LabelError(f"unknown class {class_name!r}; the model knows: {', '.join(classes)}")
    return list(classes).index(class_name)


def saliency_for_file(model, info, audio_path: str | Path, class_name: str, method: str = "gradient",
                      event_frames: str = "detected", options: SaliencyOptions = SaliencyOptions()
                      ) -> FileSaliency:
    """Load, fit to the clip length (zero-pad / cut, as in training), detect, explain.

    ``event_frames="detected"`` sums the strong output over the frames of the detected
    events of the class (all frames when none is detected); ``"all"`` over every frame.
    Raises AudioError for an unusable file, ValueError for an unknown class or option.
    """
    from sedweak.audio import fit_length, load_audio
    from sedweak.features import logmel_librosa
    from sedweak.inference import predict_logmel
    from sedweak.postprocessing import probabilities_to_events

    index = class_index(info.classes, class_name)
    if event_frames not in EVENT_FRAMES:
        raise ValueError(f"event_frames must be one of {EVENT_FRAMES}, got {event_frames!r}")
    path = Path(audio_path)
    clip_samples = int(round(info.clip_seconds * info.features.sample_rate_hz))
    waveform = fit_length(load_audio(path, info.features.sample_rate_hz), clip_samples)
    logmel = logmel_librosa(waveform, info.features)  # (clip_frames, n_mels)
    probs = predict_logmel(model, logmel, info)  # (model_frames, classes)
    events = [e for e in probabilities_to_events(probs, info.classes, info.model_frames_per_second,
                                                 path.name, info.postprocess) if e.label == class_name]
    mask = event_frame_mask(events, probs.shape[0], info.model_frames_per_second)
    if event_frames == "all" or not mask.any():
        mask = np.ones(probs.shape[0], bool)
    maps = saliency_maps(model, logmel, index, method, mask, options,
                         baseline_db=10.0 * np.log10(info.features.amin_power))
    return FileSaliency(path, class_name, method, maps, logmel, events, mask)


def _draw_map(ax, image: np.ndarray, seconds: float, title: str) -> None:
    vmax = float(np.percentile(image, 99.5)) or float(image.max()) or 1.0  # one hot bin must not hide the rest
    ax.imshow(image.T, origin="lower", aspect="auto", extent=(0, seconds, 0, image.shape[1]),
              cmap="inferno", vmin=0.0, vmax=vmax)
    ax.set_ylabel("mel band")
    ax.set_title(f"{title} (max {image.max():.2g})", fontsize=9)


def plot_saliency(path: str | Path, logmel: np.ndarray, maps: dict, events: Sequence[Event], info,
                  class_name: str, method: str, reference: Sequence[Event] | None = None,
                  strong_frames: np.ndarray | None = None) -> Path:
    """PNG, 4 rows on one time axis (s): log-mel (frames, n_mels), |strong| and |weak|
    saliency (frames, n_mels), and the event roll of ``class_name`` (detected events,
    and ``reference`` events when given). ``strong_frames`` (bool, model frames) marks
    the span the strong output was summed over."""
    from sedweak.plots import new_figure, save_png

    seconds = logmel.shape[0] / info.features.frames_per_second
    fig = new_figure(figsize=(11, 8))
    axes = fig.subplots(4, 1, sharex=True, gridspec_kw={"height_ratios": [2, 2, 2, 0.9]})
    axes[0].imshow(logmel.T, origin="lower", aspect="auto", extent=(0, seconds, 0, logmel.shape[1]), cmap="magma")
    axes[0].set_ylabel("mel band")
    axes[0].set_title(f"log-mel (dB) -- saliency of {class_name!r}, {method}", fontsize=9)
    what = {"gradient": "|d {} / d log-mel|", "smoothgrad": "|mean d {} / d log-mel| over noisy copies",
            "integrated-gradients": "|integrated gradients of {}| from silence"}[method]
    _draw_map(axes[1], maps["strong"], seconds, what.format("strong") + ", strong summed over the marked frames")
    _draw_map(axes[2], maps["weak"], seconds, what.format("weak"))
    if strong_frames is not None and not strong_frames.all():
        for e in _runs(strong_frames, info.model_frames_per_second):
            axes[1].axvspan(e[0], e[1], fill=False, edgecolor="cyan", linestyle="--", linewidth=1.0)
    lanes = {"detected": events, **({"reference": reference} if reference is not None else {})}
    for row, (name, lane) in enumerate(lanes.items()):
        for e in lane:
            axes[3].barh(row, e.offset_seconds - e.onset_seconds, left=e.onset_seconds, height=0.6, color=f"C{row}")
    axes[3].set_yticks(range(len(lanes)), list(lanes), fontsize=8)
    axes[3].set_ylim(-0.5, len(lanes) - 0.5)
    axes[3].set_ylabel(class_name)
    axes[3].grid(axis="x", alpha=0.3)
    axes[3].set_xlabel("time (s)")
    axes[3].set_xlim(0, seconds)
    fig.tight_layout()
    return save_png(fig, path, dpi=100)


def _runs(mask: np.ndarray, frames_per_second: float) -> list[tuple[float, float]]:
    """(start, end) seconds of each run of True in a bool (frames,) mask."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(a / frames_per_second, b / frames_per_second) for a, b in zip(edges[::2], edges[1::2])]


def save_saliency(out_dir: str | Path, result: FileSaliency, info, reference: Sequence[Event] | None = None
                  ) -> tuple[Path, Path]:
    """Write ``<stem>.<class>.<method>.png`` and ``.npz`` (maps, logmel, strong_frames, rates)."""
    from sedweak.io_utils import atomic_path

    stem = re.sub(r"[^\w.-]+", "_", f"{result.path.stem}.{result.class_name}.{result.method}")
    png = plot_saliency(Path(out_dir) / f"{stem}.png", result.logmel, result.maps, result.events, info,
                        result.class_name, result.method, reference, result.strong_frames)
    npz = Path(out_dir) / f"{stem}.npz"
    with atomic_path(npz) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **result.maps, logmel=result.logmel, strong_frames=result.strong_frames,
                            frames_per_second=info.features.frames_per_second,
                            model_frames_per_second=info.model_frames_per_second,
                            events_seconds=np.array([[e.onset_seconds, e.offset_seconds] for e in result.events],
                                                    np.float64).reshape(-1, 2),
                            class_name=result.class_name, method=result.method)
    return png, npz


def saliency_for_files(model, info, paths: Sequence[str | Path], class_name: str, out_dir: str | Path,
                       method: str = "gradient", event_frames: str = "detected",
                       options: SaliencyOptions = SaliencyOptions(),
                       reference: dict | None = None) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """Batch mode: a PNG + NPZ per file. Returns (written (png, npz) pairs, failures as
    (path, reason)); an unusable audio file is skipped, not fatal. ``reference``: events
    by file name (DESED strong TSV as read by ``sedweak.labels.read_strong_tsv``)."""
    class_index(info.classes, class_name)  # fail before the first file
    if method not in METHODS:
        raise ValueError(f"unknown saliency method {method!r}; choose from {', '.join(METHODS)}")
    written, failed = [], []
    for path in map(Path, paths):
        try:
            result = saliency_for_file(model, info, path, class_name, method, event_frames, options)
            ref = None if reference is None else [e for e in reference.get(path.name, []) if e.label == class_name]
            written.append(save_saliency(out_dir, result, info, ref))
        except AudioError as err:
            failed.append((str(path), str(err)))
        except Exception as err:  # one clip never ends a batch: reported, the rest go on
            failed.append((str(path), f"{type(err).__name__}: {err}"))
    return written, failed
