"""Frame probabilities and events for audio of any length.

Audio longer than the training clip is cut into windows of the clip length with
50 % overlap; the frame probabilities of overlapping windows are averaged and the
stitched track is post-processed once, so an event crossing a window boundary
comes out once, never duplicated. Files are streamed from disk through the window
stitcher that the device runtime uses too (:mod:`sedweak_runtime.windows`): memory
does not grow with a file's length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from sedweak_runtime.inputs import folder_audio, keyed_inputs
from sedweak_runtime.windows import WindowGrid, WindowStitcher

from sedweak.models.saving import ModelInfo
from sedweak.audio import AudioError, audio_blocks
from sedweak.labels import Event
from sedweak.postprocessing import probabilities_to_events


def _stitcher(model, info: ModelInfo, batch_size: int = 8) -> WindowStitcher:
    """A :class:`WindowStitcher` running the Keras ``model`` on log-mel windows."""
    def run(windows: np.ndarray):
        outputs = model.predict_on_batch(windows)
        weak = outputs.get("weak")
        return np.asarray(outputs["strong"]), None if weak is None else np.asarray(weak)

    return WindowStitcher(WindowGrid(info.clip_frames, info.time_pooling), run,
                          pad_row=10.0 * np.log10(info.features.amin_power), batch_size=batch_size)


def predict_logmel(model, logmel: np.ndarray, info: ModelInfo, batch_size: int = 8) -> np.ndarray:
    """Log-mel (frames, n_mels) -> strong probabilities (frames // time_pooling, classes)."""
    return predict_logmel_outputs(model, logmel, info, batch_size)[0]


def predict_logmel_outputs(model, logmel: np.ndarray, info: ModelInfo, batch_size: int = 8
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel (frames, n_mels) -> (strong (frames // time_pooling, classes), weak (classes,)).

    The clip-level output of a long input is the maximum over its windows' weak outputs
    (zeros for a model without a weak output). Past the end, windows are padded with the
    silence floor, like a zero-padded waveform.
    """
    stitcher = _stitcher(model, info, batch_size)
    stitcher.push(logmel)
    return _finish(stitcher, logmel.shape[0], info)


def predict_file_outputs(model, path: str | Path, info: ModelInfo, batch_size: int = 8
                         ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict_logmel_outputs` of an audio file, streamed from disk: blocks of audio
    (:func:`sedweak.audio.audio_blocks`) -> log-mel frames (:class:`LogmelStream`) ->
    windows, so memory stays that of a few windows whatever the file's length.
    Raises :class:`AudioError` for a bad file."""
    from sedweak.features import LogmelStream

    front_end, stitcher, samples = LogmelStream(info.features), _stitcher(model, info, batch_size), 0
    for block in audio_blocks(path, info.features.sample_rate_hz):
        samples += len(block)
        stitcher.push(front_end.push(block))
    stitcher.push(front_end.flush())
    frames = info.features.num_frames(samples)
    if frames == 0:
        raise AudioError(f"{path}: {samples} samples, shorter than one feature hop")
    return _finish(stitcher, frames, info)


def _finish(stitcher: WindowStitcher, frames: int, info: ModelInfo) -> tuple[np.ndarray, np.ndarray]:
    """The stitched (strong, weak); weak is zeros for a model without a weak output."""
    strong, weak = stitcher.finish(frames)
    return strong, np.zeros(len(info.classes), np.float32) if weak is None else weak


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
    events, probs, failed = {}, {}, []
    iterator: Iterable = paths
    if progress:
        from tqdm import tqdm

        iterator = tqdm(paths, desc="predict", unit="file")
    names = list(keys) if keys is not None else [Path(p).name for p in paths]
    for path, name in zip(iterator, names):
        path = Path(path)
        try:
            track, _ = predict_file_outputs(model, path, info)
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
    import h5py

    from sedweak.io_utils import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["frames_per_second"] = info.model_frames_per_second
        h5.attrs["classes"] = [c.encode() for c in info.classes]
        for name, track in probs.items():
            h5.create_dataset(name, data=track)
    return path


def audio_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand folders into the audio files they contain (recursively, hidden ones left
    out, :data:`sedweak_runtime.inputs.AUDIO_EXTENSIONS`), sorted; files stay as given."""
    out: list[Path] = []
    for item in map(Path, inputs):
        out.extend(folder_audio(item) if item.is_dir() else [item])
    return out


def keyed_audio_files(inputs: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """(path, key) per audio file, keyed as ``sedweak-detect`` keys them
    (:func:`sedweak_runtime.inputs.keyed_inputs`: a file by its name, a folder's files by
    their path relative to it). A missing input stays in the list, so that the run reports
    it; two files with one key are a ValueError naming both."""
    items, missing, _ = keyed_inputs(inputs)
    return [(path, key) for key, path in items] + [(Path(m), Path(m).name) for m in missing]
