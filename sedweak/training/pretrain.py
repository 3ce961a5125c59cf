"""``sedweak pretrain RECIPE``: the recipe's CRNN trained without labels on Jansen et al.'s
self-supervised triplets (:mod:`sedweak.embeddings.self_supervised`), then used to start a
detector: ``sedweak train RECIPE --init WORKDIR/model.keras`` (``train.init_from``).

The CRNN takes ``pretrain.window_seconds`` windows here; every layer but the input length
is the one ``sedweak train`` builds, so convolutions, recurrences and the embedding head
carry over by name (:func:`init_from`). Only the embedding output has a loss.
``pretrain.labelled_fraction`` > 0 mixes labelled pairs into every batch: two train-split
recordings of one class, by the bank's manifest (:func:`source_classes`).

Workdir: ``config.yaml``, ``checkpoints/`` (last / best ``.keras`` + ``state.json`` after
every epoch: a killed run resumes with ``--resume``), ``history.csv``, ``sources.json``
(the recordings used, and those skipped with the reason), ``model.keras`` + sidecar.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from sedweak.config import Config, load_config, save_config
from sedweak.errors import DataError, UserError
from sedweak.io_utils import atomic_write_json
from sedweak.training.input_pipeline import steady_prefetch

log = logging.getLogger(__name__)


def source_files(config: Config) -> list[Path]:
    """The recordings ``pretrain.source`` names: the bank's train split (events and
    backgrounds, never valid or eval recordings) or every audio file under the folder."""
    if config.pretrain.source == "folder":
        from sedweak.inference import audio_files

        folder = Path(config.pretrain.folder)
        if not folder.is_dir():
            raise DataError(f"{folder}: pretrain.folder is not a folder")
        files = audio_files([folder])
        if not files:
            raise DataError(f"{folder}: no audio files to pre-train on")
        return files
    from sedweak.soundbank import SoundBank
    from sedweak.synth import split_bank

    bank = SoundBank.open(config.data.soundbank)
    classes = list(config.data.classes) or bank.foreground_classes
    train = split_bank(bank, classes, config.data.synth.seed, config.data.synth.split_by)["train"]
    clips = [c for group in train["pool"].values() for c in group] + list(train["backgrounds"])
    return sorted({c.path for c in clips})


def source_classes(config: Config, files: list[Path]) -> list[str | None]:
    """The class of each of ``files`` by the bank's manifest: a foreground recording's label,
    None for a background (or a file the manifest does not list as foreground)."""
    from sedweak.soundbank import SoundBank

    foreground = {c.path: c.label for c in SoundBank.open(config.data.soundbank).clips if c.role == "foreground"}
    return [foreground.get(path) for path in files]


def source_logmels(config: Config, files: list[Path], progress: bool = False
                   ) -> tuple[list[np.ndarray], list[tuple[str, str]]]:
    """Log-mels of ``files``; a file that cannot be read (or shorter than a hop) is skipped and reported."""
    from sedweak.features import logmel_file

    out, failed = [], []
    iterator = files
    if progress:
        from tqdm import tqdm

        iterator = tqdm(files, desc="log-mel", unit="file")
    for path in iterator:
        try:
            out.append(logmel_file(path, config.features))
        except UserError as err:
            failed.append((str(path), str(err)))
    return out, failed


def triplet_batches(config: Config, sources: list[np.ndarray], labels: list[str | None] | None = None):
    """The pre-training batches of ``sources`` (log-mels); ``labels``: their classes, for
    ``pretrain.labelled_fraction`` > 0 (:func:`source_classes`)."""
    from sedweak.embeddings.self_supervised import SelfSupervisedTriplets

    p, fps = config.pretrain, config.features.frames_per_second
    try:
        return SelfSupervisedTriplets(
            sources, window_frames=window_frames(config),
            pairs_per_batch=min(4, p.pairs_per_batch) if config.train.fast_dev_run else p.pairs_per_batch,
            batches_per_epoch=2 if config.train.fast_dev_run else p.batches_per_epoch, methods=p.methods,
            seed=p.seed, noise_snr_db=(p.noise_snr_min_db, p.noise_snr_max_db),
            freq_shift_bands_max=p.freq_shift_bands_max, mix_gain_db=(p.mix_gain_min_db, p.mix_gain_max_db),
            proximity_frames=int(round(p.proximity_seconds * fps)),
            floor_db=float(10.0 * np.log10(config.features.amin_power)),
            source_labels=labels, labelled_fraction=p.labelled_fraction,
            view_gain_db_max=p.view_gain_db_max, view_tilt_db_max=p.view_tilt_db_max)
    except DataError as err:   # the labelled pairs' classes: name the bank and the setting
        raise DataError(f"{config.data.soundbank} (train split): pretrain.labelled_fraction="
                        f"{p.labelled_fraction}: {err}") from None


def window_frames(config: Config) -> int:
    """Frames per pre-training window, a multiple of the model's time pooling."""
    pooling = config.model.time_pooling
    frames = int(round(config.pretrain.window_seconds * config.features.frames_per_second))
    return max(pooling, frames // pooling * pooling)


def compile_pretraining(model, config: Config) -> None:
    import keras

    from sedweak.embeddings.losses import TripletLoss

    model.compile(optimizer=keras.optimizers.Adam(config.pretrain.learning_rate),
                  loss={"strong": None, "weak": None,
                        "embedding": TripletLoss(config.pretrain.margin, config.pretrain.mining)},
                  jit_compile=config.train.jit_compile)


def run_pretrain(config: Config, workdir: str | Path, resume: bool = False, verbose: int = 1) -> Path:
    """Pre-train the recipe's CRNN; returns the path of ``model.keras``."""
    import keras

    from sedweak.models.crnn import build_crnn
    from sedweak.models.saving import ModelInfo, load_model, save_model
    from sedweak.training.checkpoints import ResumableCheckpoint, read_state, restore_seed_states
    from sedweak.training.trainer import WorkdirError, seed_everything, trim_history

    workdir = Path(workdir)
    checkpoints = workdir / "checkpoints"
    state = read_state(checkpoints)
    if (state is not None or (workdir / "config.yaml").is_file()) and not resume:
        raise WorkdirError(f"{workdir}: holds a previous run; pass --resume to continue it, or choose another "
                           "--workdir (nothing was written)")
    if resume and (workdir / "config.yaml").is_file():
        _check_same_pretraining(load_config(workdir / "config.yaml"), config, workdir)
    files = source_files(config)
    workdir.mkdir(parents=True, exist_ok=True)
    save_config(config, workdir / "config.yaml")
    sources, failed = source_logmels(config, files, progress=verbose > 0)
    atomic_write_json(workdir / "sources.json", {"used": len(sources), "files": [str(f) for f in files],
                                                 "skipped": [list(f) for f in failed]})
    for _, why in failed:   # each reason names its file
        log.warning("skipped: %s", why)
    if not sources:
        raise DataError(f"no readable recording among the {len(files)} pre-training sources")
    classes = tuple(config.data.classes) or _bank_classes(config)
    info = ModelInfo(classes, config.features, config.postprocess, config.model.time_pooling,
                     window_frames(config) / config.features.frames_per_second)
    seed_everything(config.pretrain.seed)
    batches = triplet_batches(config, sources, _readable_classes(config, files, failed))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Gradients do not exist for variables")  # strong / weak heads
        if state is not None:
            model, _ = load_model(checkpoints / "last.keras", compile=True)
            restore_seed_states(model, state.get("seed_states", []))
            trim_history(workdir / "history.csv", state["epoch"])
        else:
            model = build_crnn(config.model, len(classes), config.features.n_mels, window_frames(config))
            compile_pretraining(model, config)
        initial = state["epoch"] if state else 0
        batches.set_epoch(initial)
        epochs = 1 if config.train.fast_dev_run else config.pretrain.epochs
        callbacks = [keras.callbacks.CSVLogger(str(workdir / "history.csv"), append=state is not None),
                     ResumableCheckpoint(checkpoints, info, patience_epochs=epochs + 1, monitor=("loss",),
                                         state=state, select_last=True)]
        if initial < epochs:
            with steady_prefetch():
                model.fit(batches, epochs=epochs, initial_epoch=initial, callbacks=callbacks, verbose=verbose,
                          shuffle=False)
    final, _ = load_model(checkpoints / "last.keras")
    return save_model(final, workdir / "model.keras", info)


# What a pre-training depends on: a resume with any of these changed would mix two runs.
PRETRAINING_SECTIONS = ("features", "data", "model", "pretrain")


def _check_same_pretraining(saved: Config, config: Config, workdir: Path) -> None:
    from sedweak.training.trainer import WorkdirError, config_changes, listed_changes

    changed = [c for c in config_changes(saved, config) if c[0].split(".")[0] in PRETRAINING_SECTIONS]
    if changed:
        raise WorkdirError(f"{workdir / 'config.yaml'}: --resume with settings that change the pre-training "
                           f"({listed_changes(changed)}); resume with the saved settings, or use another --workdir")


def _readable_classes(config: Config, files: list[Path], failed: list[tuple[str, str]]) -> list[str | None] | None:
    """The classes of the files read (None unless pretrain.labelled_fraction > 0)."""
    if config.pretrain.labelled_fraction == 0:
        return None
    unread = {path for path, _ in failed}
    return source_classes(config, [f for f in files if str(f) not in unread])


def _bank_classes(config: Config) -> tuple[str, ...]:
    if config.data.dataset == "synth":
        from sedweak.soundbank import SoundBank

        return tuple(SoundBank.open(config.data.soundbank).foreground_classes)
    return ("unlabelled",)


def init_from(model, path: str | Path) -> list[str]:
    """Copy into ``model`` the weights of every layer of the ``.keras`` file at ``path`` that
    ``model`` has by name with weights of the same shapes. Returns the names copied;
    :class:`UserError` when none is (another architecture)."""
    from sedweak.models.saving import load_model
    from sedweak.models.mean_teacher import unwrap

    source, _ = load_model(path)
    source = unwrap(source, "teacher")
    by_name = {layer.name: layer for layer in model.layers}
    copied = []
    for layer in source.layers:
        target = by_name.get(layer.name)
        weights = layer.get_weights()
        if target is None or not weights:
            continue
        if [w.shape for w in weights] == [tuple(w.shape) for w in target.weights]:
            target.set_weights(weights)
            copied.append(layer.name)
    if not copied:
        raise UserError(f"{path}: no layer of this model matches the recipe's CRNN by name and shape "
                        "(train.init_from needs a model of the same architecture, e.g. from sedweak pretrain)")
    log.info("train.init_from %s: %d layers copied (%s)", path, len(copied), ", ".join(copied))
    return copied
