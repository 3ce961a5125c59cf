"""Datasets: clip lists with labels, the log-mel cache and the training batches."""

from sedweak.datasets.folder import ClipSet, load_split

__all__ = ["ClipSet", "load_split"]
