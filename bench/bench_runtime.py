"""Device-side latency of exported files: the runtime alone, no TensorFlow in the process.

    python bench/bench_runtime.py m-int8.tflite m-dyn.tflite stream.tflite --runs 200

What a device would run: ``export/sedweak_runtime.py`` (numpy + ai-edge-litert) on one
10 s window per call, 1 interpreter thread. Whole-clip and staged files: one window
(``Detector.staged`` for staged files: conv, every GRU chunk call, head, Python
included); streaming files: the whole clip pushed through the chunk step. The files are
timed round-robin (one call each per round), so a noisy neighbour on a shared CPU
slows them all alike; the table gives the median and the 90th percentile per file, and the
numpy log-mel front end (timed the same way) that log-mel-input files add. Copy this
script and the runtime to a device to measure it there. Prints a Markdown table and
writes ``bench/results/runtime.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = ROOT / "bench" / "results" / "runtime.json"


def _runtime():
    import sedweak_runtime  # `pip install ./export` or the sedweak distribution; imports no TensorFlow

    return sedweak_runtime


def _clip(sample_rate: int, samples: int) -> np.ndarray:
    """A fixed 10 s test signal: noise, a tone burst and a chirp."""
    t = np.arange(samples) / sample_rate
    wave = 0.05 * np.random.default_rng(0).standard_normal(samples)
    wave += 0.3 * np.sin(2 * np.pi * 1000 * t) * ((t > 2) & (t < 4))
    wave += 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) * (t > 6)
    return wave.astype(np.float32)


def _call(detector, wave: np.ndarray, logmel: np.ndarray):
    """A no-argument function running one 10 s clip through the file's model."""
    meta = detector.meta
    if detector.streaming is not None:
        def stream():
            detector.streaming.reset()
            return detector.streaming.push(logmel, final=True)
        return stream
    x = wave[np.newaxis, :meta["clip_samples"]] if meta["input"]["kind"] == "waveform" else logmel[np.newaxis, :meta["clip_frames"]]
    return lambda: detector.window_outputs(x[0])


def run(paths: list[Path], runs: int, threads: int) -> dict:
    runtime = _runtime()
    detectors = [runtime.Detector(p, num_threads=threads) for p in paths]
    features = detectors[0].features
    clip_seconds = detectors[0].meta["clip_seconds"]
    wave = _clip(features["sample_rate_hz"], int(clip_seconds * features["sample_rate_hz"]))
    logmel = runtime.logmel(wave, features)
    calls = [_call(d, wave, logmel) for d in detectors]
    calls.append(lambda: runtime.logmel(wave, features))                       # the front end, timed alike
    times = [[] for _ in calls]
    for _ in range(3):
        for call in calls:
            call()
    for _ in range(runs):
        for i, call in enumerate(calls):
            start = time.perf_counter()
            call()
            times[i].append(1000 * (time.perf_counter() - start))
    front = float(np.median(times[-1]))
    rows = []
    for path, detector, t in zip(paths, detectors, times):
        meta = detector.meta
        kind = "staged" if "staged" in meta else "streaming" if "streaming" in meta else "whole clip"
        median = float(np.median(t))
        total = median + (front if meta["input"]["kind"] != "waveform" else 0.0)
        rows.append({"file": path.name, "kind": kind, "mode": meta["mode"], "input": meta["input"]["kind"],
                     "size_bytes": path.stat().st_size, "median_ms": round(median, 3),
                     "p90_ms": round(float(np.percentile(t, 90)), 3),
                     "with_front_end_ms": round(total, 3), "real_time_factor": round(total / 1000 / clip_seconds, 5)})
    return {"runs": runs, "threads": threads, "clip_seconds": clip_seconds, "front_end_ms": round(front, 3),
            "load_average_1min": os.getloadavg()[0], "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "tensorflow_imported": "tensorflow" in sys.modules, "rows": rows}


def table(record: dict) -> str:
    lines = [f"sedweak_runtime, {record['threads']} thread(s), {record['runs']} rounds, load "
             f"{record['load_average_1min']:.2f} on {record['cpu_count']} cores; numpy front end "
             f"{record['front_end_ms']:.2f} ms per {record['clip_seconds']:g} s clip\n",
             "| file | kind | mode | input | KiB | median ms | p90 ms | + front end ms | RTF |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['file']} | {r['kind']} | {r['mode']} | {r['input']} | {r['size_bytes'] / 1024:.0f} | "
              f"{r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['with_front_end_ms']:.2f} | {r['real_time_factor']:.4f} |"
              for r in record["rows"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help=".tflite files (their .json sidecars beside them)")
    parser.add_argument("--runs", type=int, default=100, help="rounds (one timed call per file each)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS_PATH, help="JSON output path")
    args = parser.parse_args()
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    record = run(args.files, args.runs, args.threads)
    print(table(record))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
