"""Feature cache and input pipeline throughput on generated 10 s clips.

1. Cache build, clips/s: a plain loop (load + librosa log-mel, in memory, no file) vs
   ``build_cache`` (HDF5 partial file, flushed per clip) with 1 worker (in process) and
   2 ``spawn`` worker processes (their start-up included).
2. Input pipeline, examples/s: ``ClipBatches`` batches of 16 streamed from the HDF5 cache
   (balanced sampling, class weights, every augmentation on) and from memory, vs the fast
   CRNN's ``train_on_batch`` at batch 16. The pipeline runs in the training thread, so it
   is not the bottleneck when its examples/s is well above the training step's.

    python bench/bench_cache.py --clips 32

Prints a Markdown table and writes JSON to ``bench/results/cache.json``.
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

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "cache.json"
CLIP_SECONDS = 10.0
BATCH_SIZE = 16
NUM_CLASSES = 10


def _write_clips(folder: Path, num_clips: int, sample_rate_hz: int) -> list[Path]:
    """Seeded noise clips as 16-bit WAV files."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    paths = []
    for i in range(num_clips):
        paths.append(folder / f"clip{i:04d}.wav")
        sf.write(paths[-1], 0.1 * rng.standard_normal(int(CLIP_SECONDS * sample_rate_hz)), sample_rate_hz)
    return paths


def _time_builds(paths: list[Path], folder: Path, config) -> list[dict]:
    """Seconds for the plain loop and for ``build_cache`` with 1 and 2 workers."""
    from sedweak.datasets.cache import build_cache, compute_logmels

    names = [p.name for p in paths]
    compute_logmels(paths[:1], config, CLIP_SECONDS)  # warm-up: numba, caches
    rows = []
    start = time.perf_counter()
    compute_logmels(paths, config, CLIP_SECONDS)
    rows.append(("plain loop (load + librosa, no file)", 1, time.perf_counter() - start))
    for workers in (1, 2):
        start = time.perf_counter()
        build_cache(folder / f"cache-{workers}.h5", paths, names, config, CLIP_SECONDS, num_workers=workers,
                    min_clips_per_worker=1)
        rows.append((f"build_cache, {workers} worker{'s' if workers > 1 else ''}", workers,
                     time.perf_counter() - start))
    return [{"stage": "cache build", "setting": name, "workers": w, "items": len(paths), "seconds": round(s, 3),
             "per_second": round(len(paths) / s, 2), "ms_per_item": round(1000 * s / len(paths), 2)}
            for name, w, s in rows]


def _pipeline_batches(features, weak: np.ndarray, time_pooling: int):
    from sedweak.config import AugmentConfig
    from sedweak.training.batches import ClipBatches
    from sedweak.training.sampling import class_weights

    model_frames = features.shape[1] // time_pooling
    strong = np.repeat(weak[:, None, :], model_frames, axis=1)
    augment = AugmentConfig(freq_shift_bands_max=4, time_mask_frames_max=50)  # mixing, shifts, masks: all on
    return ClipBatches(features, strong, weak, BATCH_SIZE, time_pooling, shuffle=True, augment=augment,
                       sampling="balanced", class_weights=class_weights(weak, "inverse_frequency"))


def _time_pipeline(features, weak: np.ndarray, time_pooling: int, num_batches: int) -> float:
    """Seconds per batch of ``ClipBatches`` over ``features``."""
    batches = _pipeline_batches(features, weak, time_pooling)
    batches[0]
    start = time.perf_counter()
    for i in range(num_batches):
        if i and i % len(batches) == 0:
            batches.on_epoch_end()
        batches[i % len(batches)]
    return (time.perf_counter() - start) / num_batches


def _time_train_step(frames: int, config, num_steps: int) -> float:
    """Seconds per ``train_on_batch`` of the fast CRNN at batch 16 (after warm-up)."""
    import keras

    from sedweak.losses import strong_weak_losses
    from sedweak.models.crnn import build_crnn
    from sedweak.config import get_preset

    model_config = get_preset("fast")
    model = build_crnn(model_config, NUM_CLASSES, config.n_mels, frames)
    losses, weights = strong_weak_losses(1.0, 1.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses, loss_weights=weights)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH_SIZE, frames, config.n_mels)).astype(np.float32)
    model_frames = frames // model_config.time_pooling
    y = {"strong": (rng.random((BATCH_SIZE, model_frames, NUM_CLASSES)) > 0.8).astype(np.float32),
         "weak": (rng.random((BATCH_SIZE, NUM_CLASSES)) > 0.5).astype(np.float32)}
    sample_weight = {"strong": np.ones(BATCH_SIZE, np.float32), "weak": np.ones(BATCH_SIZE, np.float32)}
    for _ in range(2):  # warm-up: tracing
        model.train_on_batch(x, y, sample_weight=sample_weight)
    start = time.perf_counter()
    for _ in range(num_steps):
        model.train_on_batch(x, y, sample_weight=sample_weight)
    return (time.perf_counter() - start) / num_steps, model_config.time_pooling


def _pipeline_rows(folder: Path, config, num_batches: int, num_steps: int) -> list[dict]:
    from sedweak.datasets.cache import H5Features

    import h5py

    with h5py.File(folder / "cache-1.h5", "r") as h5:
        num_clips, frames, n_mels = h5["logmel"].shape
    streamed = H5Features(folder / "cache-1.h5", np.arange(num_clips), (frames, n_mels))
    weak = (np.random.default_rng(1).random((num_clips, NUM_CLASSES)) > 0.8).astype(np.float32)
    step, time_pooling = _time_train_step(frames, config, num_steps)
    rows = [("ClipBatches from HDF5 (streamed)", _time_pipeline(streamed, weak, time_pooling, num_batches)),
            ("ClipBatches from memory", _time_pipeline(np.asarray(streamed), weak, time_pooling, num_batches)),
            ("fast CRNN train_on_batch", step)]
    return [{"stage": "training input" if "Clip" in name else "training step", "setting": name,
             "workers": 1, "items": BATCH_SIZE * (num_steps if "train" in name else num_batches),
             "seconds_per_batch": round(s, 4), "per_second": round(BATCH_SIZE / s, 1),
             "ms_per_item": round(1000 * s / BATCH_SIZE, 2)} for name, s in rows]


def run(num_clips: int, num_batches: int, num_steps: int) -> dict:
    """Time every stage on ``num_clips`` generated 10 s clips; returns the JSON record."""
    from sedweak.config import FeatureConfig

    config = FeatureConfig()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = _write_clips(folder, num_clips, config.sample_rate_hz)
        rows = _time_builds(paths, folder, config) + _pipeline_rows(folder, config, num_batches, num_steps)
    return {"clip_seconds": CLIP_SECONDS, "batch_size": BATCH_SIZE, "cpu_count": os.cpu_count(),
            "load_average_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "machine": platform.processor() or platform.machine(), "versions": versions(), "results": rows}


def markdown_table(record: dict) -> str:
    lines = ["| stage | setting | clips or examples /s | ms per clip or example |", "|---|---|---:|---:|"]
    for row in record["results"]:
        lines.append(f"| {row['stage']} | {row['setting']} | {row['per_second']:.1f} | {row['ms_per_item']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=32, help="number of 10 s clips (default 32)")
    parser.add_argument("--batches", type=int, default=20, help="pipeline batches timed (default 20)")
    parser.add_argument("--steps", type=int, default=10, help="training steps timed (default 10)")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH, help="JSON output path")
    args = parser.parse_args()
    record = run(args.clips, args.batches, args.steps)
    print(f"{CLIP_SECONDS:.0f} s clips at 16 kHz, batch {BATCH_SIZE}, {record['cpu_count']} CPU cores, "
          f"load average {record['load_average_1min_before_after']} (before, after), "
          f"backend {record['versions']['backend']}\n")
    print(markdown_table(record))
    write_record(args.out, record)


if __name__ == "__main__":
    main()
