"""``run(config, workdir)``: train the CRNN, keep the best checkpoint, evaluate it.

Workdir layout:
  config.yaml              the resolved config of this run
  checkpoints/             best.keras, last.keras (+ .json sidecars), state.json
  history.csv              one row per epoch (Keras CSVLogger)
  tensorboard/             TensorBoard logs
  model.keras, model.json  the best model, ready for ``sedweak predict``
  eval_events.tsv          detections on the eval split (DESED format)
  metrics.json             DCASE metrics on the eval split
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sedweak.config import Config, save_config
from sedweak.datasets.prepare import PreparedData, prepare_data
from sedweak.errors import DataError, UserError
from sedweak.io_utils import atomic_write_json
from sedweak.models.saving import ModelInfo, load_model, save_model
from sedweak.training.checkpoints import (
    ResumableCheckpoint,
    read_state,
    restore_seed_states,
)

log = logging.getLogger(__name__)


class WorkdirError(UserError, RuntimeError):
    """A workdir that would mix two runs."""


@dataclass(frozen=True)
class RunResult:
    workdir: Path
    model_path: Path
    metrics: dict
    epochs_run: int
    failures: tuple[tuple[str, str], ...]
    # Metrics of the extra eval splits (eval_seen, eval_remix) the data has, by split.
    extra_metrics: dict = field(default_factory=dict)


def model_info(config: Config, classes) -> ModelInfo:
    return ModelInfo(tuple(classes), config.features, config.postprocess,
                     config.model.time_pooling, config.data.clip_seconds)


def _batches(config: Config, data: PreparedData, split: str, info: ModelInfo, training: bool):
    from sedweak.training.batches import ClipBatches
    from sedweak.training.targets import build_targets

    cached = data.features[split]
    model_frames = info.clip_frames // info.time_pooling
    strong, weak = build_targets(data.clips[split], cached.filenames, info.classes, model_frames,
                                 info.model_frames_per_second, config.data.label_type,
                                 config.loss.weak_clip_strong_target)
    class_weights = None
    if training and config.train.class_weighting != "none":
        from sedweak.training.sampling import class_weights as weights_for

        class_weights = weights_for(weak, config.train.class_weighting)
    # cached.features is an array, or an h5-backed array-like streamed batch by batch (cache.in_memory_max_mb).
    options = dict(time_pooling=info.time_pooling, shuffle=training, augment=config.augment if training else None,
                   seed=config.train.seed, max_batches=2 if config.train.fast_dev_run else None,
                   sampling=config.train.sampling if training else "shuffle", class_weights=class_weights,
                   embedding_targets=config.loss.embedding_weight > 0)
    teacher = config.train.mean_teacher
    if training and teacher.enabled and "unlabelled" in data.features and teacher.unlabelled_per_batch:
        unlabelled = data.features["unlabelled"].features
        if len(unlabelled) == 0:
            raise DataError(f"{data.root}: the unlabelled split has no usable clips")
        options.update(unlabelled=unlabelled, unlabelled_per_batch=teacher.unlabelled_per_batch)
    if training and config.augment.dynamic_mixing:
        from sedweak.training.batches import DynamicBatches

        return DynamicBatches(dynamic_mixer(config, info), cached.features, strong, weak,
                              config.train.batch_size, **options)
    return ClipBatches(cached.features, strong, weak, config.train.batch_size, **options)


def dynamic_mixer(config: Config, info: ModelInfo):
    """The :class:`DynamicMixer` of a synth config: its bank's train split, its mixing settings."""
    from sedweak.soundbank import SoundBank
    from sedweak.synth import split_bank
    from sedweak.training.dynamic_mix import DynamicMixer

    synth = config.data.synth
    part = split_bank(SoundBank.open(config.data.soundbank), info.classes, synth.seed, synth.split_by)["train"]
    return DynamicMixer(part["pool"], part["backgrounds"], info.classes, synth, config.features,
                        config.data.clip_seconds, info.time_pooling, config.augment, seed=config.train.seed,
                        label_type=config.data.label_type,
                        weak_clip_strong_target=config.loss.weak_clip_strong_target)


def _learning_rate(config: Config, steps_per_epoch: int):
    import keras

    if config.train.learning_rate_schedule == "constant":
        return config.train.learning_rate
    return keras.optimizers.schedules.CosineDecay(config.train.learning_rate, decay_steps=max(
        1, config.train.epochs * steps_per_epoch), alpha=0.05)


def compile_model(model, config: Config, steps_per_epoch: int = 1) -> None:
    import keras

    from sedweak.losses import strong_weak_losses

    loss = config.loss
    losses, weights = strong_weak_losses(loss.strong_weight, loss.weak_weight, loss.embedding_weight,
                                         loss.embedding_margin, loss.embedding_mining)
    model.compile(optimizer=keras.optimizers.Adam(_learning_rate(config, steps_per_epoch)), loss=losses,
                  loss_weights=weights, jit_compile=config.train.jit_compile)


def model_for_run(config: Config, info: ModelInfo, checkpoints: Path, resume: bool, steps_per_epoch: int):
    """A fresh compiled model, or the last checkpoint's when resuming. Returns (model, state).

    With ``train.mean_teacher`` the model is a :class:`~sedweak.models.mean_teacher.MeanTeacher`
    (student + EMA teacher); :func:`fit` returns the plain CRNN it keeps.

    Under ``train.mixed_precision`` the layers are built (or loaded) with the mixed policy,
    except :data:`sedweak.training.distribute.FLOAT32_LAYERS`.
    """
    from sedweak.models.crnn import build_crnn
    from sedweak.training.distribute import dtype_policy, keep_float32

    state = read_state(checkpoints)
    if state is not None and not resume:
        raise WorkdirError(f"{checkpoints}: a previous run left checkpoints here; pass --resume to "
                           "continue it, or choose another --workdir")
    if state is not None:
        with dtype_policy(config.train.mixed_precision):
            model, _ = load_model(checkpoints / "last.keras", compile=True)
        if "seed_states" in state:  # checkpoints written before 2026-11-30 lack them: inexact resume
            restore_seed_states(model, state["seed_states"])
        log.info("resuming after epoch %d (best %s %.4f)", state["epoch"], state["monitor"], state["best"])
        return model, state
    with dtype_policy(config.train.mixed_precision) as policy:
        model = build_crnn(config.model, len(info.classes), config.features.n_mels, info.clip_frames)
        if config.train.init_from:
            from sedweak.training.pretrain import init_from

            init_from(model, config.train.init_from)
        if policy != "float32":
            log.info("dtype policy %s; float32 layers: %s", policy, keep_float32(model))
        if config.train.mean_teacher.enabled:  # the teacher copies the student's layer dtypes
            from sedweak.models.mean_teacher import wrap

            model = wrap(model, config.train.mean_teacher, steps_per_epoch)
    compile_model(model, config, steps_per_epoch)
    return model, None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and the backend; deterministic TF kernels under TensorFlow."""
    import keras

    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":  # JAX/torch runs need no TensorFlow
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def trim_history(path: Path, epochs: int) -> None:
    """Keep the header and the first ``epochs`` rows of ``history.csv`` (atomically)."""
    from sedweak.io_utils import atomic_write_text

    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    if len(lines) > epochs + 1:
        atomic_write_text(path, "".join(lines[:epochs + 1]))


def fit(config: Config, workdir: Path, data: PreparedData, resume: bool = False, verbose: int = 1):
    """Train on ``data`` (on ``train.strategy``'s replicas); returns (best model, info, epochs run)."""
    import keras

    from sedweak.training.distribute import tensorboard_available, training_scope
    from sedweak.training.input_pipeline import steady_prefetch

    seed_everything(config.train.seed)
    info = model_info(config, data.classes)
    checkpoints = workdir / "checkpoints"
    train_batches = _batches(config, data, "train", info, True)
    # The model is built, compiled and fitted on the replicas of train.strategy.
    with training_scope(config.train.strategy, config.train.devices), warnings.catch_warnings():
        # At loss.embedding_weight 0 the embedding head has no loss (no gradient reaches it).
        warnings.filterwarnings("ignore", message="Gradients do not exist for variables")
        model, state = model_for_run(config, info, checkpoints, resume, len(train_batches))
        initial_epoch = state["epoch"] if state else 0
        train_batches.set_epoch(initial_epoch)  # the batch order and augmentation of that epoch
        epochs = 1 if config.train.fast_dev_run else config.train.epochs
        if state is not None:
            trim_history(workdir / "history.csv", initial_epoch)
        # The history row is written before the checkpoint: a kill between the two leaves a row
        # that the resume trims, never a checkpointed epoch without its row.
        callbacks = [
            keras.callbacks.CSVLogger(str(workdir / "history.csv"), append=state is not None),
            ResumableCheckpoint(checkpoints, info, config.train.early_stopping_patience_epochs, state=state,
                                select_last=config.train.select_epoch == "last"),
        ] + ([keras.callbacks.TensorBoard(str(workdir / "tensorboard"), write_graph=False)]
             if tensorboard_available() else [])  # it writes through tensorflow.summary
        stopped_early = state is not None and state["wait"] >= config.train.early_stopping_patience_epochs
        if initial_epoch < epochs and not stopped_early:
            with steady_prefetch():
                model.fit(train_batches, validation_data=_batches(config, data, "valid", info, False),
                          epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose,
                          shuffle=False)  # ClipBatches orders the clips by (seed, epoch); Keras would
                # shuffle the batch order with the global NumPy RNG, which a resume cannot restore
    from sedweak.models.mean_teacher import unwrap

    best, _ = load_model(checkpoints / "best.keras")
    return unwrap(best, config.train.mean_teacher.keep), info, read_state(checkpoints)["epoch"]


def run(config: Config, workdir: str | Path, resume: bool = False, verbose: int = 1,
        data: PreparedData | None = None) -> RunResult:
    """Train, select the best epoch on the valid split, evaluate on eval, write artifacts
    (``task: waa``: one run of the weak-label embedding study, :mod:`sedweak.embeddings.waa`)."""
    if config.task == "waa":
        from sedweak.embeddings.waa import run_waa

        return run_waa(config, workdir, resume, verbose, data)
    from sedweak.evaluation.split import evaluate_split
    from sedweak.synth import EXTRA_EVAL_SPLITS
    from sedweak.training.distribute import backend, check_strategy, read_tf_config

    # A wrong strategy or TF_CONFIG fails now, not after minutes of data preparation.
    check_strategy(config.train.strategy, backend())
    if config.train.strategy == "multiworker":
        read_tf_config()
    workdir = Path(workdir)
    changes = check_workdir(config, workdir, resume)            # refuses before anything is written
    workdir.mkdir(parents=True, exist_ok=True)
    if changes:
        _record_changes(workdir, changes)
    save_config(config, workdir / "config.yaml")
    data = data or prepare_data(config, workdir, progress=verbose > 0)
    for split in ("train", "valid"):
        if len(data.features[split].filenames) == 0:
            raise DataError(f"{data.root}: no usable clips in split {split!r}")
    model, info, epochs_run = fit(config, workdir, data, resume, verbose)
    if config.postprocess.tune_thresholds != "none":
        info = tuned_info(model, info, data, config, workdir)
    model_path = save_model(model, workdir / "model.keras", info)
    metrics = evaluate_split(model, info, data.clips["eval"], data.features["eval"], config.evaluation,
                             out_tsv=workdir / "eval_events.tsv")
    atomic_write_json(workdir / "metrics.json", metrics)
    extra = {}
    for split in EXTRA_EVAL_SPLITS:
        if split in data.features and data.features[split].filenames:
            extra[split] = evaluate_split(model, info, data.clips[split], data.features[split], config.evaluation,
                                          out_tsv=workdir / f"{split}_events.tsv")
            atomic_write_json(workdir / f"metrics_{split}.json", extra[split])
    failures = tuple(data.failures())
    if failures:
        atomic_write_json(workdir / "skipped_clips.json", [list(f) for f in failures])
    return RunResult(workdir, model_path, metrics, epochs_run, failures, extra)


def tuned_info(model, info: ModelInfo, data: PreparedData, config: Config, workdir: Path) -> ModelInfo:
    """``info`` with per-class thresholds tuned on the valid split (``thresholds.json`` records
    them with each class's F1 curve); unchanged, with a warning, when valid has no strong labels."""
    import dataclasses

    from sedweak.evaluation.split import detect_cached
    from sedweak.evaluation.thresholds import tune_thresholds, with_thresholds

    _, probs, _ = detect_cached(model, info, data.features["valid"])
    reference = {n: ev for n, ev in data.clips["valid"].strong_reference.items() if n in probs}
    if not reference:
        warnings.warn("postprocess.tune_thresholds: the valid split has no strong labels; "
                      "the thresholds are not tuned", stacklevel=2)
        return info
    criterion = config.postprocess.tune_thresholds
    best, curves = tune_thresholds({n: probs[n] for n in reference}, reference, info.classes,
                                   info.model_frames_per_second, info.postprocess, config.evaluation, criterion)
    atomic_write_json(workdir / "thresholds.json", {"criterion": criterion, "split": "valid", "thresholds": best,
                                                    "f1_by_threshold": curves})
    return dataclasses.replace(info, postprocess=with_thresholds(info.postprocess, best))


# Sections a resumed run may change: they alter what is reported about the trained model,
# not the training (a resume with them changed re-evaluates and records the change).
EVALUATION_ONLY_SECTIONS = ("evaluation", "postprocess", "export", "cache", "pretrain")


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(saved: Config, new: Config) -> list[tuple[str, object, object]]:
    """(dotted key, saved value, new value) for every key that differs, sorted."""
    from sedweak.config import to_dict

    old_keys, new_keys = _flatten(to_dict(saved)), _flatten(to_dict(new))
    return [(k, old_keys.get(k), new_keys.get(k)) for k in sorted(set(old_keys) | set(new_keys))
            if old_keys.get(k) != new_keys.get(k)]


def listed_changes(changes: list[tuple[str, object, object]], limit: int = 8) -> str:
    """``key: saved -> new; ...`` for the first ``limit`` changes (:func:`config_changes`)."""
    return "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes[:limit])


def check_workdir(config: Config, workdir: Path, resume: bool) -> list[tuple[str, object, object]]:
    """What a run in ``workdir`` may do, decided before it writes anything.

    * A folder holding a previous run (``config.yaml`` or ``checkpoints/``) is refused
      without ``resume``: a second run never overwrites the first.
    * With ``resume``, the resolved config is compared with the saved one: a change to a
      key that alters training (features, data, augment, model, loss, train) is refused;
      changes confined to :data:`EVALUATION_ONLY_SECTIONS` are allowed and returned (the
      run records them in ``config_changes.json``).
    """
    from sedweak.config import load_config

    saved_path = workdir / "config.yaml"
    previous = saved_path.is_file() or (workdir / "checkpoints" / "state.json").is_file()
    if previous and not resume:
        raise WorkdirError(f"{workdir}: holds a previous run (config.yaml, checkpoints); pass --resume to "
                           "continue or re-evaluate it, or choose another --workdir (nothing was written)")
    if not resume or not saved_path.is_file():
        return []
    changes = config_changes(load_config(saved_path), config)
    training = [c for c in changes if c[0].split(".")[0] not in EVALUATION_ONLY_SECTIONS]
    if training:
        raise WorkdirError(f"{saved_path}: --resume with settings that change the training "
                           f"({listed_changes(training)}); "
                           "resume with the saved settings, or train in another --workdir (nothing was written)")
    return changes


def _record_changes(workdir: Path, changes) -> None:
    """Append the evaluation-only changes of this resume to ``config_changes.json``."""
    import json
    import time

    path = workdir / "config_changes.json"
    history = json.loads(path.read_text()) if path.is_file() else []
    history.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "changes": [{"key": k, "saved": a, "new": b} for k, a, b in changes]})
    atomic_write_json(path, history)


def count_weights(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))
