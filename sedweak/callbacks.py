"""Checkpointing that survives ``kill -9``: atomic ``.keras`` files plus a state file.

After every epoch ``last.keras`` (weights + optimizer) and ``state.json`` (epoch,
best validation loss, early-stopping wait) are replaced atomically; ``best.keras``
when the monitored loss improves. ``--resume`` reloads ``last.keras`` and continues
at the next epoch with the early-stopping state intact.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras

from sedweak.artifacts import ModelInfo, save_model
from sedweak.io_utils import atomic_write_json

STATE_FILE = "state.json"


def read_state(checkpoint_dir: Path) -> dict | None:
    path = Path(checkpoint_dir) / STATE_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


class ResumableCheckpoint(keras.callbacks.Callback):
    """Best/last checkpoints and early stopping on ``monitor`` (lower is better)."""

    def __init__(self, checkpoint_dir: Path, info: ModelInfo, patience_epochs: int,
                 monitor: str = "val_loss", state: dict | None = None):
        super().__init__()
        self.checkpoint_dir = Path(checkpoint_dir)
        self.info = info
        self.patience_epochs = patience_epochs
        self.monitor = monitor
        state = state or {}
        self.best = float(state.get("best", math.inf))
        self.best_epoch = int(state.get("best_epoch", -1))
        self.wait = int(state.get("wait", 0))

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            raise RuntimeError(f"{self.monitor} is {value!r} at epoch {epoch + 1}: training diverged "
                               "or validation is empty")
        value = float(value)
        if value < self.best:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            save_model(self.model, self.checkpoint_dir / "best.keras", self.info)
        else:
            self.wait += 1
        save_model(self.model, self.checkpoint_dir / "last.keras", self.info)
        atomic_write_json(self.checkpoint_dir / STATE_FILE,
                          {"epoch": epoch + 1, "best": self.best, "best_epoch": self.best_epoch,
                           "wait": self.wait, "monitor": self.monitor})
        if self.wait >= self.patience_epochs:
            self.model.stop_training = True
