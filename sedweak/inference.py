"""Frame probabilities and events for audio of any length.

Audio longer than the training clip is cut into windows of the clip length with
50 % overlap; the frame probabilities of overlapping windows are averaged and the
stitched track is post-processed once, so an event crossing a window boundary
comes out once, never duplicated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from sedweak.artifacts import ModelInfo
from sedweak.audio import AudioError, load_audio
from sedweak.labels import Event
from sedweak.postprocessing import probabilities_to_events


def window_starts(num_frames: int, window_frames: int, hop_frames: int) -> list[int]:
    """Window start frames covering ``num_frames``; the last window ends at the end."""
    if num_frames <= window_frames:
        return [0]
    starts = list(range(0, num_frames - window_frames, hop_frames))
    return starts + [num_frames - window_frames]


def predict_logmel(model, logmel: np.ndarray, info: ModelInfo, batch_size: int = 8) -> np.ndarray:
    """Log-mel (frames, n_mels) -> strong probabilities (frames // time_pooling, classes)."""
    return predict_logmel_outputs(model, logmel, info, batch_size)[0]


def predict_logmel_outputs(model, logmel: np.ndarray, info: ModelInfo, batch_size: int = 8
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel (frames, n_mels) -> (strong (frames // time_pooling, classes), weak (classes,)).

    The clip-level output of a long file is the maximum over its windows' weak outputs.
    """
    window, pool = info.clip_frames, info.time_pooling
    covered = (window // pool) * pool  # feature frames behind a window's model frames
    hop = max(pool, (covered // 2) // pool * pool)
    frames = logmel.shape[0]
    out_frames = max(-(-frames // pool), covered // pool)
    # Every window starts on the model-frame grid, so overlapping outputs add up frame by frame.
    starts = window_starts(out_frames * pool, covered, hop)
    padded_frames = starts[-1] + window
    if padded_frames > frames:  # pad with the silence floor, like a zero-padded waveform
        floor = 10.0 * np.log10(info.features.amin_power)
        logmel = np.concatenate([logmel, np.full((padded_frames - frames, logmel.shape[1]), floor, np.float32)])
    total = np.zeros((out_frames, len(info.classes)), np.float64)
    count = np.zeros((out_frames, 1), np.float64)
    weak = np.zeros(len(info.classes), np.float32)
    for b in range(0, len(starts), batch_size):
        chunk = starts[b:b + batch_size]
        x = np.stack([logmel[s:s + window] for s in chunk]).astype(np.float32)
        outputs = model.predict_on_batch(x)
        strong = np.asarray(outputs["strong"])
        if outputs.get("weak") is not None:
            weak = np.maximum(weak, np.asarray(outputs["weak"]).max(axis=0))
        for s, probs in zip(chunk, strong):
            total[s // pool:s // pool + probs.shape[0]] += probs
            count[s // pool:s // pool + probs.shape[0]] += 1
    probs = (total / np.maximum(count, 1)).astype(np.float32)
    return probs[:max(1, frames // pool)], weak


def predict_files(model, info: ModelInfo, paths: Sequence[str | Path], progress: bool = False,
                  keys: Sequence[str] | None = None
                  ) -> tuple[dict[str, list[Event]], dict[str, np.ndarray], list[tuple[str, str]]]:
    """Run the model over audio files of any length.

    ``keys``: the name each file is reported under (default its file name; see
    :func:`keyed_audio_files` for paths relative to an input folder).
    Returns (events by key, frame probabilities by key, failures as
    (path, reason)) -- a bad file (unreadable audio, or any error while running the
    model on it) is reported, not fatal.
    """
    from sedweak.features import logmel_librosa

    events, probs, failed = {}, {}, []
    iterator: Iterable = paths
    if progress:
        from tqdm import tqdm

        iterator = tqdm(paths, desc="predict", unit="file")
    names = list(keys) if keys is not None else [Path(p).name for p in paths]
    for path, name in zip(iterator, names):
        path = Path(path)
        try:
            waveform = load_audio(path, info.features.sample_rate_hz)
            track = predict_logmel(model, logmel_librosa(waveform, info.features), info)
        except AudioError as err:
            failed.append((str(path), str(err)))
            continue
        except Exception as err:  # one clip never ends a batch: reported, the rest go on
            failed.append((str(path), f"{type(err).__name__}: {err}"))
            continue
        probs[name] = track
        events[name] = probabilities_to_events(track, info.classes, info.model_frames_per_second, name,
                                               info.postprocess)
    return events, probs, failed


def save_frame_probabilities(path: str | Path, probs: dict[str, np.ndarray], info: ModelInfo) -> Path:
    """HDF5: one (frames, classes) dataset per file, rate and classes as attributes."""
    import os

    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with h5py.File(tmp, "w") as h5:
        h5.attrs["frames_per_second"] = info.model_frames_per_second
        h5.attrs["classes"] = [c.encode() for c in info.classes]
        for name, track in probs.items():
            h5.create_dataset(name, data=track)
    os.replace(tmp, path)
    return path


def audio_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand folders into the audio files they contain (recursively), sorted."""
    suffixes = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}
    out: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            out.extend(sorted(p for p in item.rglob("*") if p.suffix.lower() in suffixes))
        else:
            out.append(item)
    return out


def keyed_audio_files(inputs: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """(path, key) per audio file: a file given directly is keyed by its name, a folder's
    files by their path relative to the folder (DESED's nested eval folders: ``a/x.wav`` and
    ``b/x.wav`` stay two files). Two files with one key are a ValueError naming both."""
    out, owner = [], {}
    for item in map(Path, inputs):
        found = ([(p, p.relative_to(item).as_posix()) for p in audio_files([item])] if item.is_dir()
                 else [(item, item.name)])
        for path, key in found:
            if key in owner:
                raise ValueError(f"{owner[key]} and {path} would both be reported as {key!r}: give their "
                                 "folders, or rename one")
            owner[key] = path
            out.append((path, key))
    return out
