"""Do Jansen et al.'s self-supervised triplets learn anything on the sound bank?

Pre-trains the recipe's CRNN with ``sedweak pretrain`` (no labels: the bank's train-split
recordings), then embeds every foreground recording of the bank's **eval** split (the
collections training never hears, ``split_by: collection``) and scores, per representation:

* query-by-example mAP (cosine ranking, Jansen et al.'s retrieval test);
* shallow-classifier mAP (logistic regression on frozen embeddings, trained on the
  train-split recordings' embeddings, tested on the eval split's);

for: the pre-trained embedding, the same CRNN untrained (random weights: what the
architecture gives for free), and log-mel statistics (mean and standard deviation of each
mel band over the recording, 128-d, standardised: the paper's raw-feature baseline).

    python bench/bench_self_supervised.py --workdir /tmp/ssl [--recipe recipes/demo.yaml] [--set pretrain.epochs=10]

Prints a table, writes ``bench/results/self_supervised.json`` and a t-SNE PNG per
representation into the workdir.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import versions, write_record  # noqa: E402

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "self_supervised.json"


def bank_recordings(config, split: str):
    """(paths, labels) of the foreground recordings of one split of the recipe's bank."""
    from sedweak.soundbank import SoundBank
    from sedweak.synth import split_bank

    bank = SoundBank.open(config.data.soundbank)
    classes = list(config.data.classes) or bank.foreground_classes
    part = split_bank(bank, classes, config.data.synth.seed, config.data.synth.split_by)[split]
    clips = sorted((c for group in part["pool"].values() for c in group), key=lambda c: str(c.path))
    return [c.path for c in clips], [c.label for c in clips]


def logmels(config, paths):
    from sedweak.features import logmel_file

    return [logmel_file(p, config.features) for p in paths]


def statistics(mels):
    """(recordings, 2 * n_mels): mean and standard deviation of each band over time."""
    return np.stack([np.concatenate([m.mean(axis=0), m.std(axis=0)]) for m in mels])


def model_embeddings(model, info, mels):
    from sedweak.embeddings.extract import embed_logmel, embedding_function

    run = embedding_function(model)
    return np.concatenate([embed_logmel(run, m, info)[0] for m in mels])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--recipe", default=str(Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH)
    args = parser.parse_args()

    import keras

    from sedweak.config import load_config
    from sedweak.embeddings.metrics import query_by_example_map, shallow_classifier_map, tsne_png
    from sedweak.models.crnn import build_crnn
    from sedweak.models.saving import load_model
    from sedweak.training.pretrain import run_pretrain, window_frames

    config = load_config(args.recipe, args.overrides)
    started = time.perf_counter()
    model_path = args.workdir / "pretrain" / "model.keras"
    if not model_path.is_file():
        run_pretrain(config, args.workdir / "pretrain", resume=(args.workdir / "pretrain").exists(), verbose=2)
    pretrain_seconds = time.perf_counter() - started
    pretrained, info = load_model(model_path)
    keras.utils.set_random_seed(config.pretrain.seed)
    untrained = build_crnn(config.model, len(info.classes), config.features.n_mels, window_frames(config))

    train_paths, train_labels = bank_recordings(config, "train")
    eval_paths, eval_labels = bank_recordings(config, "eval")
    train_mels, eval_mels = logmels(config, train_paths), logmels(config, eval_paths)
    stats_train, stats_eval = statistics(train_mels), statistics(eval_mels)
    mean, std = stats_train.mean(axis=0), stats_train.std(axis=0) + 1e-6
    representations = {
        "log-mel statistics (128-d)": ((stats_train - mean) / std, (stats_eval - mean) / std),
        "CRNN, random weights": (model_embeddings(untrained, info, train_mels),
                                 model_embeddings(untrained, info, eval_mels)),
        "CRNN, self-supervised triplets": (model_embeddings(pretrained, info, train_mels),
                                           model_embeddings(pretrained, info, eval_mels)),
    }
    rows = {}
    for name, (train, test) in representations.items():
        qbe, qbe_classes = query_by_example_map(test, eval_labels)
        clf, _ = shallow_classifier_map(train, train_labels, test, eval_labels, "logistic", seed=0)
        rows[name] = {"qbe_map": qbe, "qbe_map_per_class": qbe_classes, "classifier_map": clf}
        slug = name.split(",")[-1].strip().split(" ")[0].replace("-", "_")
        tsne_png(test, eval_labels, args.workdir / f"tsne_{slug}.png", title=f"{name}: eval split")

    print(f"\nQuery-by-example and shallow-classifier mAP on the bank's eval split "
          f"({len(eval_paths)} recordings of {len(set(eval_labels))} classes, collections training never hears); "
          f"classifier trained on {len(train_paths)} train-split recordings\n")
    print("| representation | QbE mAP | classifier mAP |\n|---|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['qbe_map']:.3f} | {row['classifier_map']:.3f} |")
    history = (args.workdir / "pretrain" / "history.csv").read_text().splitlines()
    write_record(args.out, {"recipe": args.recipe, "overrides": args.overrides, "pretrain": dict(
        epochs=len(history) - 1, seconds=round(pretrain_seconds, 1), final_loss=history[-1].split(",")[1]),
        "eval_recordings": len(eval_paths), "train_recordings": len(train_paths), "results": rows,
        "versions": versions()})


if __name__ == "__main__":
    main()
