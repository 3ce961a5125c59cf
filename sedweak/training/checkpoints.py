"""Checkpointing that survives ``kill -9``: atomic ``.keras`` files plus a state file.

After every epoch ``last.keras`` (weights + optimizer) and ``state.json`` (epoch,
best validation loss, early-stopping wait, the random-seed states of the model's layers)
are replaced atomically; ``best.keras`` when the monitored loss improves. ``--resume``
reloads ``last.keras``, puts the seed states back (:func:`restore_seed_states`) and
continues at the next epoch with the early-stopping state intact: with the batch order
keyed by epoch (``ClipBatches.set_epoch``) the resumed run is the uninterrupted one.

Why the seed states: a ``.keras`` file holds weights and optimizer variables but not the
``SeedGenerator`` states of ``Dropout``/``GRU`` layers, so a reloaded model would draw
other dropout masks than the run it replaces.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras

from sedweak.errors import DataError, TrainingDiverged
from sedweak.io_utils import atomic_write_json
from sedweak.models.saving import ModelInfo, save_model

STATE_FILE = "state.json"


def seed_states(model) -> list:
    """The ``SeedGenerator`` state variables of ``model``, in layer order (a stable order
    for one architecture; their paths carry session-dependent name counters)."""
    return [v for v in model.variables if v.path.rsplit("/", 1)[-1] == "seed_generator_state"]


def restore_seed_states(model, values: list) -> None:
    """Assign ``values`` (from ``state.json``) to the model's seed states."""
    import numpy as np

    states = seed_states(model)
    if len(states) != len(values):
        raise ValueError(f"the checkpoint holds {len(values)} seed states, the model has {len(states)}: "
                         "it is not the model of this run")
    for variable, value in zip(states, values):
        variable.assign(np.asarray(value, dtype=variable.dtype))


def read_state(checkpoint_dir: Path) -> dict | None:
    path = Path(checkpoint_dir) / STATE_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


# The best epoch is chosen on the UNWEIGHTED sum of the validation losses: with the
# weighted ``val_loss``, a loss-weight sweep would select each point by a different rule
# (a weak-heavy point would pick its epoch on the weak loss alone).
SELECTION_LOSSES = ("val_strong_loss", "val_weak_loss")


class ResumableCheckpoint(keras.callbacks.Callback):
    """Best/last checkpoints and early stopping on the sum of ``monitor`` logs (lower is better)."""

    def __init__(self, checkpoint_dir: Path, info: ModelInfo, patience_epochs: int,
                 monitor: tuple[str, ...] = SELECTION_LOSSES, state: dict | None = None,
                 select_last: bool = False):
        super().__init__()
        self.select_last = select_last  # every epoch becomes "best"; no early stopping
        self.checkpoint_dir = Path(checkpoint_dir)
        self.info = info
        self.patience_epochs = patience_epochs
        self.monitor = monitor
        state = state or {}
        self.best = float(state.get("best", math.inf))
        self.best_epoch = int(state.get("best_epoch", -1))
        self.wait = int(state.get("wait", 0))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        missing = [name for name in self.monitor if name not in logs]
        if missing:
            raise DataError(f"no {missing} in the epoch logs: is there a validation split?")
        value = float(sum(float(logs[name]) for name in self.monitor))
        if not math.isfinite(value):
            raise TrainingDiverged(f"{'+'.join(self.monitor)} is {value} at epoch {epoch + 1}: training diverged")
        if value < self.best or self.select_last:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            save_model(self.model, self.checkpoint_dir / "best.keras", self.info)
        else:
            self.wait += 1
        save_model(self.model, self.checkpoint_dir / "last.keras", self.info)
        atomic_write_json(self.checkpoint_dir / STATE_FILE,
                          {"epoch": epoch + 1, "best": self.best, "best_epoch": self.best_epoch,
                           "wait": self.wait, "monitor": "+".join(self.monitor),
                           "seed_states": [keras.ops.convert_to_numpy(v).tolist()
                                           for v in seed_states(self.model)]})
        if self.wait >= self.patience_epochs:
            self.model.stop_training = True
