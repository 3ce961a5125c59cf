"""``sedweak`` command line: each command is a thin call into the library."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from sedweak_runtime.inputs import DuplicateKeyError

from sedweak.config import EXPORT_MODES
from sedweak.errors import UserError

# What a user can fix prints one line (``-v``: with its traceback); anything else is a bug
# in sedweak and prints its traceback (sedweak.errors).
USER_ERRORS = (UserError, DuplicateKeyError, FileNotFoundError, FileExistsError, IsADirectoryError, PermissionError)
_VERBOSE = False


def _quiet_tensorflow() -> None:
    # Set by the CLI process only (never at import of the library): C++ log noise.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _fail(err: Exception) -> None:
    """One line for a user error; with ``-v`` its traceback too."""
    if _VERBOSE:
        raise err
    raise click.ClickException(str(err)) from None


@click.group()
@click.version_option(package_name="sedweak")
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
def main(verbose: bool) -> None:
    """Sound event detection from weakly labelled audio."""
    global _VERBOSE
    _VERBOSE = verbose
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
@click.option("--init", "init_path", type=click.Path(dir_okay=False, exists=True),
              help="Start from the weights of this .keras model (e.g. `sedweak pretrain`): train.init_from.")
def train(recipe, workdir, overrides, resume, fast_dev_run, init_path):
    """Train the CRNN of RECIPE.yaml; best model in WORKDIR/model.keras."""
    from sedweak.evaluation import markdown_table
    from sedweak.training import run

    try:
        extra = (["train.fast_dev_run=true"] if fast_dev_run else []) + \
            ([f"train.init_from={Path(init_path).resolve()}"] if init_path else [])
        config = _config(recipe, list(overrides) + extra)
        result = run(config, workdir, resume=resume)
    except USER_ERRORS as err:
        _fail(err)
    if config.task == "waa":
        from sedweak.embeddings.waa_report import columns

        click.echo("\n".join(f"{title}: {100 * result.metrics[key]:.1f}" for key, title in columns(result.metrics)))
    else:
        click.echo(markdown_table({"crnn": result.metrics}))
    if result.failures:   # each was reported as it was skipped (data preparation): a count here
        click.echo(f"{len(result.failures)} clip(s) skipped, listed in {Path(workdir) / 'skipped_clips.json'}",
                   err=True)
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
    from sedweak.models.saving import load_model
    from sedweak.datasets.prepare import prepare_data
    from sedweak.evaluation.split import evaluate_split
    from sedweak.evaluation import markdown_table, per_class_markdown
    from sedweak.io_utils import atomic_write_json, check_writable

    try:
        if json_out:
            check_writable(json_out, "--json")
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
@click.argument("estimated", required=False, type=click.Path(dir_okay=False))
@click.option("--scores", "scores_dir", type=click.Path(file_okay=False),
              help="Folder of frame-score TSVs (`sedweak predict --scores`): adds PSDS1, PSDS2 and intersection F1.")
@click.option("--durations", type=click.Path(dir_okay=False),
              help="DESED durations TSV (filename, duration) for --scores (default: each score's last offset).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the metrics as JSON.")
@click.option("--segment-seconds", default=1.0, show_default=True)
@click.option("--collar-seconds", default=0.2, show_default=True)
@click.option("--threshold", default=0.5, show_default=True, help="Decision threshold of the intersection F1 (--scores).")
@click.option("--classes", help="Comma-separated class list (default: the reference's labels), e.g. when the "
                                "reference lacks a class the system may predict, or has no events at all.")
def score(reference, estimated, scores_dir, durations, json_out, segment_seconds, collar_seconds, threshold,
          classes):
    """Score ESTIMATED events (a DESED strong TSV, with sed_eval) and/or --scores frame scores
    (with sed_scores_eval) against REFERENCE."""
    from sedweak.config import EvalConfig
    from sedweak.evaluation import SCORE_KEYS, markdown_table, per_class_markdown, score_tsv
    from sedweak.evaluation.scores import score_files
    from sedweak.io_utils import atomic_write_json, check_writable

    try:
        if estimated is None and scores_dir is None:
            raise click.UsageError("give ESTIMATED (an events TSV), --scores DIR, or both")
        if json_out:
            check_writable(json_out, "--json")
        class_list = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
        if classes is not None and not class_list:
            raise click.UsageError("--classes: give at least one class name")
        metrics, name = {}, Path(estimated or scores_dir).name
        if estimated is not None:
            metrics = score_tsv(reference, estimated, classes=class_list,
                                config=EvalConfig(segment_seconds=segment_seconds, t_collar_seconds=collar_seconds))
        if scores_dir is not None:
            threshold_free = score_files(reference, scores_dir, class_list, durations, threshold)
            for label in threshold_free["classes_without_reference"]:
                click.echo(f"note: no reference event of {label!r}: left out of PSDS and intersection F1", err=True)
            per_class = metrics.get("per_class", {})
            metrics.update({key: threshold_free[key] for key in SCORE_KEYS})
            metrics["per_class"] = {c: {**per_class.get(c, {}), **v} for c, v in threshold_free["per_class"].items()}
    except USER_ERRORS as err:
        _fail(err)
    click.echo(markdown_table({name: metrics}, keys=None if estimated is not None else SCORE_KEYS))
    click.echo(per_class_markdown(metrics))
    if json_out:
        atomic_write_json(Path(json_out), metrics)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Events as a DESED strong TSV.")
@click.option("--frames", type=click.Path(dir_okay=False), help="Also write frame probabilities (HDF5).")
@click.option("--scores", "scores_dir", type=click.Path(file_okay=False),
              help="Also write frame scores, one sed_scores_eval TSV per file (for `sedweak score --scores`).")
@click.option("--strict", is_flag=True, help="Exit non-zero when any file was skipped (the TSV of the others is still written).")
def predict(model, inputs, out, frames, scores_dir, strict):
    """Detect events in audio files or folders of any length."""
    from sedweak.models.saving import load_model
    from sedweak.inference import keyed_audio_files, predict_files, save_frame_probabilities
    from sedweak.io_utils import check_writable, check_writable_folder
    from sedweak.labels import write_strong_tsv

    try:
        check_writable(out)
        if frames:
            check_writable(frames, "--frames")
        if scores_dir:
            check_writable_folder(scores_dir, "--scores")
        keras_model, info = load_model(model)
        items = keyed_audio_files(inputs)
        if not items:
            raise FileNotFoundError(f"no audio files in {list(inputs)}")
        paths = [path for path, _ in items]
        events, probs, failed = predict_files(keras_model, info, paths, progress=len(paths) > 1,
                                              keys=[key for _, key in items])
    except USER_ERRORS as err:
        _fail(err)
    for path, why in failed:
        click.echo(f"skipped {path}: {why}", err=True)
    if not events:
        raise click.ClickException("no file could be processed")
    write_strong_tsv(out, events)
    if frames:
        save_frame_probabilities(frames, probs, info)
    if scores_dir:
        from sedweak.evaluation.scores import write_scores

        write_scores(scores_dir, probs, info.classes, info.model_frames_per_second)
    click.echo(f"{sum(len(e) for e in events.values())} events in {len(events)} files -> {out}"
               + (f" ({len(failed)} skipped)" if failed else ""))
    if strict and failed:
        raise click.ClickException(f"--strict: {len(failed)} of {len(paths)} files skipped")


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--workdir", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a recipe key.")
@click.option("--audio", "folder", type=click.Path(file_okay=False, exists=True),
              help="Pre-train on every audio file under this folder (pretrain.source: folder).")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in WORKDIR.")
@click.option("--fast-dev-run", is_flag=True, help="Two batches of a few pairs, one epoch.")
def pretrain(recipe, workdir, overrides, folder, resume, fast_dev_run):
    """Self-supervised pre-training of RECIPE's CRNN (Jansen et al.'s triplets, no labels;
    pretrain.labelled_fraction mixes in pairs of same-class bank recordings)."""
    from sedweak.training.pretrain import run_pretrain

    try:
        extra = (["train.fast_dev_run=true"] if fast_dev_run else []) + \
            (["pretrain.source=folder", f"pretrain.folder={Path(folder).resolve()}"] if folder else [])
        path = run_pretrain(_config(recipe, list(overrides) + extra), workdir, resume=resume)
    except USER_ERRORS as err:
        _fail(err)
    click.echo(f"model: {path}\nfine-tune it: sedweak train {recipe} --workdir RUN --init {path}")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Embeddings as HDF5 (sedweak.embeddings.extract).")
@click.option("--hop", "hop_seconds", type=float, default=None,
              help="One vector per window of the model's clip length every HOP seconds (default: one per file).")
@click.option("--strict", is_flag=True, help="Exit non-zero when any file was skipped (the others are still written).")
def embed(model, inputs, out, hop_seconds, strict):
    """Embed audio files or folders: one vector per file, or per window with --hop."""
    from sedweak.embeddings.extract import embed_files, write_embeddings
    from sedweak.inference import keyed_audio_files
    from sedweak.io_utils import check_writable
    from sedweak.models.saving import load_model

    try:
        check_writable(out)
        if hop_seconds is not None and not hop_seconds > 0:
            raise click.BadParameter(f"must be > 0 seconds, got {hop_seconds}", param_hint="--hop")
        keras_model, info = load_model(model)
        items = keyed_audio_files(inputs)
        if not items:
            raise FileNotFoundError(f"no audio files in {list(inputs)}")
        embeddings, failed = embed_files(keras_model, info, items, hop_seconds, model_path=str(model),
                                         progress=len(items) > 1)
    except USER_ERRORS as err:
        _fail(err)
    for path, why in failed:
        click.echo(f"skipped {path}: {why}", err=True)
    if not len(embeddings):
        raise click.ClickException("no file could be embedded")
    write_embeddings(out, embeddings)
    click.echo(f"{len(embeddings)} vectors of {embeddings.vectors.shape[1]} from {len(set(embeddings.files))} files "
               f"-> {out}" + (f" ({len(failed)} skipped)" if failed else ""))
    if strict and failed:
        raise click.ClickException(f"--strict: {len(failed)} of {len(items)} files skipped")


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Dataset folder to write.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE")
def synth(recipe, out, overrides):
    """Synthesize soundscapes (audio + DESED TSVs) from RECIPE's sound bank."""
    from sedweak.datasets.prepare import synthesize_if_needed

    try:
        config = _config(recipe, overrides)
        classes = synthesize_if_needed(config, Path(out))
    except USER_ERRORS as err:
        _fail(err)
    from sedweak.datasets.prepare import dataset_splits

    click.echo(f"{out}: {'/'.join(dataset_splits(config))} soundscapes with classes {', '.join(classes)}")


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--workdir", required=True, type=click.Path(file_okay=False), help="Sweep folder (runs, data, tables).")
@click.option("--grid", "grids", multiple=True, metavar="KEY=V1,V2,...",
              help="Values of a key; repeat for the cartesian product.")
@click.option("--pairs", metavar="K=V,K=V;K=V,...", help="Explicit points, ';'-separated.")
@click.option("--paper-pairs", is_flag=True, help="The 7 (strong, weak) loss weights of Adavanne & Virtanen.")
@click.option("--seeds", default=1, show_default=True, type=click.IntRange(min=1), help="train.seed = 0..SEEDS-1.")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1),
              help="Parallel worker processes (each gets cpu_count // JOBS TensorFlow threads).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a recipe key.")
@click.option("--fast-dev-run", is_flag=True, help="A few clips, two batches, one epoch per run.")
def sweep(recipe, workdir, grids, pairs, paper_pairs, seeds, jobs, overrides, fast_dev_run):
    """Train RECIPE at every point x seed; table of mean ± 95 % CI per point."""
    from sedweak.training.sweep import (
        describe,
        points_from_options,
        run_sweep,
        summarize,
        write_outputs,
    )

    try:
        points = points_from_options(grids, pairs, paper_pairs)
        results = run_sweep(recipe, workdir, points, seeds, jobs, list(overrides), fast_dev_run,
                            progress=lambda record: click.echo(describe(record), err=True))
        table = write_outputs(workdir, results, summarize(results))
    except USER_ERRORS as err:
        _fail(err)
    click.echo(table)
    failed = [r for r in results if r["status"] == "failed"]
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(results)} runs failed; errors in "
                                   f"{Path(workdir) / 'sweep_results.json'}")


@main.command()
@click.option("--workdir", default="sedweak-demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a demo recipe key.")
@click.option("--fast-dev-run", is_flag=True, help="A tiny version of the demo, for smoke tests.")
@click.option("--with-weak-only", is_flag=True,
              help="Also train the CRNN on clip labels only (crnn_weak_only): a second training.")
def demo(workdir, overrides, fast_dev_run, with_weak_only):
    """Offline demo: synthesize, train the CRNN and the MFCC + k-NN baseline, evaluate, report."""
    from sedweak.demo import run_demo

    try:
        report = run_demo(Path(workdir), list(overrides), fast_dev_run=fast_dev_run, with_weak_only=with_weak_only)
    except USER_ERRORS as err:
        _fail(err)
    click.echo(report.read_text())


@main.group(invoke_without_command=True)
@click.pass_context
def recipes(ctx):
    """List the shipped recipes (`sedweak recipes copy NAME DIR` starts your own)."""
    if ctx.invoked_subcommand is not None:
        return
    from sedweak.recipes import recipe_dir, recipe_names, recipe_summary

    width = max(map(len, recipe_names()))
    for name in recipe_names():
        click.echo(f"{name:<{width}}  {recipe_summary(name)}")
    click.echo(f"\n(in {recipe_dir()}; run one with `sedweak train $(sedweak recipes path NAME) --workdir DIR`)")


@recipes.command("copy")
@click.argument("name")
@click.argument("folder", type=click.Path(file_okay=False))
def recipes_copy(name, folder):
    """Copy recipe NAME into FOLDER, to edit and run as your own."""
    from sedweak.recipes import copy_recipe

    try:
        click.echo(copy_recipe(name, folder))
    except USER_ERRORS as err:
        _fail(err)


@recipes.command("path")
@click.argument("name")
def recipes_path(name):
    """Print the path of the shipped recipe NAME."""
    from sedweak.recipes import recipe_path

    try:
        click.echo(recipe_path(name))
    except USER_ERRORS as err:
        _fail(err)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--class", "class_name", required=True, help="Class to explain (one of the model's classes).")
@click.option("--method", type=click.Choice(["gradient", "smoothgrad", "integrated-gradients"]),
              default="gradient", show_default=True)
@click.option("--out-dir", default="saliency", show_default=True, type=click.Path(file_okay=False))
@click.option("--event-frames", type=click.Choice(["detected", "all"]), default="detected", show_default=True,
              help="Strong output summed over the detected events of the class (all frames if none), or all frames.")
@click.option("--reference", type=click.Path(dir_okay=False), help="DESED strong TSV: draw the class's reference events.")
@click.option("--samples", default=16, show_default=True, help="SmoothGrad: noisy copies.")
@click.option("--noise-fraction", default=0.1, show_default=True, help="SmoothGrad: noise sd / log-mel range.")
@click.option("--steps", default=32, show_default=True, help="Integrated gradients: path steps.")
@click.option("--strict", is_flag=True, help="Exit non-zero when any file was skipped.")
def saliency(model, inputs, class_name, method, out_dir, event_frames, reference, samples, noise_fraction, steps,
             strict):
    """Saliency maps of a class's strong and weak outputs: a PNG + NPZ per audio file."""
    from sedweak.models.saving import load_model
    from sedweak.inference import audio_files
    from sedweak.labels import read_strong_tsv
    from sedweak.saliency import SaliencyOptions, saliency_for_files

    try:
        keras_model, info = load_model(model)
        paths = audio_files(inputs)
        if not paths:
            raise FileNotFoundError(f"no audio files in {list(inputs)}")
        written, failed = saliency_for_files(
            keras_model, info, paths, class_name, out_dir, method, event_frames,
            SaliencyOptions(samples=samples, noise_fraction=noise_fraction, steps=steps),
            read_strong_tsv(reference) if reference else None)
    except USER_ERRORS as err:
        _fail(err)
    for path, why in failed:
        click.echo(f"skipped {path}: {why}", err=True)
    if not written:
        raise click.ClickException("no file could be processed")
    for png, npz in written:
        click.echo(f"{png}\n{npz}")
    if strict and failed:
        raise click.ClickException(f"--strict: {len(failed)} of {len(paths)} files skipped")


@main.command()
@click.argument("model", type=click.Path(exists=True))
@click.option("--out", type=click.Path(dir_okay=False),
              help="TFLite file (sidecar OUT.json beside it); default: RUN_DIR/model.tflite for a run folder.")
@click.option("--mode", type=click.Choice(EXPORT_MODES), default=None,
              help="float16: float16 weights; dynamic: int8 weights, dynamic-range activations; int8: "
                   "full-integer (staged unless --streaming; calibrated); int16x8: int16 activations, "
                   "--streaming only.  [recipe export.mode, else float32]")
@click.option("--staged", is_flag=True,
              help="Whole clip as loop-free stages (conv, GRU chunks, head): exact, the int8 route.  [int8 default]")
@click.option("--streaming", is_flag=True, help="The chunk step: feature chunk + GRU states -> outputs + states.")
@click.option("--whole-clip", is_flag=True, help="One signature, the GRU as a WHILE loop (float modes).  [float default]")
@click.option("--waveform-input/--logmel-input", default=None,
              help="Input (1, clip_samples) with the log-mel front end in the graph, kept float32.")
@click.option("--calibration", help="int8: 'train' (the run's training split) or a folder of audio files "
                                    "(a run's config.yaml works too).")
@click.option("--full-integer/--float-io", default=None, help="int8 inputs / outputs too (scale and zero point in the sidecar).")
@click.option("--gru-steps", type=int, help="Staged: model frames per GRU call (more: larger file, fewer calls).")
@click.option("--chunk-frames", type=int, help="Streaming: feature frames per step (a multiple of the time pooling).")
@click.option("--lookahead-frames", type=int,
              help="Streaming: frames past each chunk a bidirectional GRU's backward direction reads (adds latency).")
@click.option("--check/--no-check", default=None,
              help="Compare with the Keras model on the check inputs within the mode's tolerance (a smoke run "
                   "on silence, extremes and real clips always happens).  [recipe export.check, else on]")
@click.option("--with-embedding/--without-embedding", default=None,
              help="Keep the model's L2-normalised clip embedding in the file: sedweak-detect --embeddings "
                   "returns one unit vector per file.  [recipe export.with_embedding, else off]")
def export(model, out, mode, staged, streaming, whole_clip, waveform_input, calibration, full_integer, gru_steps, chunk_frames,
           lookahead_frames, check, with_embedding):
    """Convert MODEL (a .keras file, or a run folder: its model.keras and the export section of its
    config.yaml) to a batch-1 TFLite file with builtin ops only, checked before it is written.
    An embedding-only model (a `task: waa` run's E) needs --with-embedding: its file gives the
    clip embedding alone (whole-clip, int8 too)."""
    import dataclasses

    from sedweak.models.saving import load_model
    from sedweak.config import ExportConfig
    from sedweak.export import export_model
    from sedweak.export.graph import embedding_only
    from sedweak.io_utils import check_writable

    try:
        graphs = [name for name, on in (("staged", staged), ("streaming", streaming), ("whole_clip", whole_clip)) if on]
        if len(graphs) > 1:
            raise click.UsageError(f"--{' and --'.join(g.replace('_', '-') for g in graphs)} are different exports: "
                                   "choose one")
        graph = graphs[0] if graphs else None
        model_path, run_config, settings = _export_source(Path(model))
        flags = {"mode": mode, "graph": graph, "waveform_input": waveform_input, "calibration": calibration,
                 "full_integer": full_integer, "gru_steps": gru_steps, "chunk_frames": chunk_frames,
                 "lookahead_frames": lookahead_frames, "check": check, "with_embedding": with_embedding}
        settings = ExportConfig(**{**dataclasses.asdict(settings), **{k: v for k, v in flags.items() if v is not None}})
        if settings.calibration.endswith((".yaml", ".yml")):
            run_config, settings = Path(settings.calibration), dataclasses.replace(settings, calibration="train")
        out = check_writable(Path(out) if out else model_path.with_suffix(".tflite"))
        keras_model, info = load_model(model_path)
        path, report = export_model(keras_model, info, out, settings, run_config, source=str(model_path))
    except USER_ERRORS as err:
        _fail(err)
    graph = report.graph or settings.resolved_graph
    embedding = (", the clip embedding alone" if embedding_only(keras_model)
                 else ", with the clip embedding" if settings.with_embedding else "")
    click.echo(f"{path}: {report.size_bytes / 1e3:.1f} kB, {settings.mode}"
               f"{' full-integer' if settings.full_integer else ''}, {graph.replace('_', '-')}"
               f"{f' ({settings.gru_steps} GRU steps per call)' if graph == 'staged' else ''}"
               f"{f' ({settings.chunk_frames}-frame chunks)' if graph == 'streaming' else ''}, "
               f"{'waveform' if settings.waveform_input else 'log-mel'} input{embedding}, builtin ops only")
    click.echo("ops: " + ", ".join(f"{name} x{n}" for name, n in report.ops.items()))
    click.echo(f"ran on {len(report.inputs)} check inputs (silence, -80 dBFS and clipped noise, 0.3 s, 65 s, "
               f"{len(report.inputs) - 5} sound-bank clips) without a crash")
    if report.max_abs_diff:
        click.echo("max |tflite - keras|: " + ", ".join(f"{k} {v:.2e}" for k, v in report.max_abs_diff.items())
                   + f" (tolerance {report.tolerance:g})")
    if report.min_cosine:
        click.echo("min cosine(tflite, keras): " + ", ".join(f"{k} {v:.6f}" for k, v in report.min_cosine.items())
                   + f" (tolerance {report.cosine_tolerance:g})")


def _export_source(path: Path):
    """A .keras file or a run folder -> (model path, the run's config.yaml or None, export settings)."""
    from sedweak.config import ExportConfig, load_config

    model_path = path / "model.keras" if path.is_dir() else path
    if not model_path.is_file():
        raise FileNotFoundError(f"{path}: no model.keras in this run folder")
    run_config = model_path.parent / "config.yaml"
    if not run_config.is_file():
        return model_path, None, ExportConfig()
    return model_path, run_config, load_config(run_config).export if path.is_dir() else ExportConfig()


def _sizes_option(ctx, param, value):
    """``--n 1,2,5,all`` -> (1, 2, 5, None); None when not given (the defaults, pruned)."""
    if value is None:
        return None
    try:
        sizes = tuple(None if part.strip() == "all" else int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected numbers or 'all' separated by commas, got {value!r}") from None
    if any(n is not None and n < 1 for n in sizes):
        raise click.BadParameter(f"each n must be >= 1, got {value!r}")
    return sizes


def _labelled_keys(table):
    """``keep(key)`` accepting the files ``table`` labels (by key, or by file name)."""
    from pathlib import PurePosixPath

    names = set(table.files) | {PurePosixPath(f).name for f in table.files}
    return lambda key: key in names or PurePosixPath(key).name in names


@main.command()
@click.argument("source")
@click.argument("audio", nargs=-1, type=click.Path(exists=True))
@click.option("--labels", "labels_path", required=True, type=click.Path(exists=True),
              help="CSV file,label[,fold], an UrbanSound8K metadata CSV, or a folder of class-named subfolders.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Report folder: transfer.md, transfer.json, learning_curve.png.")
@click.option("--classifier", "classifiers", multiple=True, type=click.Choice(["logistic", "svm", "knn", "mlp"]),
              help="Repeat to choose several.  [all four]")
@click.option("--n", "sizes", callback=_sizes_option, default=None, metavar="N,N,...",
              help="Labelled examples per class ('all': every one); a class too small for one is an error.  "
                   "[1,2,5,10,20,all, those the data allow]")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Seeded draws of the n examples per split.")
@click.option("--folds", "stratified_folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="Stratified k-fold when the labels have no fold column.")
@click.option("--seed", type=int, default=0, show_default=True)
def transfer(source, audio, labels_path, out, classifiers, sizes, repeats, stratified_folds, seed):
    """Learning curves of scikit-learn classifiers on SOURCE's vectors of the labelled files.

    SOURCE: an embeddings .h5 from `sedweak embed`, a .keras model with an embedding output,
    or `mfcc` (MFCC statistics); the last two read AUDIO files or folders (default: the
    --labels folder)."""
    from sedweak.collections.labels import read_labels
    from sedweak.collections.transfer import TransferSettings, run_transfer
    from sedweak.collections.transfer_report import write_transfer_report
    from sedweak.collections.vectors import file_vectors, is_embeddings_file
    from sedweak.io_utils import check_writable_folder

    try:
        check_writable_folder(out, "--out")
        settings = TransferSettings(**{k: v for k, v in {
            "classifiers": classifiers or None, "examples_per_class": sizes, "repeats": repeats,
            "stratified_folds": stratified_folds, "seed": seed}.items() if v is not None})
        table = read_labels(labels_path)
        if not audio and not is_embeddings_file(source) and Path(labels_path).is_dir():
            audio = (labels_path,)
        vectors = file_vectors(source, audio, keep=_labelled_keys(table), progress=True)
        result = run_transfer(vectors, table, settings, strict_sizes=sizes is not None)
        paths = write_transfer_report(out, result)
    except USER_ERRORS as err:
        _fail(err)
    for path, why in result.skipped:
        click.echo(f"skipped {path}: {why}", err=True)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    click.echo("\n".join(line for line in paths["markdown"].read_text().splitlines() if line.startswith("|")))
    click.echo(f"report: {paths['markdown']}, {paths['json'].name}, {paths['png'].name}")


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--model", default=None, help="A .keras model with an embedding output, or 'mfcc' (MFCC "
                                            "statistics). Not with an embeddings .h5 input.")
@click.option("-k", "clusters", default="auto", show_default=True,
              help="Number of clusters, or 'auto': the best silhouette over 2..min(20, files - 1).")
@click.option("--method", type=click.Choice(["kmeans", "agglomerative"]), default="kmeans", show_default=True)
@click.option("--representatives", type=click.IntRange(min=1), default=5, show_default=True,
              help="Files listed per cluster, closest to its centroid first.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Report folder: clusters.md, clusters.json, clusters.csv, map.png.")
def cluster(inputs, model, clusters, method, representatives, seed, out):
    """Group audio files (folders) by similarity of their embeddings, or an embeddings .h5."""
    from sedweak.collections.cluster import ClusterSettings, cluster_vectors, write_cluster_report
    from sedweak.collections.vectors import file_vectors, is_embeddings_file
    from sedweak.io_utils import check_writable_folder

    if clusters != "auto" and not (clusters.isdigit() and int(clusters) >= 1):
        raise click.BadParameter(f"expected 'auto' or a whole number >= 1, got {clusters!r}", param_hint="-k")
    try:
        check_writable_folder(out, "--out")
        settings = ClusterSettings(method, None if clusters == "auto" else int(clusters),
                                   representatives_per_cluster=representatives, seed=seed)
        embedded = len(inputs) == 1 and is_embeddings_file(inputs[0])
        if embedded == (model is not None):
            raise click.UsageError("give audio with --model, or a single embeddings .h5 without it")
        vectors = file_vectors(inputs[0], ()) if embedded else file_vectors(model, inputs, progress=True)
        x = vectors.for_distances()
        clustering = cluster_vectors(x, settings)
        paths = write_cluster_report(out, clustering, x, vectors.files, vectors.source, vectors.skipped)
    except USER_ERRORS as err:
        _fail(err)
    for path, why in vectors.skipped:
        click.echo(f"skipped {path}: {why}", err=True)
    sizes = [int((clustering.assignments == c).sum()) for c in range(clustering.clusters)]
    click.echo(f"{len(vectors)} files in {clustering.clusters} clusters (sizes {', '.join(map(str, sizes))})"
               + (f", {len(vectors.skipped)} skipped" if vectors.skipped else "") + f" -> {paths['markdown']}")


@main.command("index")
@click.argument("audio_dir", type=click.Path(file_okay=False))
@click.option("--model", required=True, type=click.Path(dir_okay=False), help="A .keras model with an `embedding` output.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Index folder: created, or brought up to date when it exists (sedweak.collections.index).")
@click.option("--hop", "hop_seconds", type=float, default=None,
              help="Seconds between window starts (default: half the model's clip; fixed once the index exists).")
@click.option("--strict", is_flag=True, help="Exit non-zero when any file failed (the others are still indexed).")
def index_command(audio_dir, model, out, hop_seconds, strict):
    """Index every window of the audio files under AUDIO_DIR; rerun to embed only new or changed files."""
    from sedweak.collections.index import update_index
    from sedweak.io_utils import check_writable_folder

    try:
        check_writable_folder(out, "--out")
        if hop_seconds is not None and not hop_seconds > 0:
            raise click.BadParameter(f"must be > 0 seconds, got {hop_seconds}", param_hint="--hop")
        report = update_index(audio_dir, out, model, hop_seconds, progress=True)
    except USER_ERRORS as err:
        _fail(err)
    for key, why in report.failed:
        click.echo(f"skipped {key}: {why}", err=True)
    click.echo(f"{out}: {report.rows} windows in {report.shards} shards; embedded {len(report.embedded)} files, "
               f"kept {report.unchanged}, removed {len(report.removed)}"
               + (f", {len(report.failed)} failed (retried on the next run)" if report.failed else ""))
    if strict and report.failed:
        raise click.ClickException(f"--strict: {len(report.failed)} files failed")


@main.command("search")
@click.argument("query", type=click.Path(exists=True, dir_okay=False))
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False), help="Folder of `sedweak index`.")
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(min=1), help="Matches to return.")
@click.option("--per-file", is_flag=True, help="Keep each file's best window only.")
@click.option("--backend", default="auto", show_default=True, type=click.Choice(["auto", "exact", "faiss", "hnsw"]),
              help="exact (numpy), faiss (IVF) or hnsw (faiss graph); auto: exact up to 200k windows.")
@click.option("--query-windows", default="mean", show_default=True, type=click.Choice(["mean", "each"]),
              help="A long query: one vector (mean of its windows) or every window (a match's best).")
@click.option("--model", type=click.Path(dir_okay=False), help="The index's model at another path (same SHA-256).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the matches as JSON.")
def search_command(query, index_dir, k, per_file, backend, query_windows, model, json_out):
    """The K windows of the index most like QUERY (cosine of the index model's embeddings)."""
    from sedweak.collections.index import IndexFileError, load_index
    from sedweak.collections.search import check_index_model, embed_query, make_backend, matches_json, top_matches
    from sedweak.io_utils import atomic_write_json, check_writable
    from sedweak.models.saving import ModelFileError, load_model

    try:
        if json_out:
            check_writable(json_out, "--json")
        index = load_index(index_dir)
        if not len(index):
            raise IndexFileError(f"{index_dir}: no window indexed (every file failed?)")
        model_path = Path(model or index.manifest.model.path)
        if not model_path.is_file():
            raise ModelFileError(f"{model_path}: the index's model is not there; give its new path with --model")
        check_index_model(model_path, index)
        keras_model, info = load_model(model_path)
        queries = embed_query(keras_model, info, query, index.manifest.hop_seconds, query_windows)
        backend, searcher = make_backend(index, backend, index_dir=index_dir)
        matches = top_matches(index, searcher, queries, k, per_file)
    except USER_ERRORS as err:
        _fail(err)
    click.echo(f"{'rank':>4}  {'score':>6}  {'start_s':>8}  {'end_s':>8}  file")
    for rank, match in enumerate(matches, 1):
        click.echo(f"{rank:>4}  {match.score:6.3f}  {match.start_seconds:8.2f}  {match.end_seconds:8.2f}  {match.file}")
    if json_out:
        atomic_write_json(Path(json_out), matches_json(query, index, backend, k, per_file, query_windows, matches))
        click.echo(f"-> {json_out}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
