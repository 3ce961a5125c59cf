"""Log-mel throughput on 10 s clips: librosa (one clip at a time, as the feature cache
runs it) vs the in-graph ``LogMel`` layer (batches of 16 through ``predict_on_batch``,
a traced ``tf.function`` without XLA). Warm-up calls are excluded.

    python bench/bench_features.py --clips 64

Prints a Markdown table and writes JSON to ``bench/results/features.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from _common import versions, write_record  # bench/ is on sys.path when run as a script

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "features.json"
CLIP_SECONDS = 10.0


def _clips(num_clips: int, num_samples: int) -> np.ndarray:
    """Seeded noise clips, ``(num_clips, num_samples)`` float32."""
    return (np.random.default_rng(0).standard_normal((num_clips, num_samples)) * 0.1).astype(np.float32)


def _time_librosa(clips: np.ndarray, config) -> float:
    """Seconds to featurise ``clips`` one at a time with the librosa reference."""
    from sedweak.features import logmel_librosa

    logmel_librosa(clips[0], config)  # warm-up: numba compilation, caches
    start = time.perf_counter()
    for clip in clips:
        logmel_librosa(clip, config)
    return time.perf_counter() - start


def _time_layer(clips: np.ndarray, config, batch_size: int) -> float:
    """Seconds to featurise ``clips`` in batches of ``batch_size`` through the Keras layer."""
    import keras

    from sedweak.models.frontend import LogMel

    inputs = keras.Input((clips.shape[1],))
    model = keras.Model(inputs, LogMel.from_feature_config(config)(inputs))
    batches = [clips[i:i + batch_size] for i in range(0, len(clips), batch_size)]
    model.predict_on_batch(batches[0])  # warm-up: tracing
    if len(batches[-1]) != batch_size:
        model.predict_on_batch(batches[-1])  # a partial batch traces a second graph
    start = time.perf_counter()
    for batch in batches:
        model.predict_on_batch(batch)
    return time.perf_counter() - start


def run(num_clips: int, batch_size: int) -> dict:
    """Time both implementations on ``num_clips`` 10 s clips; returns the JSON record."""
    from sedweak.config import FeatureConfig

    config = FeatureConfig()
    clips = _clips(num_clips, int(CLIP_SECONDS * config.sample_rate_hz))
    rows = []
    for name, batch, seconds in (
        ("librosa (logmel_librosa)", 1, _time_librosa(clips, config)),
        ("LogMel layer (predict_on_batch)", batch_size, _time_layer(clips, config, batch_size)),
    ):
        rows.append({"implementation": name, "batch_size": batch, "clips": num_clips,
                     "seconds": round(seconds, 4), "clips_per_second": round(num_clips / seconds, 2),
                     "ms_per_clip": round(1000 * seconds / num_clips, 2)})
    return {"clip_seconds": CLIP_SECONDS, "cpu_count": os.cpu_count(),
            "machine": platform.processor() or platform.machine(),
            "versions": versions(), "results": rows}




def markdown_table(record: dict) -> str:
    lines = ["| implementation | batch | clips | clips/s | ms/clip |", "|---|---:|---:|---:|---:|"]
    for row in record["results"]:
        lines.append(f"| {row['implementation']} | {row['batch_size']} | {row['clips']} | "
                     f"{row['clips_per_second']:.1f} | {row['ms_per_clip']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=64, help="number of 10 s clips (default 64)")
    parser.add_argument("--batch-size", type=int, default=16, help="layer batch size (default 16)")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH, help="JSON output path")
    args = parser.parse_args()
    record = run(args.clips, args.batch_size)
    print(f"Log-mel, {CLIP_SECONDS:.0f} s clips at 16 kHz, {record['cpu_count']} CPU cores, "
          f"backend {record['versions']['backend']}\n")
    print(markdown_table(record))
    write_record(args.out, record)


if __name__ == "__main__":
    main()
