"""Turpault et al.'s weak-label study, one run of it (``task: waa``; the matrix: ``sedweak sweep``).

The data are one-event clips (``data.synth.mode: waa``, balanced classes, sources disjoint
per split). From each clip one fixed-length segment is cut that holds its event -- the
whole event when it is shorter than the segment, a stretch of it when longer (the paper's
WAA1 set) -- so a 10 s segment carries a *weak* label and a 0.2 s one an almost *strong*
label. One run trains the embedding CNN E (:mod:`sedweak.embeddings.models`) on segments
of ``waa.train_segment_seconds`` with ``waa.method``:

* ``classifier``: E + G end to end on binary cross-entropy;
* ``triplet``: E on the triplet loss over class-balanced batches, then G on frozen embeddings;
* ``prototypical``: E on prototypical episodes (all K classes x m points), then G.

E is selected on Turpault et al.'s nearest-centroid measure F of the valid segments
(``val_centroid_error``; the classifier on its validation loss), G on its validation loss.
The run then cuts the eval clips at every ``waa.test_segment_seconds`` and writes, per
test length L, ``waa.f1.test_<L>s`` (macro F1 of G's sigmoid decisions at
``waa.threshold``, the paper's measure: a model that says "no class" scores 0),
``waa.top1_f1.test_<L>s`` (macro F1 of G's top class, the decision a one-event clip allows:
an under-confident G that never reaches the threshold still ranks the classes) and
``waa.centroid_f.test_<L>s`` (nearest train-centroid accuracy of the embeddings, no G).

Workdir: ``config.yaml``, ``history.csv``, ``model.keras`` (E; ``sedweak embed`` reads it),
``metrics.json``. A run is minutes long and restarts from its beginning when resumed;
the sweep skips runs whose ``metrics.json`` exists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from sedweak.config import Config, save_config
from sedweak.errors import DataError

log = logging.getLogger(__name__)

SPLIT_STREAMS = {"train": 0, "valid": 1, "eval": 2}   # each split's segment positions: its own RNG stream


@dataclass(frozen=True)
class Segments:
    """One segment per clip: ``features`` (clips, frames, n_mels) log-mel, ``labels``
    (clips,) class ids, ``filenames`` the clips they were cut from."""

    features: np.ndarray
    labels: np.ndarray
    filenames: tuple[str, ...]


def metric_key(kind: str, seconds: float) -> str:
    """``("f1", 0.2)`` -> ``"waa.f1.test_0.2s"``."""
    return f"waa.{kind}.test_{seconds:g}s"


def segment_frames(seconds: float, frames_per_second: float, clip_frames: int) -> int:
    """Frames of a segment: a whole number of E's 200 ms patches, at most the clip's."""
    from sedweak.embeddings.models import PATCH_FRAMES

    frames = max(1, int(round(seconds * frames_per_second / PATCH_FRAMES))) * PATCH_FRAMES
    return min(frames, clip_frames // PATCH_FRAMES * PATCH_FRAMES)


def segment_start(onset_frame: int, offset_frame: int, clip_frames: int, frames: int,
                  rng: np.random.Generator) -> int:
    """First frame of the segment cut around an event spanning [onset, offset) frames.

    An event no longer than the segment lies wholly inside it (start uniform over the
    starts that hold it); a longer event fills it (start uniform inside the event). The
    clip's edges bound both."""
    if frames >= clip_frames:
        return 0
    if offset_frame - onset_frame <= frames:
        low, high = offset_frame - frames, onset_frame
    else:
        low, high = onset_frame, offset_frame - frames
    low, high = max(0, low), min(clip_frames - frames, high)
    return int(rng.integers(low, max(low, high) + 1))


def cut_segments(features, filenames: Sequence[str], strong: dict, classes: Sequence[str], seconds: float,
                 frames_per_second: float, seed: int, split: str) -> tuple[Segments, list[tuple[str, str]]]:
    """Cut one ``seconds`` segment per one-event clip of a split.

    ``features``: (clips, frames, n_mels) log-mels of ``filenames``; ``strong``: filename ->
    events. The positions are drawn from (seed, split, clip, length) alone, so every method
    and training seed sees the same segments. A clip without exactly one event of a known
    class is skipped and reported."""
    clip_frames = int(features.shape[1])
    frames = segment_frames(seconds, frames_per_second, clip_frames)
    ids = {c: i for i, c in enumerate(classes)}
    rows, labels, kept, skipped = [], [], [], []
    for i, name in enumerate(filenames):
        events = strong.get(name) or []
        if len(events) != 1 or events[0].label not in ids:
            skipped.append((name, f"expected one event of {list(classes)}, found {[e.label for e in events]}"))
            continue
        event = events[0]
        rng = np.random.default_rng([seed, SPLIT_STREAMS.get(split, 3), i, frames])
        onset = int(np.floor(event.onset_seconds * frames_per_second))
        offset = max(onset + 1, int(np.ceil(event.offset_seconds * frames_per_second)))
        start = segment_start(onset, min(offset, clip_frames), clip_frames, frames, rng)
        rows.append(np.asarray(features[i][start:start + frames], np.float32))
        labels.append(ids[event.label])
        kept.append(name)
    stacked = np.stack(rows) if rows else np.zeros((0, frames, features.shape[2]), np.float32)
    return Segments(stacked, np.asarray(labels, np.int32), tuple(kept)), skipped


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[labels]


def tagging_f1(probabilities: np.ndarray, labels: np.ndarray, threshold: float | None) -> float:
    """Macro F1 over classes of the decisions ``probabilities >= threshold`` (clips, K), or
    of each clip's top class when ``threshold`` is None."""
    from sklearn.metrics import f1_score

    truth = one_hot(labels, probabilities.shape[1])
    if threshold is None:
        decisions = one_hot(np.argmax(probabilities, axis=1), probabilities.shape[1])
    else:
        decisions = probabilities >= threshold
    return float(f1_score(truth, decisions, average="macro", zero_division=0))


def split_segments(config: Config, data, cached, seconds: float, split: str) -> Segments:
    """The ``seconds`` segments of one split; ``cached``: its features in memory (CacheResult.load())."""
    segments, skipped = cut_segments(cached.features, cached.filenames, data.clips[split].strong, data.classes,
                                     seconds, config.features.frames_per_second, config.data.synth.seed, split)
    for name, why in skipped:
        log.warning("%s/%s: skipped (%s)", split, name, why)
    if len(segments.labels) == 0:
        raise DataError(f"{data.root}: no one-event clip in split {split!r} to cut segments from")
    return segments


def run_waa(config: Config, workdir: str | Path, resume: bool = False, verbose: int = 1, data=None):
    """One run of the study; returns a :class:`sedweak.training.trainer.RunResult`."""
    from sedweak.datasets.prepare import prepare_data
    from sedweak.embeddings.waa_training import embed, train_embedding, train_g
    from sedweak.io_utils import atomic_write_json
    from sedweak.models.saving import ModelInfo, save_model
    from sedweak.training.trainer import RunResult, check_workdir, seed_everything

    workdir = Path(workdir)
    check_workdir(config, workdir, resume)
    workdir.mkdir(parents=True, exist_ok=True)
    save_config(config, workdir / "config.yaml")
    data = data or prepare_data(config, workdir, progress=verbose > 0)
    waa = config.waa
    cached = {split: data.features[split].load() for split in SPLIT_STREAMS}   # eval is cut once per length
    train = split_segments(config, data, cached["train"], waa.train_segment_seconds, "train")
    valid = split_segments(config, data, cached["valid"], waa.train_segment_seconds, "valid")
    seed_everything(config.train.seed)
    embedding, tagger, epochs = train_embedding(config, train, valid, len(data.classes), workdir, verbose)
    train_vectors = embed(embedding, train.features)   # for G and for the centroids of every test length
    if tagger is None:   # triplet / prototypical: G on the frozen embeddings
        tagger = train_g(config, train_vectors, train.labels, embed(embedding, valid.features), valid.labels,
                         len(data.classes))
    metrics = {"epochs": epochs, "train_segments": len(train.labels)}
    for seconds in waa.test_segment_seconds:
        test = split_segments(config, data, cached["eval"], seconds, "eval")
        metrics.update(score_segments(embedding, tagger, train_vectors, train.labels, test, seconds, waa.threshold))
    info = ModelInfo(tuple(data.classes), config.features, config.postprocess, 1,
                     train.features.shape[1] / config.features.frames_per_second)
    model_path = save_model(embedding, workdir / "model.keras", info)
    atomic_write_json(workdir / "metrics.json", metrics)
    return RunResult(workdir, model_path, metrics, epochs, tuple(data.failures()))


def score_segments(embedding, tagger, train_vectors: np.ndarray, train_labels: np.ndarray, test: Segments,
                   seconds: float, threshold: float) -> dict:
    """``waa.f1``, ``waa.top1_f1`` and ``waa.centroid_f`` of one test length. ``tagger``: embeddings -> (clips, K) probabilities."""
    from sedweak.embeddings.metrics import nearest_centroid_accuracy
    from sedweak.embeddings.waa_training import embed

    vectors = embed(embedding, test.features)
    probabilities = np.asarray(tagger.predict(vectors, batch_size=256, verbose=0))
    return {metric_key("f1", seconds): tagging_f1(probabilities, test.labels, threshold),
            metric_key("top1_f1", seconds): tagging_f1(probabilities, test.labels, None),
            metric_key("centroid_f", seconds): nearest_centroid_accuracy(train_vectors, train_labels, vectors,
                                                                        test.labels)}
