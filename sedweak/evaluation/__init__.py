"""Evaluation: tagging, detection (sed_eval adapter) and report tables.

Importing this package loads neither TensorFlow nor Keras (nor sed_eval or
scikit-learn, sed_scores_eval or pandas, which load when a metric that needs them is computed).
"""

from sedweak.evaluation.detection import evaluate_detection, to_sed_eval_events
from sedweak.evaluation.report import (
    METRIC_KEYS,
    PER_CLASS_KEYS,
    markdown_table,
    per_class_markdown,
    score_clips,
    score_events,
    score_tsv,
)
from sedweak.evaluation.scores import SCORE_KEYS, psds_scores, read_scores, score_frames, write_scores
from sedweak.evaluation.tagging import (
    average_precision,
    prf_from_counts,
    tagging_counts,
    tagging_scores,
)

__all__ = [
    "METRIC_KEYS",
    "PER_CLASS_KEYS",
    "SCORE_KEYS",
    "average_precision",
    "evaluate_detection",
    "markdown_table",
    "per_class_markdown",
    "prf_from_counts",
    "psds_scores",
    "read_scores",
    "score_clips",
    "score_events",
    "score_frames",
    "score_tsv",
    "tagging_counts",
    "tagging_scores",
    "to_sed_eval_events",
    "write_scores",
]
