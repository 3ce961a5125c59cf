"""sedweak on a device: a .tflite CRNN + its sidecar -> sound events (and clip embeddings; an
embedding-only file gives those alone). numpy, soundfile, ai-edge-litert only.

No TensorFlow, Keras, librosa or scipy (nor sedweak itself): the log-mel front end, the
median filter and the event decoding are re-implemented here in numpy, to the same spec as
``sedweak.features`` / ``sedweak.postprocessing`` / ``sedweak.inference`` (tests compare
them). ``MODEL.tflite.json`` (written by ``sedweak export``) must sit next to the model.

    pip install ./export            # or the main sedweak distribution, which ships it too
    sedweak-detect MODEL.tflite AUDIO.wav FOLDER/ --out events.tsv

Modules: ``audio`` (checked block reading), ``frontend`` (numpy log-mel), ``windows``
(cutting and stitching long inputs), ``events`` (post-processing, TSV), ``models`` (tensor
conversion, streaming step, staged model), ``interpreter`` (LiteRT, quietly), ``detector``
(audio -> events), ``embedding`` (clip embeddings: finishing, running means), ``inputs`` (files
and their keys), ``sidecar`` (formats, reading), ``cli`` (``sedweak-detect``). ``sedweak`` itself uses ``audio``, ``windows``, ``inputs`` and ``interpreter``.
"""

from __future__ import annotations

import json  # noqa: F401  (kept as an attribute: older callers used ``sedweak_runtime.json``)

from .cli import main
from .audio import file_blocks, read_audio, read_blocks
from .detector import Detector, FileResult
from .embedding import RunningMean, l2_normalize
from .events import STRONG_HEADER, Event, median_filter, odd_window_frames, probabilities_to_events, strong_tsv_text
from .frontend import StreamingLogMel, frames_to_logmel, logmel, mel_matrix
from .models import StagedModel, StreamingModel, from_model, to_model
from .sidecar import (
    EMBEDDING_SIDECAR_FORMAT,
    SIDECAR_FORMAT,
    SIDECAR_FORMATS,
    STAGED_FORMAT,
    has_detection,
    read_sidecar,
    sidecar_path,
)
from .windows import WindowGrid, WindowStitcher, window_starts

__version__ = "0.1.0"

__all__ = [
    "Detector", "EMBEDDING_SIDECAR_FORMAT", "Event", "FileResult", "RunningMean", "SIDECAR_FORMAT", "SIDECAR_FORMATS",
    "l2_normalize", "STAGED_FORMAT", "STRONG_HEADER", "StagedModel", "StreamingLogMel",
    "StreamingModel", "frames_to_logmel", "from_model", "logmel", "main", "median_filter", "mel_matrix",
    "WindowGrid", "WindowStitcher", "file_blocks", "has_detection", "odd_window_frames", "probabilities_to_events", "read_audio", "read_blocks",
    "read_sidecar", "sidecar_path", "strong_tsv_text", "to_model", "window_starts",
]
