"""What int8 files are calibrated on, and how clips are fitted to the exported window.

Calibration clips come from a run's training split (never its eval split) or a folder
of audio: the activation ranges int8 keeps are the ranges seen there.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from sedweak.models.saving import ModelInfo
from sedweak.export.sidecar import clip_samples

log = logging.getLogger(__name__)


def evenly_spaced(count: int, most: int) -> list[int]:
    """At most ``most`` indices spread evenly over ``range(count)`` (calibration subsets)."""
    return [int(i) for i in np.linspace(0, count - 1, min(most, count)).round()] if count else []


def calibration_logmels(source: str | Path, info: ModelInfo, max_clips: int = 64) -> list[np.ndarray]:
    """Log-mel clips ((T, n_mels) each) to calibrate int8 on, from ``source``:

    * a run's ``config.yaml``: its training split through :func:`sedweak.datasets.prepare.prepare_data`
      (the run's feature cache is reused when it exists);
    * a folder of audio files at the model's rate: :func:`sedweak.features.logmel_librosa`.
    Clips are taken evenly over the sorted list, at most ``max_clips``.
    """
    from sedweak.features import logmel_librosa

    source = Path(source)
    if source.suffix in (".yaml", ".yml") and source.is_file():
        features = _training_data(source).features["train"]
        keep = evenly_spaced(len(features.filenames), max_clips)
        return [np.asarray(features.features[int(i)], np.float32) for i in keep]
    return [logmel_librosa(w, info.features) for w in calibration_waveforms(source, info, max_clips)]


def calibration_waveforms(source: str | Path, info: ModelInfo, max_clips: int = 64) -> list[np.ndarray]:
    """Mono waveforms at the model's rate to calibrate a waveform-input int8 file on: a run's
    ``config.yaml`` (the audio of its training split) or a folder of audio files."""
    from sedweak.audio import AudioError, load_audio
    from sedweak.inference import audio_files

    source = Path(source)
    if source.suffix in (".yaml", ".yml") and source.is_file():
        paths = list(_training_data(source).clips["train"].audio_paths)
    elif source.is_dir():
        paths = audio_files([source])
    else:
        raise FileNotFoundError(f"{source}: --calibration takes a run's config.yaml or a folder of audio files")
    if not paths:
        raise FileNotFoundError(f"{source}: no audio files to calibrate on")
    waveforms = []
    for i in evenly_spaced(len(paths), max_clips):
        try:
            waveforms.append(load_audio(paths[i], info.features.sample_rate_hz))
        except AudioError as err:  # one bad clip does not end the export: reported, the rest used
            log.warning("skipped calibration clip %s", err)
    if not waveforms:
        raise FileNotFoundError(f"{source}: none of its audio files could be read to calibrate on")
    return waveforms


def _training_data(config_path: Path):
    from sedweak.config import load_config
    from sedweak.datasets.prepare import prepare_data

    return prepare_data(load_config(config_path), config_path.parent, splits=("train",), progress=False)


def fit_window(logmel: np.ndarray, info: ModelInfo) -> np.ndarray:
    """(T, F) -> (clip_frames, F): cut, or padded with the -100 dB floor as ``sedweak predict``."""
    frames = info.clip_frames
    if logmel.shape[0] >= frames:
        return logmel[:frames]
    floor = np.float32(10.0 * np.log10(info.features.amin_power))
    return np.concatenate([logmel, np.full((frames - logmel.shape[0], logmel.shape[1]), floor, np.float32)])


def fit_waveform(waveform: np.ndarray, info: ModelInfo) -> np.ndarray:
    """(samples,) -> (clip_samples,): cut, or padded with zeros."""
    samples = clip_samples(info)
    return np.pad(waveform[:samples], (0, max(0, samples - len(waveform))))
