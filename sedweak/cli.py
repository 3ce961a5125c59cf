"""``sedweak`` command line: each command is a thin call into the library."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from sedweak.audio import AudioError
from sedweak.config import ConfigError
from sedweak.labels import LabelError

USER_ERRORS = (ConfigError, LabelError, AudioError, FileNotFoundError, ValueError, RuntimeError)


def _quiet_tensorflow() -> None:
    # Set by the CLI process only (never at import of the library): C++ log noise.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _fail(err: Exception) -> None:
    raise click.ClickException(str(err)) from None


@click.group()
@click.version_option(package_name="sedweak")
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
def main(verbose: bool) -> None:
    """Sound event detection from weakly labelled audio."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    _quiet_tensorflow()


def _config(recipe, overrides):
    from sedweak.config import load_config

    return load_config(recipe, overrides)


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--workdir", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a recipe key.")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in WORKDIR.")
@click.option("--fast-dev-run", is_flag=True, help="A few clips, two batches, one epoch.")
def train(recipe, workdir, overrides, resume, fast_dev_run):
    """Train the CRNN of RECIPE.yaml; best model in WORKDIR/model.keras."""
    from sedweak.evaluation import markdown_table
    from sedweak.training import run

    try:
        config = _config(recipe, list(overrides) + (["train.fast_dev_run=true"] if fast_dev_run else []))
        result = run(config, workdir, resume=resume)
    except USER_ERRORS as err:
        _fail(err)
    click.echo(markdown_table({"crnn": result.metrics}))
    for name, why in result.failures:
        click.echo(f"skipped {name}: {why}", err=True)
    click.echo(f"model: {result.model_path}\nmetrics: {Path(workdir) / 'metrics.json'}")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--recipe", type=click.Path(dir_okay=False), help="Recipe naming the dataset (default: the run's config.yaml).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE")
@click.option("--split", default="eval", show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False), help="Where data lives for synth recipes (default: the model's folder).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the metrics here.")
def evaluate(model, recipe, overrides, split, workdir, json_out):
    """Evaluate MODEL on a dataset split (tagging, segment- and event-based metrics)."""
    from sedweak.artifacts import load_model
    from sedweak.data_prep import prepare_data
    from sedweak.evaluate import evaluate_split
    from sedweak.evaluation import markdown_table, per_class_markdown
    from sedweak.io_utils import atomic_write_json

    try:
        recipe = recipe or Path(model).parent / "config.yaml"
        config = _config(recipe, overrides)
        keras_model, info = load_model(model)
        data = prepare_data(config, Path(workdir or Path(model).parent), splits=(split,))
        metrics = evaluate_split(keras_model, info, data.clips[split], data.features[split], config.evaluation)
    except USER_ERRORS as err:
        _fail(err)
    click.echo(markdown_table({Path(model).name: metrics}))
    click.echo(per_class_markdown(metrics))
    if json_out:
        atomic_write_json(Path(json_out), metrics)


@main.command()
@click.argument("reference", type=click.Path(dir_okay=False))
@click.argument("estimated", type=click.Path(dir_okay=False))
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the metrics as JSON.")
@click.option("--segment-seconds", default=1.0, show_default=True)
@click.option("--collar-seconds", default=0.2, show_default=True)
def score(reference, estimated, json_out, segment_seconds, collar_seconds):
    """Score ESTIMATED against REFERENCE (DESED strong TSVs) with sed_eval."""
    from sedweak.config import EvalConfig
    from sedweak.evaluation import markdown_table, per_class_markdown, score_tsv
    from sedweak.io_utils import atomic_write_json

    try:
        metrics = score_tsv(reference, estimated,
                            config=EvalConfig(segment_seconds=segment_seconds, t_collar_seconds=collar_seconds))
    except USER_ERRORS as err:
        _fail(err)
    click.echo(markdown_table({Path(estimated).name: metrics}))
    click.echo(per_class_markdown(metrics))
    if json_out:
        atomic_write_json(Path(json_out), metrics)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Events as a DESED strong TSV.")
@click.option("--frames", type=click.Path(dir_okay=False), help="Also write frame probabilities (HDF5).")
def predict(model, inputs, out, frames):
    """Detect events in audio files or folders of any length."""
    from sedweak.artifacts import load_model
    from sedweak.inference import audio_files, predict_files, save_frame_probabilities
    from sedweak.labels import write_strong_tsv

    try:
        keras_model, info = load_model(model)
        paths = audio_files(inputs)
        if not paths:
            raise FileNotFoundError(f"no audio files in {list(inputs)}")
        events, probs, failed = predict_files(keras_model, info, paths, progress=len(paths) > 1)
    except USER_ERRORS as err:
        _fail(err)
    for path, why in failed:
        click.echo(f"skipped {path}: {why}", err=True)
    if not events:
        raise click.ClickException("no file could be processed")
    write_strong_tsv(out, events)
    if frames:
        save_frame_probabilities(frames, probs, info)
    click.echo(f"{sum(len(e) for e in events.values())} events in {len(events)} files -> {out}")


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Dataset folder to write.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE")
def synth(recipe, out, overrides):
    """Synthesize soundscapes (audio + DESED TSVs) from RECIPE's sound bank."""
    from sedweak.data_prep import synthesize_if_needed

    try:
        config = _config(recipe, overrides)
        classes = synthesize_if_needed(config, Path(out))
    except USER_ERRORS as err:
        _fail(err)
    click.echo(f"{out}: train/valid/eval soundscapes with classes {', '.join(classes)}")


@main.command()
@click.option("--workdir", default="sedweak-demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a demo recipe key.")
@click.option("--fast-dev-run", is_flag=True, help="A tiny version of the demo, for smoke tests.")
def demo(workdir, overrides, fast_dev_run):
    """Offline demo: synthesize, train the CRNN and two baselines, evaluate, report."""
    from sedweak.demo import run_demo

    try:
        report = run_demo(Path(workdir), list(overrides), fast_dev_run=fast_dev_run)
    except USER_ERRORS as err:
        _fail(err)
    click.echo(report.read_text())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
