"""Figures: the event roll (log-mel with reference and predicted events)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from sedweak.labels import Event


def event_roll(path: str | Path, logmel: np.ndarray, frames_per_second: float, classes: Sequence[str],
               events: Mapping[str, Sequence[Event]], title: str = "") -> Path:
    """PNG: log-mel (frames, n_mels) on top, one event-roll panel per entry of ``events``.

    ``events`` maps a panel name (e.g. "reference", "CRNN") to that clip's events.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = logmel.shape[0] / frames_per_second
    fig, axes = plt.subplots(1 + len(events), 1, figsize=(11, 2.6 + 1.0 * len(events) * max(1, len(classes) / 6)),
                             sharex=True, gridspec_kw={"height_ratios": [2.5] + [1.5] * len(events)})
    axes[0].imshow(logmel.T, origin="lower", aspect="auto", extent=(0, seconds, 0, logmel.shape[1]), cmap="magma")
    axes[0].set_ylabel("mel band")
    axes[0].set_title(title or "log-mel")
    row = {c: i for i, c in enumerate(classes)}
    for ax, (name, panel) in zip(axes[1:], events.items()):
        for e in panel:
            ax.barh(row[e.label], e.offset_seconds - e.onset_seconds, left=e.onset_seconds, height=0.7,
                    color=f"C{row[e.label] % 10}")
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_ylim(-0.5, len(classes) - 0.5)
        ax.set_ylabel(name)
        ax.grid(axis="x", alpha=0.3)
    axes[-1].set_xlabel("time (s)")
    axes[-1].set_xlim(0, seconds)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
