"""Few-shot transfer on real recordings: MFCC statistics vs sedweak CRNN embeddings.

Pons & Favory's comparison on the shared sound bank (``manifest.csv``: the foreground
recordings, one class each), n labelled examples per class (1, 2, 5, 10, all), k-NN and
logistic regression (``sedweak.collections.transfer``), for three representations:

(a) MFCC statistics (mean + std of 20 MFCCs of sedweak's log-mel, 40-d);
(b) the embedding of a trained sedweak CRNN (default ``/tmp/runs/demo/model.keras``);
(c) the embedding of a self-supervised pre-trained CRNN (default
    ``/tmp/runs/ssl_init/pre/model.keras``; left out with a note when missing).

Two protocols, each n drawn ``--repeats`` times (seeded) from the training side:

* ``cv``: stratified 5-fold over all recordings of the classes with >= ``--min-recordings``
  (each recording is its own source group in this bank, so no excerpt leaks across folds;
  collections are *not* held out: recordings of one game's sound set can sit on both sides).
* ``unheard``: train on the recordings of the package's embedded bank -- the only ones
  either model heard in training -- and test on the rest of the shared bank, which no
  model has heard (one split: the interval is then over the repeats of the draw).

    python bench/bench_transfer.py [--bank /work/shared/soundbank] [--repeats 10]

Prints tables (accuracy and macro F1, mean ± 95 % CI) and writes ``bench/results/transfer.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import versions, write_record  # noqa: E402

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "transfer.json"
SIZES = (1, 2, 5, 10, None)


def bank_recordings(bank_dir: Path, min_recordings: int):
    """(paths, labels, heard) of the foreground recordings of classes with >= min_recordings;
    ``heard``: the recording is in the package's embedded bank (the models' training data)."""
    from collections import Counter

    from sedweak.soundbank import SoundBank

    clips = [c for c in SoundBank.open(bank_dir).clips if c.role == "foreground"]
    counts = Counter(c.label for c in clips)
    kept = sorted((c for c in clips if counts[c.label] >= min_recordings), key=lambda c: c.relative_path)
    embedded = {c.relative_path for c in SoundBank.open("embedded").clips}
    left_out = {k: v for k, v in sorted(counts.items()) if v < min_recordings}
    return ([c.path for c in kept], np.array([c.label for c in kept]),
            np.array([c.relative_path in embedded for c in kept]), left_out)


def representations(paths, model_paths: dict[str, Path]) -> tuple[dict[str, np.ndarray], list[str]]:
    """{name: (files, dim) vectors} and notes on models left out."""
    from sedweak.collections.mfcc_stats import mfcc_statistics
    from sedweak.config import FeatureConfig
    from sedweak.embeddings.extract import embed_logmel, embedding_function
    from sedweak.features import logmel_file
    from sedweak.models.saving import load_model

    mels = [logmel_file(p, FeatureConfig()) for p in paths]
    out, notes = {"(a) MFCC stats": np.stack([mfcc_statistics(m) for m in mels])}, []
    for name, path in model_paths.items():
        if not path.is_file():
            notes.append(f"{name}: {path} not found, left out")
            continue
        model, info = load_model(path)
        if info.features != FeatureConfig():
            raise SystemExit(f"{path}: its front end differs from the default one the log-mels were computed with")
        run = embedding_function(model, str(path))
        out[name] = np.concatenate([embed_logmel(run, m, info)[0] for m in mels])
    return out, notes


def protocol_splits(labels: np.ndarray, heard: np.ndarray, seed: int) -> dict[str, list]:
    from sedweak.collections.transfer import Split, cv_splits

    return {"cv": cv_splits(labels, None, 5, seed),
            "unheard": [Split("unheard", np.flatnonzero(heard), np.flatnonzero(~heard))]}


def run(vectors: dict[str, np.ndarray], labels: np.ndarray, heard: np.ndarray, repeats: int, seed: int) -> dict:
    """{protocol: {"sizes", "notes", "rows": {representation: summary rows}}}."""
    from sedweak.collections.transfer import TransferSettings, feasible_sizes, learning_curve
    from sedweak.collections.transfer_report import size_name, summarise

    settings = TransferSettings(classifiers=("knn", "logistic"), examples_per_class=SIZES, repeats=repeats, seed=seed)
    results = {}
    for protocol, splits in protocol_splits(labels, heard, seed).items():
        sizes, notes = feasible_sizes(labels, splits, SIZES, strict=False)
        rows = {name: summarise(learning_curve(x, labels, splits, settings, sizes)) for name, x in vectors.items()}
        results[protocol] = {"splits": [s.name for s in splits], "sizes": [size_name(n) for n in sizes],
                             "test_files": int(sum(len(s.test) for s in splits)), "notes": notes, "rows": rows}
    return results


def print_tables(results: dict) -> None:
    for protocol, result in results.items():
        for metric in ("accuracy", "macro_f1"):
            print(f"\n{protocol}: {metric} ({', '.join(result['splits'])}; {result['test_files']} test files)\n")
            print("| representation | classifier | " + " | ".join(f"n={n}" for n in result["sizes"]) + " |")
            print("|---|---|" + "---:|" * len(result["sizes"]))
            for name, rows in result["rows"].items():
                for classifier in ("knn", "logistic"):
                    cells = [r[metric] for r in rows if r["classifier"] == classifier]
                    print(f"| {name} | {classifier} | " + " | ".join(
                        f"{c['mean']:.3f}" + ("" if c["ci95"] is None else f" ± {c['ci95']:.3f}") for c in cells) + " |")
            for note in result["notes"]:
                print(f"note: {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bank", type=Path, default=Path("/work/shared/soundbank"))
    parser.add_argument("--trained-model", type=Path, default=Path("/tmp/runs/demo/model.keras"))
    parser.add_argument("--ssl-model", type=Path, default=Path("/tmp/runs/ssl_init/pre/model.keras"))
    parser.add_argument("--min-recordings", type=int, default=15, help="classes with fewer are left out")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_PATH)
    args = parser.parse_args()

    started = time.perf_counter()
    paths, labels, heard, left_out = bank_recordings(args.bank, args.min_recordings)
    vectors, notes = representations(paths, {"(b) trained CRNN": args.trained_model,
                                             "(c) self-supervised CRNN": args.ssl_model})
    embed_seconds = time.perf_counter() - started
    results = run(vectors, labels, heard, args.repeats, args.seed)
    classes = {c: int((labels == c).sum()) for c in sorted(set(labels.tolist()))}
    print(f"{len(paths)} recordings of {len(classes)} classes {classes}; left out (< {args.min_recordings} "
          f"recordings): {left_out}; heard by the models (embedded bank): {int(heard.sum())}")
    for note in notes:
        print(f"note: {note}")
    print_tables(results)
    write_record(args.out, {
        "bank": str(args.bank), "models": {"trained": str(args.trained_model), "self_supervised": str(args.ssl_model)},
        "classes": classes, "classes_left_out": left_out, "heard_recordings": int(heard.sum()), "notes": notes,
        "repeats": args.repeats, "seed": args.seed, "embed_seconds": round(embed_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1), "results": results, "versions": versions()})


if __name__ == "__main__":
    main()
