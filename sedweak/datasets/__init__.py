"""Datasets: readers turning local copies of datasets into ClipSets, the synthetic-data and
feature-cache preparation of a run (:mod:`~sedweak.datasets.prepare`), and the log-mel cache."""

from sedweak.datasets.clipset import ClipSet
from sedweak.datasets.folder import load_split

__all__ = ["ClipSet", "load_split"]
