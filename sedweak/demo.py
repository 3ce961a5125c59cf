"""``sedweak demo``: the whole path on the embedded sound bank, offline, on a CPU.

1. synthesize multi-event soundscapes (train / valid / eval, disjoint source recordings);
2. train the fast CRNN on strong labels;
3. with ``with_weak_only``: train the same CRNN on weak (clip) labels only, the strong
   output on the clip label repeated on every frame (Adavanne & Virtanen's setting); a
   second training, so it doubles the demo's time and is off by default;
4. fit the MFCC + k-NN frame baseline (Pons & Favory);
5. evaluate them on the eval split (collections training never hears), and on the
   extra eval splits: ``eval_seen`` (unheard recordings of the collections training hears)
   and ``eval_remix`` (the unseen collections mixed another way), so the report shows what
   generalises; write report.md, metrics.json (eval), metrics_by_split.json, model.keras
   and an event-roll PNG.

Re-running the demo in the same folder reuses finished work (data, features,
completed trainings) and resumes an interrupted training.
"""

from __future__ import annotations

import shutil
import time
from importlib import resources
from pathlib import Path

from sedweak.config import Config, load_config
from sedweak.io_utils import atomic_write_json, atomic_write_text

SYSTEM_NOTES = {
    "crnn": "fast CRNN, strong labels",
    "crnn_weak_only": "same CRNN, clip labels only, repeated on every frame as strong targets",
    "mfcc_knn": "MFCC + k-NN per frame, Pons & Favory's baseline",
}


def demo_recipe() -> Path:
    """The demo's recipe, ``recipes/demo.yaml`` as shipped in the package (``sedweak.recipes``)."""
    return Path(str(resources.files("sedweak.recipes") / "demo.yaml"))


def demo_configs(workdir: Path, overrides: list[str], fast_dev_run: bool) -> tuple[Config, Config]:
    """The strong-label config and its weak-only twin, sharing one dataset folder."""
    common = [f"data.root={workdir / 'data'}", *overrides]
    if fast_dev_run:
        common.append("train.fast_dev_run=true")
    strong = load_config(demo_recipe(), common)
    weak = load_config(demo_recipe(), common + ["data.label_type=weak"])
    return strong, weak


# Report order of the eval splits and what each measures.
EVAL_SPLITS = {"eval_seen": "seen collections, unheard recordings",
               "eval": "unseen collections",
               "eval_remix": "unseen collections, another mix"}


def _knn_metrics(config: Config, data, info) -> dict[str, dict]:
    """The MFCC + k-NN baseline's metrics on each eval split present."""
    from sedweak.baselines import MfccKnn, predict_events
    from sedweak.training.targets import build_targets
    from sedweak.evaluation import score_events

    train = data.features["train"]
    model_frames = info.clip_frames // info.time_pooling
    strong, _ = build_targets(data.clips["train"], train.filenames, info.classes, model_frames,
                              info.model_frames_per_second)
    knn = MfccKnn(info.time_pooling).fit(train.features, strong, seed=config.train.seed)
    out = {}
    for split in EVAL_SPLITS:
        if split not in data.features:
            continue
        evaluation = data.features[split]
        events = predict_events(knn, evaluation.features, evaluation.filenames, info.classes,
                                info.model_frames_per_second, config.postprocess)
        reference = {n: data.clips[split].strong_reference[n] for n in evaluation.filenames}
        out[split] = score_events(reference, events, list(info.classes), config.evaluation)
    return out


def _event_roll(workdir: Path, data, model, info) -> Path:
    from sedweak.evaluation.split import detect_cached
    from sedweak.plots import event_roll

    evaluation = data.features["eval"]
    reference = data.clips["eval"].strong_reference
    # The eval clip with the most reference events makes the most telling picture.
    index = max(range(len(evaluation.filenames)), key=lambda i: len(reference[evaluation.filenames[i]]))
    name = evaluation.filenames[index]
    subset = type(evaluation)(evaluation.features[index:index + 1], (name,), ())
    events, _, _ = detect_cached(model, info, subset)
    return event_roll(workdir / "event_roll.png", evaluation.features[index], info.features.frames_per_second,
                      info.classes, {"reference": reference[name], "CRNN": events[name]}, title=f"eval/{name}")


def run_demo(workdir: Path, overrides: list[str] | None = None, fast_dev_run: bool = False,
             with_weak_only: bool = False) -> Path:
    """Run the demo in ``workdir``; returns the path of ``report.md``.

    ``with_weak_only`` adds the ``crnn_weak_only`` training (the strong/weak comparison).
    """
    from sedweak.datasets.prepare import prepare_data
    from sedweak.evaluation import markdown_table, per_class_markdown
    from sedweak.training import model_info, run

    workdir = Path(workdir)
    strong_config, weak_config = demo_configs(workdir, overrides or [], fast_dev_run)
    timings = {}
    start = time.perf_counter()
    data = prepare_data(strong_config, workdir)
    timings["data"] = time.perf_counter() - start
    by_split: dict[str, dict] = {split: {} for split in EVAL_SPLITS if split in data.features}
    results = {}
    trainings = [("crnn", strong_config)] + ([("crnn_weak_only", weak_config)] if with_weak_only else [])
    for system, config in trainings:
        start = time.perf_counter()
        results[system] = run(config, workdir / system, resume=True, data=data)
        for split, values in {"eval": results[system].metrics, **results[system].extra_metrics}.items():
            by_split[split][system] = values
        timings[system] = time.perf_counter() - start
    start = time.perf_counter()
    for split, values in _knn_metrics(strong_config, data, model_info(strong_config, data.classes)).items():
        by_split[split]["mfcc_knn"] = values
    timings["mfcc_knn"] = time.perf_counter() - start
    metrics = by_split["eval"]
    atomic_write_json(workdir / "metrics.json", metrics)
    atomic_write_json(workdir / "metrics_by_split.json", by_split)
    best = results["crnn"]
    for suffix in (".keras", ".json"):
        shutil.copyfile(best.model_path.with_suffix(suffix), workdir / f"model{suffix}")
    from sedweak.models.saving import load_model

    model, info = load_model(workdir / "model.keras")
    roll = _event_roll(workdir, data, model, info)
    report = _report(data, by_split, timings, results, roll, markdown_table, per_class_markdown)
    return atomic_write_text(workdir / "report.md", report)


def generalisation_table(by_split: dict[str, dict]) -> str:
    """One row per (system, eval split): segment / event F1, PSDS1 / PSDS2, tagging F1."""
    from sedweak.evaluation.report import cell

    columns = (("segment.f1", "Seg F1 %"), ("event.f1", "Event F1 %"), ("psds1", "PSDS1"), ("psds2", "PSDS2"),
               ("tagging.f1", "Tag F1 %"))
    lines = ["| System | Eval split | " + " | ".join(t for _, t in columns) + " |",
             "|---|---|" + "---:|" * len(columns)]
    systems = list(dict.fromkeys(s for values in by_split.values() for s in values))
    for system in systems:
        for split, what in EVAL_SPLITS.items():
            values = by_split.get(split, {}).get(system)
            if values is not None:
                lines.append(f"| {system} | {split} ({what}) | "
                             + " | ".join(cell(k, values.get(k, float("nan"))) for k, _ in columns) + " |")
    return "\n".join(lines) + "\n"


def _report(data, by_split, timings, results, roll, markdown_table, per_class_markdown) -> str:
    counts = {s: len(data.features[s].filenames) for s in data.features}
    metrics = by_split["eval"]
    lines = [
        "# sedweak demo",
        "",
        f"Soundscapes from the embedded sound bank: "
        + " / ".join(f"{counts[s]} {s}" for s in counts)
        + f" clips of 10 s, {len(data.classes)} classes ({', '.join(data.classes)}). "
        "Train and valid never share a recording with an eval split; `eval` mixes collections "
        "(the bank's source packages) that training never hears.",
        "",
        "Systems: " + ", ".join(f"`{s}` ({SYSTEM_NOTES[s]})" for s in metrics) + ". "
        "Segment-based metrics use 1 s segments; event-based a 0.2 s collar / 20 % of length (sed_eval); "
        "PSDS1 / PSDS2 are DCASE 2021-24's (sed_scores_eval, frame scores of the strong output)."
        + ("" if "crnn_weak_only" in metrics else
           " `sedweak demo --with-weak-only` adds the same CRNN trained on clip labels only (a second training)."),
        "",
        "## Unseen collections (eval)",
        "",
        markdown_table(metrics),
        "## Seen against unseen",
        "",
        "The gap between `eval_seen` and `eval` is what the model learnt of the recordings rather "
        "than of the sounds.",
        "",
        generalisation_table(by_split),
        "## Per class (crnn, eval)",
        "",
        per_class_markdown(metrics["crnn"]),
        "## Run",
        "",
        *(f"- {name}: {seconds:.0f} s" + (f", {results[name].epochs_run} epochs" if name in results else "")
          for name, seconds in timings.items()),
        f"- event roll: `{roll.name}`; best model: `model.keras` (+ `model.json`)",
    ]
    if data.failures():
        lines += ["", "Skipped clips:", *(f"- {n}: {why}" for n, why in data.failures())]
    return "\n".join(lines) + "\n"
