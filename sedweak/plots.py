"""Figures: the event roll, and the two helpers every sedweak figure is made with.

Figures use matplotlib's object API on an Agg canvas: no pyplot, no global backend
switch at run time, and every PNG is written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from sedweak.labels import Event


def event_roll(path: str | Path, logmel: np.ndarray, frames_per_second: float, classes: Sequence[str],
               events: Mapping[str, Sequence[Event]], title: str = "") -> Path:
    """PNG: log-mel (frames, n_mels) on top, one event-roll panel per entry of ``events``.

    ``events`` maps a panel name (e.g. "reference", "CRNN") to that clip's events.
    """
    seconds = logmel.shape[0] / frames_per_second
    fig = new_figure(figsize=(11, 2.6 + 1.0 * len(events) * max(1, len(classes) / 6)))
    axes = fig.subplots(1 + len(events), 1, sharex=True, gridspec_kw={"height_ratios": [2.5] + [1.5] * len(events)})
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
    return save_png(fig, path, dpi=110)


def new_figure(**kwargs):
    """A matplotlib Figure on an Agg canvas (``kwargs``: Figure options such as figsize)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return FigureCanvasAgg(Figure(**kwargs)).figure


def save_png(figure, path: str | Path, dpi: int = 100) -> Path:
    """Render ``figure`` to PNG and write it atomically."""
    from sedweak.io_utils import atomic_write_bytes

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return atomic_write_bytes(Path(path), buffer.getvalue())
