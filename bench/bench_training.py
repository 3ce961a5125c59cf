"""CRNN training-step and inference time on 10 s clips (1000 frames x 64 mels, 10 classes),
per model preset. The model is built with ``build_crnn`` and compiled as
``sedweak.training.compile_model`` does (Adam 1e-3, masked BCE on strong and weak, loss
weights 1/1, no loss on the embedding, ``jit_compile=False``); random batches go
through ``train_on_batch`` (warm-up steps excluded) and single clips through
``predict_on_batch``. Op determinism is on, as ``sedweak.training.fit`` sets it.

    python bench/bench_training.py
    python bench/bench_training.py --presets adavanne --batch-sizes 16,32
    python bench/bench_training.py --presets adavanne --set 'conv_pool_time=[1,1,2]' --out bench/results/training-adavanne-tp2.json

Prints a Markdown table and writes JSON to ``bench/results/training.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time
import typing
import warnings
from pathlib import Path

import numpy as np

from _common import versions, write_record  # bench/ is on sys.path when run as a script

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "training.json"
CLIP_SECONDS = 10.0
NUM_CLASSES = 10
NUM_BATCHES = 4  # distinct random batches, cycled through


def parse_set(items: list[str]) -> dict:
    """``["conv_pool_time=[1,1,2]", "rnn_units=(32,)"]`` -> ModelConfig field overrides.

    Values are parsed with ``yaml.safe_load``; lists (and ``(a, b)`` written as a tuple)
    become tuples, integers given for float fields become floats. Unknown keys are errors.
    """
    import yaml

    from sedweak.config import ConfigError, ModelConfig

    hints = typing.get_type_hints(ModelConfig)
    overrides = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = (part.strip() for part in item.split("=", 1))
        if key not in hints:
            raise ConfigError(f"--set {item!r}: unknown ModelConfig field; valid: {sorted(hints)}")
        if raw.startswith("(") and raw.endswith(")"):
            raw = "[" + raw[1:-1] + "]"  # YAML has no tuple syntax
        value = yaml.safe_load(raw)
        if isinstance(value, list):
            value = tuple(value)
        elif hints[key] is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if typing.get_origin(hints[key]) is tuple and not isinstance(value, tuple):
            raise ConfigError(f"--set {item!r}: {key} needs a list, e.g. {key}=[1,1,2]")
        overrides[key] = value
    return overrides


def _model_config(preset: str, overrides: dict):
    from sedweak.config import get_preset

    return dataclasses.replace(get_preset(preset), **overrides)  # __post_init__ re-validates


def _build(model_config, n_mels: int, num_frames: int, learning_rate: float):
    """The CRNN compiled like ``sedweak.training.compile_model`` with the default loss/train config."""
    from sedweak.config import Config, LossConfig, TrainConfig
    from sedweak.models.crnn import build_crnn
    from sedweak.training import compile_model

    config = Config()
    config = dataclasses.replace(
        config, model=model_config,
        loss=dataclasses.replace(LossConfig(), strong_weight=1.0, weak_weight=1.0),
        train=dataclasses.replace(TrainConfig(), learning_rate=learning_rate, jit_compile=False))
    model = build_crnn(model_config, NUM_CLASSES, n_mels, num_frames)
    compile_model(model, config)
    return model


def _batches(batch_size: int, num_frames: int, n_mels: int, time_pooling: int, rng) -> list:
    """Random log-mel inputs and {0, 1} strong/weak targets (weak = max of strong)."""
    out = []
    for _ in range(NUM_BATCHES):
        x = rng.standard_normal((batch_size, num_frames, n_mels)).astype(np.float32)
        strong = (rng.random((batch_size, num_frames // time_pooling, NUM_CLASSES)) < 0.1).astype(np.float32)
        out.append((x, {"strong": strong, "weak": strong.max(axis=1)}))
    return out


def _timed(fn, warmup: int, steps: int) -> list[float]:
    """Milliseconds per call for ``steps`` calls after ``warmup`` untimed calls."""
    for i in range(warmup):
        fn(i)
    times = []
    for i in range(steps):
        start = time.perf_counter()
        fn(warmup + i)
        times.append(1000 * (time.perf_counter() - start))
    return times


def _p90(values: list[float]) -> float:
    return float(np.percentile(values, 90))


def bench_preset(preset: str, overrides: dict, batch_sizes: list[int], warmup: int, steps: int,
                 learning_rate: float) -> list[dict]:
    import keras

    from sedweak.config import FeatureConfig
    from sedweak.training import count_weights

    features = FeatureConfig()
    num_frames = features.num_frames(int(CLIP_SECONDS * features.sample_rate_hz))
    model_config = _model_config(preset, overrides)
    rows = []
    for batch_size in batch_sizes:
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        model = _build(model_config, features.n_mels, num_frames, learning_rate)
        batches = _batches(batch_size, num_frames, features.n_mels, model_config.time_pooling,
                           np.random.default_rng(0))
        with warnings.catch_warnings():
            # The embedding head has no loss: its weights get no gradient (as in training.fit).
            warnings.filterwarnings("ignore", message="Gradients do not exist for variables")
            train_ms = _timed(lambda i: model.train_on_batch(*batches[i % NUM_BATCHES]), warmup, steps)
        clip = batches[0][0][:1]
        infer_ms = _timed(lambda i: model.predict_on_batch(clip), warmup, steps)
        median = statistics.median(train_ms)
        rows.append({
            "preset": preset, "overrides": {k: list(v) if isinstance(v, tuple) else v
                                            for k, v in overrides.items()},
            "batch_size": batch_size, "input_shape": [num_frames, features.n_mels],
            "model_frames": num_frames // model_config.time_pooling,
            "trainable_params": count_weights(model),
            "train_ms_per_step_median": round(median, 2),
            "train_ms_per_step_p90": round(_p90(train_ms), 2),
            "train_clips_per_second": round(1000 * batch_size / median, 2),
            "infer_ms_per_clip_median": round(statistics.median(infer_ms), 2),
            "train_ms_per_step": [round(t, 2) for t in train_ms],
        })
    return rows


def _threads() -> dict:
    import tensorflow as tf

    return {"tf_intra_op_parallelism_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "tf_inter_op_parallelism_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "note": "0 means TensorFlow picks (the number of cores available to the process)",
            "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}


def _load() -> dict:
    load1, load5, _ = os.getloadavg() if hasattr(os, "getloadavg") else (None, None, None)
    return {"loadavg_1min": load1, "loadavg_5min": load5}




def run(presets: list[str], overrides: dict, batch_sizes: list[int], warmup: int, steps: int,
        learning_rate: float = 1e-3) -> dict:
    """Time every (preset, batch size); returns the JSON record."""
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()  # as sedweak.training.seed_everything
    load_before = _load()
    rows = []
    for preset in presets:
        rows.extend(bench_preset(preset, overrides, batch_sizes, warmup, steps, learning_rate))
    return {"clip_seconds": CLIP_SECONDS, "num_classes": NUM_CLASSES, "warmup_steps": warmup,
            "timed_steps": steps, "learning_rate": learning_rate, "jit_compile": False,
            "op_determinism": True, "cpu_count": os.cpu_count(),
            "machine": platform.processor() or platform.machine(), "threads": _threads(),
            "load_before": load_before, "load_after": _load(),
            "versions": versions(), "results": rows}


def markdown_table(record: dict) -> str:
    lines = ["| preset | overrides | batch | trainable params | train ms/step (median) | "
             "train ms/step (p90) | train clips/s | infer ms/clip (batch 1) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in record["results"]:
        overrides = ", ".join(f"{k}={v}" for k, v in row["overrides"].items()) or "-"
        lines.append(f"| {row['preset']} | {overrides} | {row['batch_size']} | {row['trainable_params']:,} | "
                     f"{row['train_ms_per_step_median']:.0f} | {row['train_ms_per_step_p90']:.0f} | "
                     f"{row['train_clips_per_second']:.1f} | {row['infer_ms_per_clip_median']:.1f} |")
    return "\n".join(lines)


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="fast,adavanne", help="comma-separated presets (default fast,adavanne)")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size (default 16)")
    parser.add_argument("--batch-sizes", type=_int_list, default=None,
                        help="comma-separated batch sizes, e.g. 16,32 (overrides --batch-size)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (default 3)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="ModelConfig override applied to every preset, value parsed as YAML, "
                             "e.g. --set 'conv_pool_time=[1,1,2]' (repeatable)")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH, help="JSON output path")
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1 (the first call traces the graph)")
    overrides = parse_set(args.overrides)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    record = run(presets, overrides, args.batch_sizes or [args.batch_size], args.warmup, args.steps)
    threads = record["threads"]
    print(f"CRNN train_on_batch / predict_on_batch, {CLIP_SECONDS:.0f} s clips "
          f"({record['results'][0]['input_shape'][0]} frames x {record['results'][0]['input_shape'][1]} mels), "
          f"{NUM_CLASSES} classes, {args.warmup} warm-up + {args.steps} timed steps; "
          f"os.cpu_count()={record['cpu_count']}, TF intra/inter-op threads "
          f"{threads['tf_intra_op_parallelism_threads']}/{threads['tf_inter_op_parallelism_threads']} "
          f"(0 = TF default), load avg {record['load_before']['loadavg_1min']:.2f} before, "
          f"{record['load_after']['loadavg_1min']:.2f} after, backend {record['versions']['backend']}\n")
    print(markdown_table(record))
    write_record(args.out, record)


if __name__ == "__main__":
    main()
