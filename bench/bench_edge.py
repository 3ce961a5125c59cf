"""Edge benchmarks of trained runs: what a device gets, per preset, on real recordings.

    python bench/bench_edge.py --run demo=/tmp/runs/demo --run edge=/tmp/runs/edge [--runs 30]
    python bench/bench_edge.py --crash-matrix /tmp/runs/demo --folder REAL_AUDIO_DIR
    python bench/bench_edge.py --weak-head-study /tmp/runs/demo --folder REAL_AUDIO_DIR

1. ``--run NAME=RUN_DIR`` (a ``sedweak train`` folder): per preset, parameters, int8 kB
   and MMAC per second of audio (:mod:`sedweak.models.complexity`), the staged int8 file
   (calibrated on the run's training split) and its size, tagging / segment / event F1 of
   Keras and of the int8 file on the run's eval split (the same audio files, Keras
   through ``sedweak.inference``, int8 through ``sedweak_runtime``), ms per 10 s clip on one
   thread (model only, and with the numpy front end), and the forward-only streaming
   int8 step of the same preset (random weights: latency does not depend on them) in ms
   per 20 ms hop.
2. ``--crash-matrix RUN_DIR --folder DIR``: the run's model with each weak pooling (its
   trained layers, the pooling swapped; attention gets a random attention layer) in every
   export variant, each file run on every clip of DIR: clips that raise, per file.
3. ``--weak-head-study RUN_DIR --folder DIR``: the two fixes for int8 linear-softmax
   pooling, measured against Keras on DIR: (A) the weak head kept float (what sedweak
   does) and (B) the head quantized with a denominator floored at two int8 steps of the
   calibrated sum(p), so that it cannot round to zero.

Prints Markdown tables and writes ``bench/results/edge.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import versions, write_record  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = ROOT / "bench" / "results" / "edge.json"
POOLINGS = ("max", "mean", "attention", "linear_softmax")
VARIANTS = {  # name -> ExportConfig keys
    "float32": {"mode": "float32"}, "float16": {"mode": "float16"}, "dynamic": {"mode": "dynamic"},
    "int8 staged": {"mode": "int8"}, "int8 full-integer": {"mode": "int8", "full_integer": True},
    "int8 waveform-input": {"mode": "int8", "waveform_input": True},
    "streaming float32": {"mode": "float32", "graph": "streaming"},
    "streaming int8": {"mode": "int8", "graph": "streaming"},
}


def _export(model, info, out: Path, run_dir: Path, **keys) -> Path:
    from sedweak.config import ExportConfig
    from sedweak.export import export_model

    settings = ExportConfig(**{"check": False, **keys})
    path, _ = export_model(model, info, out, settings, run_dir / "config.yaml", bank_clips=0)
    return path


def _eval_files(run_dir: Path):
    """(audio paths, reference events) of the run's eval split."""
    from sedweak.labels import read_strong_tsv

    reference = read_strong_tsv(run_dir / "data" / "metadata" / "eval.tsv")
    paths = [run_dir / "data" / "audio" / "eval" / name for name in sorted(reference)]
    return paths, reference


def _scores(reference, events, classes) -> dict:
    from sedweak.evaluation import score_events

    metrics = score_events(reference, events, list(classes))
    return {k: round(100 * metrics[k], 2) for k in ("tagging.f1", "segment.f1", "event.f1")}


def _latency_ms(fn, runs: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def _streaming_hop_ms(preset: str, info, runs: int, workdir: Path) -> dict:
    """The forward-only int8 streaming step of ``preset`` at its smallest chunk (one time
    pooling group) and at 20 frames; ms per step and per 20 ms of audio."""
    import keras

    from sedweak.export import export_streaming
    from sedweak.models.crnn import forward_crnn
    from sedweak.config import get_preset
    from sedweak_runtime import Detector, StreamingLogMel

    keras.utils.set_random_seed(0)
    model = forward_crnn(get_preset(preset), len(info.classes))
    rng = np.random.default_rng(0)
    calibration = [rng.normal(-50.0, 15.0, (info.clip_frames, info.features.n_mels)).astype(np.float32)
                   for _ in range(8)]
    out = {}
    for chunk in sorted({info.time_pooling, 20}):
        path = export_streaming(model, info, workdir / f"{preset}_stream{chunk}.tflite", chunk, "int8", calibration)
        detector = Detector(path)
        step = detector.streaming
        frames = rng.normal(-50.0, 15.0, (chunk, info.features.n_mels)).astype(np.float32)
        step.push(np.zeros((step.width, info.features.n_mels), np.float32))        # fill the context
        ms = _latency_ms(lambda: step.push(frames), runs)
        front_end = StreamingLogMel(detector.features)
        samples = (0.05 * rng.standard_normal(chunk * info.features.hop_samples)).astype(np.float32)
        front_ms = _latency_ms(lambda: front_end.push(samples), runs)
        hop_ms = 1000 * chunk * info.features.hop_samples / info.features.sample_rate_hz
        out[f"chunk_{chunk}"] = {"ms_per_step": round(ms, 4), "step_ms_of_audio": hop_ms,
                                 "ms_per_20ms": round(ms * 20.0 / hop_ms, 4),
                                 "ms_per_20ms_with_front_end": round((ms + front_ms) * 20.0 / hop_ms, 4),
                                 "kb": path.stat().st_size / 1e3}
    return out


def bench_run(name: str, run_dir: Path, runs: int, workdir: Path) -> dict:
    from sedweak.models.saving import load_model
    from sedweak.export.calibration import fit_window
    from sedweak.features import logmel_librosa
    from sedweak.inference import predict_files
    from sedweak.models.complexity import crnn_complexity
    from sedweak_runtime import Detector

    model, info = load_model(run_dir / "model.keras")
    preset = _preset_of(run_dir)
    complexity = crnn_complexity(model, info.clip_frames, info.features.n_mels, info.clip_seconds)
    path = _export(model, info, workdir / f"{name}_int8.tflite", run_dir, mode="int8")
    paths, reference = _eval_files(run_dir)
    keras_events, _, failed = predict_files(model, info, paths)
    detector = Detector(path)
    device_events = {p.name: detector.detect_file(p) for p in paths}
    clip = detector.read_audio(paths[0])[:int(info.clip_seconds * info.features.sample_rate_hz)]
    window = fit_window(logmel_librosa(clip, info.features), info)
    return {
        "preset": preset, "parameters": complexity.parameters, "int8_param_kb": complexity.int8_kilobytes,
        "mmac_per_second": round(complexity.macs_per_second / 1e6, 3), "int8_file_kb": path.stat().st_size / 1e3,
        "eval_clips": len(paths), "skipped": len(failed),
        "keras": _scores(reference, keras_events, info.classes),
        "int8": _scores(reference, device_events, info.classes),
        "ms_per_10s_model": round(_latency_ms(lambda: detector.window_outputs(window), runs), 3),
        "ms_per_10s_with_front_end": round(_latency_ms(lambda: detector.frame_probabilities(clip), runs), 3),
        "streaming_forward_int8": _streaming_hop_ms(preset, info, runs * 20, workdir),
    }


def _preset_of(run_dir: Path) -> str:
    from sedweak.config import load_config

    return load_config(run_dir / "config.yaml").model.preset


def _with_pooling(model, config, pooling: str):
    """The trained model's layers with another weak pooling (attention: a seeded random
    attention layer). ``config``: the run's ``ModelConfig``."""
    import keras

    from sedweak.models.crnn import build_crnn

    keras.utils.set_random_seed(0)
    swapped = build_crnn(dataclasses.replace(config, weak_pooling=pooling), model.get_layer("strong").units)
    for layer in swapped.layers:
        if layer.name != "weak" and layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return swapped


def crash_matrix(run_dir: Path, folder: Path, workdir: Path) -> dict:
    """Every pooling x variant file of the run's model on every clip of ``folder``."""
    from sedweak.models.saving import load_model
    from sedweak.config import load_config
    from sedweak.inference import audio_files
    from sedweak_runtime import Detector

    model, info = load_model(run_dir / "model.keras")
    config = load_config(run_dir / "config.yaml").model
    paths = audio_files([folder])
    table = {}
    for pooling in POOLINGS:
        variant_model = _with_pooling(model, config, pooling)
        for variant, keys in VARIANTS.items():
            start = time.perf_counter()
            path = _export(variant_model, info, workdir / f"{pooling}_{variant.replace(' ', '_')}.tflite",
                           run_dir, **keys)
            detector, crashed = Detector(path), []
            for p in paths:
                try:
                    detector.detect_file(p)
                except Exception as err:  # what the runtime would report as skipped
                    crashed.append(f"{p.name}: {type(err).__name__}: {str(err)[:80]}")
            table[f"{pooling} / {variant}"] = {"clips": len(paths), "crashed": len(crashed),
                                               "examples": crashed[:3], "seconds": round(time.perf_counter() - start, 1)}
            print(f"{pooling:15s} {variant:22s} {len(paths) - len(crashed)}/{len(paths)} clips ran", flush=True)
    return table


def weak_head_study(run_dir: Path, folder: Path, workdir: Path) -> dict:
    """int8 linear-softmax: (A) float weak head vs (B) quantized head, floored denominator."""
    import sedweak.export.convert as convert
    import sedweak.export.staged as staged
    from keras import ops

    from sedweak.models.saving import load_model
    from sedweak.export.calibration import calibration_logmels, fit_window
    from sedweak.export.graph import strong_head
    from sedweak.features import logmel_librosa
    from sedweak.inference import audio_files
    from sedweak.audio import load_audio
    from sedweak_runtime import Detector

    model, info = load_model(run_dir / "model.keras")
    if model.get_layer("weak").mode != "linear_softmax":
        raise SystemExit(f"{run_dir}: the study needs a linear-softmax model")
    windows = [fit_window(logmel_librosa(load_audio(p, info.features.sample_rate_hz), info.features), info)
               for p in audio_files([folder])]
    expected = np.concatenate([np.asarray(model.predict_on_batch(np.stack(windows[i:i + 16]))["weak"])
                               for i in range(0, len(windows), 16)])
    calibration = calibration_logmels(run_dir / "config.yaml", info)
    sums = [np.asarray(model.predict_on_batch(c[None][:, :info.clip_frames])["strong"]).sum(axis=1).max()
            for c in calibration[:16]]
    floor = 2.0 * float(np.max(sums)) / 255.0                     # two int8 steps of sum(p)'s range

    def floored_head(model_):
        def head(x):
            strong = strong_head(model_, x)
            weak = ops.sum(strong * strong, axis=1) / ops.maximum(ops.sum(strong, axis=1), floor)
            return {"strong": strong, "weak": weak}
        return head

    rows = {}
    for option in ("A float weak head", "B floored denominator"):
        patches = []
        if option.startswith("B"):
            patches = [(staged, "_head_function", floored_head), (staged, "float_scopes", lambda mode, wave: ()),
                       (convert, "quantized_ops", lambda path, names: []), (convert, "FLOAT_OPS", ())]
        saved = [(m, n, getattr(m, n)) for m, n, _ in patches]
        for m, n, v in patches:
            setattr(m, n, v)
        try:
            path = staged.export_staged(model, info, workdir / f"weak_{option[0]}.tflite", "int8", 10, calibration)
        finally:
            for m, n, v in saved:
                setattr(m, n, v)
        detector, got, crashed = Detector(path), [], 0
        for w in windows:
            try:
                got.append(np.asarray(detector.window_outputs(w)["weak"])[0])
            except RuntimeError:
                crashed += 1
                got.append(np.full(len(info.classes), np.nan, np.float32))
        got = np.stack(got)
        ok = ~np.isnan(got).any(axis=1)
        diff = np.abs(got[ok] - expected[ok])
        agree = float(np.mean((got[ok] > 0.5) == (expected[ok] > 0.5)))
        rows[option] = {"clips": len(windows), "crashed": crashed, "weak_max_diff": float(diff.max()),
                        "weak_mean_diff": float(diff.mean()), "tag_agreement_at_0.5": round(agree, 4),
                        "file_kb": path.stat().st_size / 1e3, "floor": floor if option.startswith("B") else None}
    return rows


def _table(record: dict) -> str:
    lines = []
    if record.get("runs"):
        lines += ["| run (preset) | params | int8 kB | MMAC/s | int8 file kB | Keras seg / event F1 | int8 seg / event F1 "
                  "| ms / 10 s (model, +front end) | stream int8 ms / 20 ms (+front end), smallest hop |", "|---|---:|---:|---:|---:|---|---|---|---|"]
        for name, r in record["runs"].items():
            smallest = min(r["streaming_forward_int8"].values(), key=lambda v: v["step_ms_of_audio"])
            stream = f"{smallest['ms_per_20ms']:.3f} ({smallest['ms_per_20ms_with_front_end']:.3f})"
            lines.append(f"| {name} ({r['preset']}) | {r['parameters']} | {r['int8_param_kb']:.1f} | "
                         f"{r['mmac_per_second']:.1f} | {r['int8_file_kb']:.1f} | {r['keras']['segment.f1']:.2f} / "
                         f"{r['keras']['event.f1']:.2f} | {r['int8']['segment.f1']:.2f} / {r['int8']['event.f1']:.2f} | "
                         f"{r['ms_per_10s_model']:.2f}, {r['ms_per_10s_with_front_end']:.2f} | {stream} |")
    if record.get("crash_matrix"):
        lines += ["", "| pooling / variant | clips | crashed |", "|---|---:|---:|"]
        lines += [f"| {k} | {v['clips']} | {v['crashed']} |" for k, v in record["crash_matrix"].items()]
    if record.get("weak_head_study"):
        lines += ["", "| option | crashed | weak max diff | weak mean diff | tags agree | kB |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {k} | {v['crashed']} | {v['weak_max_diff']:.4f} | {v['weak_mean_diff']:.5f} | "
                  f"{v['tag_agreement_at_0.5']:.4f} | {v['file_kb']:.1f} |" for k, v in record["weak_head_study"].items()]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", default=[], metavar="NAME=RUN_DIR")
    parser.add_argument("--runs", type=int, default=30, help="Timed repetitions (median).")
    parser.add_argument("--crash-matrix", type=Path, metavar="RUN_DIR")
    parser.add_argument("--weak-head-study", type=Path, metavar="RUN_DIR")
    parser.add_argument("--folder", type=Path, help="Real audio clips for --crash-matrix / --weak-head-study.")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)
    record = {"versions": versions(), "runs": {}}
    with tempfile.TemporaryDirectory(prefix="sedweak-bench-edge-") as tmp:
        for item in args.run:
            name, _, run_dir = item.partition("=")
            record["runs"][name] = bench_run(name, Path(run_dir), args.runs, Path(tmp))
        if args.crash_matrix:
            record["crash_matrix"] = crash_matrix(args.crash_matrix, args.folder, Path(tmp))
        if args.weak_head_study:
            record["weak_head_study"] = weak_head_study(args.weak_head_study, args.folder, Path(tmp))
    print(_table(record))
    write_record(args.out, record)


if __name__ == "__main__":
    main()
