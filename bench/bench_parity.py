"""F1 parity of every export mode with the Keras model on a run's eval split (used by bench_export.py).

    python bench/bench_export.py --model RUN/model.keras --data RUN/config.yaml --chunks 20,100

Every row sees the run's cached librosa log-mels, so only the model differs (waveform
rows see the clip's audio and their in-graph front end). Offline modes run the
whole-clip file once per clip (weak = its weak output); staged modes run the device
runtime's ``StagedModel`` (conv, GRU chunks, head; weak = the head's); streaming modes
run the chunk step over the clip (weak = the model's pooling applied to the streamed
strong track, max / mean / linear_softmax; tags from events for attention pooling).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_export import STREAM_VARIANTS, _runtime, _stream_export


def weak_from_strong(strong: np.ndarray, pooling: str) -> np.ndarray | None:
    """(frames, K) -> (K,) as sedweak.models.layers.WeakPooling; None for attention."""
    if pooling == "max":
        return strong.max(axis=0)
    if pooling == "mean":
        return strong.mean(axis=0)
    if pooling == "linear_softmax":
        return (strong ** 2).sum(axis=0) / np.maximum(strong.sum(axis=0), 1e-7)
    return None


def _score(info, clips, eval_config, strong: dict, weak: dict) -> dict:
    from sedweak.evaluation import score_events
    from sedweak.postprocessing import probabilities_to_events

    thresholds = np.asarray(info.postprocess.thresholds_for(info.classes))
    reference = clips.strong_reference
    events = {n: probabilities_to_events(strong[n], info.classes, info.model_frames_per_second, n, info.postprocess)
              for n in reference}
    tags = None
    if all(weak.get(n) is not None for n in reference):
        tags = {n: [c for c, p, t in zip(info.classes, weak[n], thresholds) if p > t] for n in reference}
    scores = score_events(reference, events, list(info.classes), eval_config, estimated_tags=tags)
    return {k: round(100 * scores[f"{k}.f1"], 2) for k in ("tagging", "segment", "event")}


def _outputs(kind: str, path: Path | None, model, features, waveforms: dict) -> tuple[dict, dict, float]:
    """strong / weak per clip and the median ms per clip, for Keras, an offline, a staged or a streaming file."""
    strong, weak, times = {}, {}, []
    if kind == "offline":
        from sedweak.export import run_tflite
    detector = _runtime().Detector(path, num_threads=1) if kind in ("stream", "staged") else None
    wave_input = detector is not None and detector.meta["input"]["kind"] == "waveform"
    pooling = next((layer.mode for layer in model.layers if layer.name == "weak"), "max")
    for name, logmel in zip(features.filenames, features.features):
        logmel = np.asarray(logmel, np.float32)
        x = waveforms[name][np.newaxis] if wave_input else logmel[np.newaxis]
        start = time.perf_counter()
        if kind == "keras":
            out = model.predict_on_batch(logmel[np.newaxis])
        elif kind == "offline":
            out = run_tflite(path, logmel[np.newaxis])
        elif kind == "staged":
            out = detector.staged(x)
        else:
            out = {"strong": detector.streaming.push(logmel, final=True)[np.newaxis]}
        times.append(time.perf_counter() - start)
        strong[name] = np.asarray(out["strong"])[0]
        weak[name] = np.asarray(out["weak"])[0] if "weak" in out else weak_from_strong(strong[name], pooling)
    return strong, weak, 1000 * float(np.median(times))


STAGED_VARIANTS = (("float32", False, False), ("dynamic", False, False), ("int8", False, False),
                   ("int8", True, False), ("int8", False, True))        # (mode, full_integer, waveform_input)


def _variants(model, info, workdir: Path, chunks, calibration, lookaheads=(0,), gru_steps=(), waveforms=()):
    from sedweak.export import export_tflite
    from sedweak.export.staged import export_staged

    yield "keras", "-", None
    for mode in ("float32", "float16", "dynamic"):
        yield "offline", mode, export_tflite(model, info, workdir / f"o_{mode}.tflite", mode)
    for steps in gru_steps:
        for mode, full, wave in STAGED_VARIANTS:
            label = f"staged {mode}{' full-int' if full else ''}{' waveform-in' if wave else ''} ({steps} steps)"
            clips = None if mode != "int8" else (waveforms if wave else calibration)
            yield "staged", label, export_staged(model, info, workdir / f"g{steps}_{mode}{int(full)}{int(wave)}.tflite",
                                                 mode, steps, clips, full, waveform_input=wave)
    for chunk in chunks:
        for ahead in lookaheads:
            for mode, full in STREAM_VARIANTS:
                label = f"stream {mode}{' full-int' if full else ''} ({chunk} fr, +{ahead} ahead)"
                yield "stream", label, _stream_export(model, info, workdir / f"s{chunk}_{ahead}_{mode}{int(full)}.tflite",
                                                      chunk, mode, full, calibration, ahead)


def parity(model_path: str, config_path: str, chunks, runs: int, lookaheads=(0,), gru_steps=()) -> dict:
    from sedweak.models.saving import load_model
    from sedweak.audio import load_audio
    from sedweak.config import load_config
    from sedweak.datasets.prepare import prepare_data
    from sedweak.export.calibration import calibration_logmels, calibration_waveforms, fit_waveform

    model, info = load_model(model_path)
    config = load_config(config_path)
    data = prepare_data(config, Path(config_path).parent, splits=("eval",), progress=False)
    clips, features = data.clips["eval"], data.features["eval"].load()
    calibration = calibration_logmels(config_path, info)
    calibration_audio = calibration_waveforms(config_path, info) if gru_steps else []
    waveforms = ({name: fit_waveform(load_audio(path, info.features.sample_rate_hz), info)
                  for name, path in zip(clips.filenames, clips.audio_paths)} if gru_steps else {})
    rows, keras_strong = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for kind, mode, path in _variants(model, info, Path(tmp), chunks, calibration, lookaheads, gru_steps,
                                          calibration_audio):
            strong, weak, ms = _outputs(kind, path, model, features, waveforms)
            keras_strong = keras_strong or strong
            diff = max(float(np.abs(strong[n] - keras_strong[n]).max()) for n in strong)
            rows.append({"mode": mode, "size_bytes": path.stat().st_size if path else os.path.getsize(model_path),
                         **_score(info, clips, config.evaluation, strong, weak), "max_abs_diff_strong": diff,
                         "ms_per_clip": round(ms, 2), "real_time_factor": round(ms / 1000 / info.clip_seconds, 5)})
            print(f"parity {mode}: done", flush=True)
    return {"model": str(model_path), "eval_clips": len(features.filenames), "clip_seconds": info.clip_seconds,
            "load_average_1min": os.getloadavg()[0], "cpu_count": os.cpu_count(), "rows": rows}


def parity_table(record: dict) -> str:
    title = (f"\n{record['model']}: {record['eval_clips']} eval clips of {record['clip_seconds']} s, "
             f"1 thread, load {record['load_average_1min']:.2f} on {record['cpu_count']} cores\n")
    lines = [title,
             "| mode | file KB | tagging F1 | segment F1 | event F1 | max diff strong | ms per clip | RTF |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['mode']} | {r['size_bytes'] / 1024:.0f} | {r['tagging']:.2f} | {r['segment']:.2f} | "
              f"{r['event']:.2f} | {r['max_abs_diff_strong']:.1e} | {r['ms_per_clip']:.1f} | {r['real_time_factor']:.4f} |"
              for r in record["rows"]]
    return "\n".join(lines)
