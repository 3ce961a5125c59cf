"""``sedweak demo``: the whole path on the embedded sound bank, offline, on a CPU.

1. synthesize multi-event soundscapes (train / valid / eval, disjoint source recordings);
2. train the fast CRNN on strong labels;
3. train the same CRNN on weak (clip) labels only, the strong output on the clip
   label repeated on every frame (Adavanne & Virtanen's setting);
4. fit the MFCC + k-NN frame baseline (Pons & Favory);
5. evaluate all three on the eval split; write report.md, metrics.json, model.keras
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

SYSTEMS = ("crnn", "crnn_weak_only", "mfcc_knn")


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


def _knn_metrics(config: Config, data, info) -> dict:
    from sedweak.baselines import MfccKnn, predict_events
    from sedweak.training.targets import build_targets
    from sedweak.evaluation import score_events

    train = data.features["train"]
    model_frames = info.clip_frames // info.time_pooling
    strong, _ = build_targets(data.clips["train"], train.filenames, info.classes, model_frames,
                              info.model_frames_per_second)
    knn = MfccKnn(info.time_pooling).fit(train.features, strong, seed=config.train.seed)
    evaluation = data.features["eval"]
    events = predict_events(knn, evaluation.features, evaluation.filenames, info.classes,
                            info.model_frames_per_second, config.postprocess)
    reference = {n: data.clips["eval"].strong_reference[n] for n in evaluation.filenames}
    return score_events(reference, events, list(info.classes), config.evaluation)


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


def run_demo(workdir: Path, overrides: list[str] | None = None, fast_dev_run: bool = False) -> Path:
    """Run the demo in ``workdir``; returns the path of ``report.md``."""
    from sedweak.datasets.prepare import prepare_data
    from sedweak.evaluation import markdown_table, per_class_markdown
    from sedweak.training import model_info, run

    workdir = Path(workdir)
    strong_config, weak_config = demo_configs(workdir, overrides or [], fast_dev_run)
    timings = {}
    start = time.perf_counter()
    data = prepare_data(strong_config, workdir)
    timings["data"] = time.perf_counter() - start
    metrics, results = {}, {}
    for system, config in (("crnn", strong_config), ("crnn_weak_only", weak_config)):
        start = time.perf_counter()
        results[system] = run(config, workdir / system, resume=True, data=data)
        metrics[system] = results[system].metrics
        timings[system] = time.perf_counter() - start
    start = time.perf_counter()
    metrics["mfcc_knn"] = _knn_metrics(strong_config, data, model_info(strong_config, data.classes))
    timings["mfcc_knn"] = time.perf_counter() - start
    atomic_write_json(workdir / "metrics.json", metrics)
    best = results["crnn"]
    for suffix in (".keras", ".json"):
        shutil.copyfile(best.model_path.with_suffix(suffix), workdir / f"model{suffix}")
    from sedweak.models.saving import load_model

    model, info = load_model(workdir / "model.keras")
    roll = _event_roll(workdir, data, model, info)
    report = _report(data, metrics, timings, results, roll, markdown_table, per_class_markdown)
    return atomic_write_text(workdir / "report.md", report)


def _report(data, metrics, timings, results, roll, markdown_table, per_class_markdown) -> str:
    counts = {s: len(data.features[s].filenames) for s in ("train", "valid", "eval")}
    lines = [
        "# sedweak demo",
        "",
        f"Soundscapes from the embedded sound bank: {counts['train']} train / {counts['valid']} valid / "
        f"{counts['eval']} eval clips of 10 s, {len(data.classes)} classes ({', '.join(data.classes)}); "
        "splits use disjoint source recordings.",
        "",
        "Systems: `crnn` (fast CRNN, strong labels), `crnn_weak_only` (same CRNN, clip labels only, "
        "repeated on every frame as strong targets), `mfcc_knn` (MFCC + k-NN per frame, Pons & Favory's baseline). "
        "Segment-based metrics use 1 s segments; event-based a 0.2 s collar / 20 % of length (sed_eval).",
        "",
        markdown_table(metrics),
        "## Per class (crnn)",
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
