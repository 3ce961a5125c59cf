"""TFLite export: file size, parity with Keras and 1-thread latency per 10 s clip.

    python bench/bench_export.py                       # fast + adavanne, random init, 10 classes
    python bench/bench_export.py --model run/model.keras --runs 20

For each model and mode (float32, float16, dynamic on log-mel input; float32 and
float16 on waveform input with the in-graph front end) the script exports through
``sedweak.export``, measures max |tflite - keras| on 3 clips (noise, sine, chirp),
and times ``Interpreter(num_threads=1)`` signature calls on one clip (median of
``--runs`` after 2 warm-ups). Log-mel rows add the numpy front end of
``export/sedweak_runtime.py`` (timed once per script) to the real-time factor.
Streaming rows (``--chunks``): the ``sedweak export --streaming`` step in float32, int8
and int8 full-integer, run over a whole clip by the runtime's ``StreamingModel``
(latency = all chunk calls of one 10 s clip, Python included); max diff against the
Keras model's offline strong output (bidirectional presets: the backward GRU restarts
per chunk, so this is the approximation's error, not conversion noise).

Parity (``--model RUN/model.keras --data RUN/config.yaml``): tagging / segment / event F1
on the run's eval split (cached librosa features for every row, so only the model
differs) for Keras and every mode, plus max |strong - keras| over the split.
Prints Markdown tables and writes ``bench/results/export.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import versions, write_record  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = ROOT / "bench" / "results" / "export.json"
VARIANTS = (("float32", False), ("float16", False), ("dynamic", False), ("float32", True), ("float16", True))
STAGED_VARIANTS = (("float32", False), ("dynamic", False), ("int8", False), ("int8", True))  # (mode, waveform_input)
STREAM_VARIANTS = (("float32", False), ("int8", False), ("int8", True), ("int16x8", False))  # (mode, full_integer)


def _runtime():
    """The device runtime package (export/sedweak_runtime/)."""
    import sedweak_runtime

    return sedweak_runtime


def _models(presets: list[str], model_path: str | None, num_classes: int):
    """Yields (name, keras model, ModelInfo): random-init presets on 10 s clips, or a trained file."""
    import keras

    from sedweak.models.saving import ModelInfo, load_model
    from sedweak.config import FeatureConfig, PostprocessConfig
    from sedweak.models.crnn import build_crnn
    from sedweak.config import get_preset

    if model_path:
        model, info = load_model(model_path)
        yield Path(model_path).name, model, info
    for preset in presets:
        config = get_preset(preset)
        info = ModelInfo(tuple(f"class_{i}" for i in range(num_classes)), FeatureConfig(), PostprocessConfig(),
                         int(np.prod(config.conv_pool_time)), 10.0)
        keras.utils.set_random_seed(0)                 # the same random weights on every run
        yield preset, build_crnn(config, num_classes), info


def _latency_ms(path: Path, x: np.ndarray, runs: int) -> float:
    """Median ms of one signature call on ``x`` with 1 interpreter thread."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path), num_threads=1).get_signature_runner("serve")
    (name,) = runner.get_input_details()
    times = []
    for i in range(runs + 2):
        start = time.perf_counter()
        runner(**{name: x})
        if i >= 2:
            times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def _front_end_ms(info, runs: int) -> float:
    """Median ms of the numpy runtime log-mel of one clip."""
    rt, clip = _runtime(), np.random.default_rng(0).standard_normal(int(info.clip_seconds * 16000)) * 0.1
    spec = {k: getattr(info.features, k) for k in ("sample_rate_hz", "window_samples", "hop_samples", "n_fft",
                                                   "n_mels", "mel_min_hz", "mel_max_hz", "amin_power")}
    rt.logmel(clip.astype(np.float32), spec)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        rt.logmel(clip.astype(np.float32), spec)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def _row(name, model, info, mode, waveform, runs, front_ms, workdir) -> dict:
    from sedweak.export import buffer_sizes, check_tflite, export_tflite
    from sedweak.export.sidecar import input_shape

    path = export_tflite(model, info, Path(workdir) / f"{name}_{mode}_{int(waveform)}.tflite", mode, waveform)
    report = check_tflite(path, info, model, bank_clips=3)
    clips = check_clips(info, 1)
    x = clips if waveform else _runtime_logmel(clips[0], info)[np.newaxis]
    assert x.shape == input_shape(info, waveform)
    latency = _latency_ms(path, x.astype(np.float32), runs)
    total_ms = latency + (0.0 if waveform else front_ms)
    weights = int(sum(np.prod(w.shape) for w in model.weights))
    return {"model": name, "mode": mode, "input": "waveform" if waveform else "logmel", "weights": weights,
            "size_bytes": report.size_bytes, "max_abs_diff": report.max_abs_diff,
            "latency_ms": round(latency, 2), "front_end_ms": 0.0 if waveform else round(front_ms, 2),
            "real_time_factor": round(total_ms / 1000 / info.clip_seconds, 5), "clip_seconds": info.clip_seconds,
            "largest_buffers": [list(r) for r in buffer_sizes(path, top=6)]}


def check_clips(info, count: int = 3, seed: int = 0) -> np.ndarray:
    """Probe waveforms (count, clip_samples): seeded noise, a 440 Hz sine + noise, a chirp."""
    rng = np.random.default_rng(seed)
    samples, rate = int(round(info.clip_seconds * info.features.sample_rate_hz)), info.features.sample_rate_hz
    t = np.arange(samples) / rate
    clips = [0.1 * rng.standard_normal(samples),
             0.5 * np.sin(2 * np.pi * 440.0 * t) + 0.01 * rng.standard_normal(samples),
             0.3 * np.sin(2 * np.pi * (200.0 + 400.0 * t) * t) * (t > t[-1] / 2)]
    return np.stack([clips[i % len(clips)] for i in range(count)]).astype(np.float32)


def _runtime_logmel(waveform, info):
    spec = {k: getattr(info.features, k) for k in ("sample_rate_hz", "window_samples", "hop_samples", "n_fft",
                                                   "n_mels", "mel_min_hz", "mel_max_hz", "amin_power")}
    return _runtime().logmel(waveform, spec)


def _stream_export(model, info, path, chunk, mode, full_integer, calibration, lookahead=0):
    from sedweak.export.streaming import export_streaming

    return export_streaming(model, info, path, chunk, mode, calibration if mode.startswith("int") else None, full_integer,
                            lookahead=lookahead)


def _stream_latency_ms(path: Path, logmel: np.ndarray, runs: int) -> tuple[np.ndarray, float]:
    """(strong of the whole clip, median ms to stream it) with 1 interpreter thread."""
    detector = _runtime().Detector(path, num_threads=1)
    strong, times = None, []
    for i in range(runs + 1):
        start = time.perf_counter()
        strong = detector.streaming.push(logmel, final=True)
        if i >= 1:
            times.append(time.perf_counter() - start)
    return strong, 1000 * float(np.median(times))


def _stream_rows(name, model, info, chunks, runs, workdir) -> list[dict]:

    clips = [_runtime_logmel(c, info) for c in check_clips(info, 4, seed=1)]
    logmel = _runtime_logmel(check_clips(info, 1)[0], info)
    keras_strong = np.asarray(model.predict_on_batch(logmel[np.newaxis])["strong"])[0]
    rows = []
    for chunk in chunks:
        for mode, full in STREAM_VARIANTS:
            path = _stream_export(model, info, Path(workdir) / f"{name}_s{chunk}_{mode}{int(full)}.tflite",
                                  chunk, mode, full, clips)
            strong, latency = _stream_latency_ms(path, logmel, runs)
            rows.append({"model": name, "mode": f"stream {mode}{' full-int' if full else ''}", "chunk_frames": chunk,
                         "size_bytes": path.stat().st_size, "max_abs_diff_strong": float(np.abs(strong - keras_strong).max()),
                         "latency_ms": round(latency, 2), "real_time_factor": round(latency / 1000 / info.clip_seconds, 5)})
            print(f"{name} stream {mode} full={full} chunk {chunk}: done", flush=True)
    return rows


def _staged_rows(name, model, info, gru_steps, runs, front_ms, workdir) -> list[dict]:
    """Staged files (conv, GRU chunks, head) run by the runtime's ``StagedModel`` on one clip."""
    from sedweak.export.staged import export_staged

    clips = check_clips(info, 4, seed=1)
    logmel = _runtime_logmel(check_clips(info, 1)[0], info)[np.newaxis]
    keras_strong = np.asarray(model.predict_on_batch(logmel)["strong"])
    rows = []
    for steps in gru_steps:
        for mode, wave in STAGED_VARIANTS:
            calibration = None if mode != "int8" else (list(clips) if wave else [_runtime_logmel(c, info) for c in clips])
            path = export_staged(model, info, Path(workdir) / f"{name}_g{steps}_{mode}{int(wave)}.tflite", mode, steps,
                                 calibration, waveform_input=wave)
            staged = _runtime().Detector(path, num_threads=1).staged
            x = check_clips(info, 1)[:1] if wave else logmel
            times = []
            for i in range(runs + 2):
                start = time.perf_counter()
                strong = staged(x)["strong"]
                if i >= 2:
                    times.append(time.perf_counter() - start)
            latency = 1000 * float(np.median(times))
            total = latency + (0.0 if wave else front_ms)
            rows.append({"model": name, "mode": f"staged {mode}{' waveform-in' if wave else ''}", "gru_steps": steps,
                         "size_bytes": path.stat().st_size, "max_abs_diff_strong": float(np.abs(strong - keras_strong).max()),
                         "latency_ms": round(latency, 2), "front_end_ms": 0.0 if wave else round(front_ms, 2),
                         "real_time_factor": round(total / 1000 / info.clip_seconds, 5)})
            print(f"{name} staged {mode} wave={wave} steps {steps}: done", flush=True)
    return rows


def run(presets: list[str], model_path: str | None, runs: int, num_classes: int, chunks=(20,), gru_steps=(10,),
        offline: bool = True) -> dict:
    rows, stream_rows, staged_rows = [], [], []
    with tempfile.TemporaryDirectory() as workdir:
        for name, model, info in _models(presets, model_path, num_classes):
            front_ms = _front_end_ms(info, runs)
            for mode, waveform in VARIANTS if offline else ():
                rows.append(_row(name, model, info, mode, waveform, runs, front_ms, workdir))
                print(f"{name} {mode} {'waveform' if waveform else 'logmel'}: done", flush=True)
            staged_rows += _staged_rows(name, model, info, gru_steps, runs, front_ms, workdir)
            stream_rows += _stream_rows(name, model, info, [c for c in chunks if c % info.time_pooling == 0],
                                        runs, workdir)
    return {"cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
            "load_average_1min": os.getloadavg()[0], "runs": runs, "versions": versions(), "results": rows,
            "staged": staged_rows, "streaming": stream_rows}


def markdown_table(record: dict) -> str:
    lines = ["| model | mode | input | weights | file KB | max diff strong / weak | tflite ms | front end ms | RTF |",
             "|---|---|---|---:|---:|---|---:|---:|---:|"]
    for r in record["results"]:
        diff = r["max_abs_diff"]
        lines.append(f"| {r['model']} | {r['mode']} | {r['input']} | {r['weights']:,} | {r['size_bytes'] / 1024:.0f} | "
                     f"{diff['strong']:.1e} / {diff['weak']:.1e} | {r['latency_ms']:.1f} | "
                     f"{r['front_end_ms']:.1f} | {r['real_time_factor']:.4f} |")
    lines += ["", "| model | staged mode | GRU steps per call | file KB | max diff strong | tflite ms | front end ms | RTF |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['mode']} | {r['gru_steps']} | {r['size_bytes'] / 1024:.0f} | "
              f"{r['max_abs_diff_strong']:.1e} | {r['latency_ms']:.1f} | {r['front_end_ms']:.1f} | {r['real_time_factor']:.4f} |"
              for r in record.get("staged", [])]
    lines += ["", "| model | streaming mode | chunk frames | file KB | max diff strong | ms per 10 s clip | RTF |",
              "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['mode']} | {r['chunk_frames']} | {r['size_bytes'] / 1024:.0f} | "
              f"{r['max_abs_diff_strong']:.1e} | {r['latency_ms']:.1f} | {r['real_time_factor']:.4f} |"
              for r in record.get("streaming", [])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="fast,adavanne", help="comma-separated presets (random init)")
    parser.add_argument("--model", help="also a trained MODEL.keras (its own clip length and classes)")
    parser.add_argument("--runs", type=int, default=10, help="timed calls per variant (median)")
    parser.add_argument("--classes", type=int, default=10, help="classes of the random-init presets")
    parser.add_argument("--chunks", default="20", help="comma-separated streaming chunk sizes in feature frames")
    parser.add_argument("--lookaheads", default="0", help="parity: comma-separated backward look-ahead frames")
    parser.add_argument("--gru-steps", default="10", help="comma-separated GRU steps per call of staged exports")
    parser.add_argument("--no-offline", action="store_true", help="skip the whole-clip (WHILE) rows")
    parser.add_argument("--data", help="the run's config.yaml: adds the F1 parity table on its eval split")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH, help="JSON output path")
    args = parser.parse_args()
    chunks = [int(c) for c in args.chunks.split(",") if c]
    if args.data:
        from bench_parity import parity, parity_table

        record = parity(args.model, args.data, chunks, args.runs, [int(a) for a in args.lookaheads.split(",")],
                        [int(g) for g in args.gru_steps.split(",") if g])
        print(parity_table(record))
        write_record(args.out.with_name("export_parity.json"), record)
        return
    record = run([p for p in args.presets.split(",") if p], args.model, args.runs, args.classes, chunks,
                 [int(g) for g in args.gru_steps.split(",") if g], not args.no_offline)
    print(f"\nTFLite, 1 interpreter thread, {record['cpu_count']} CPU cores, load {record['load_average_1min']:.2f}, "
          f"median of {args.runs} calls\n")
    print(markdown_table(record))
    for r in record["results"]:
        top = ", ".join(f"{n.split('/')[-1]} {d}{list(s)} {b / 1024:.0f} KB" for n, d, s, b in r["largest_buffers"][:3])
        print(f"- {r['model']} {r['mode']} {r['input']}: {top}")
    write_record(args.out, record)


if __name__ == "__main__":
    main()
