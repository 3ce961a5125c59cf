"""The log-mel front end in numpy, to the spec of ``sedweak.features`` (tests compare them).

Slaney mel filters as librosa's (``htk=False``), periodic Hann window of ``window_samples``
centred in ``n_fft``, ``n_fft // 2`` zeros each side, power spectrum,
``10 log10(max(., amin_power))``. ``features`` is the sidecar's ``features`` table.
"""

from __future__ import annotations

import numpy as np


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale (librosa ``htk=False``): linear below 1 kHz, log above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, hz / f_sp)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_matrix(sample_rate_hz: int, n_fft: int, n_mels: int, mel_min_hz: float, mel_max_hz: float) -> np.ndarray:
    """Slaney-normalised triangular filters, shape (n_fft // 2 + 1, n_mels) float32 (librosa's, transposed)."""
    fft_hz = np.linspace(0.0, sample_rate_hz / 2, n_fft // 2 + 1)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(mel_min_hz), _hz_to_mel(mel_max_hz), n_mels + 2))
    widths = np.diff(edges_hz)                                   # (n_mels + 1,)
    ramps = edges_hz[:, np.newaxis] - fft_hz[np.newaxis, :]      # (n_mels + 2, bins)
    lower = -ramps[:-2] / widths[:-1, np.newaxis]
    upper = ramps[2:] / widths[1:, np.newaxis]
    weights = np.maximum(0.0, np.minimum(lower, upper))          # (n_mels, bins)
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, np.newaxis]
    return np.ascontiguousarray(weights.T, dtype=np.float32)


def _stft_window(features: dict) -> np.ndarray:
    """Periodic Hann of ``window_samples`` centred in ``n_fft`` zeros."""
    n_fft, win = features["n_fft"], features["window_samples"]
    window = np.zeros(n_fft)
    left = (n_fft - win) // 2
    window[left:left + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    return window


def frames_to_logmel(frames: np.ndarray, features: dict) -> np.ndarray:
    """(T, n_fft) raw sample frames -> (T, n_mels) float32 dB."""
    power = np.abs(np.fft.rfft(frames * _stft_window(features), axis=1)) ** 2                # (T, bins)
    mel = power @ mel_matrix(features["sample_rate_hz"], features["n_fft"], features["n_mels"],
                             features["mel_min_hz"], features["mel_max_hz"]).astype(np.float64)
    return (10.0 * np.log10(np.maximum(mel, features["amin_power"]))).astype(np.float32)


def logmel(waveform: np.ndarray, features: dict) -> np.ndarray:
    """Log-mel dB of a mono clip: (samples,) -> (samples // hop, n_mels) float32.

    Spec of sedweak.features: ``n_fft // 2`` zeros each side, periodic Hann window of
    ``window_samples`` centred in ``n_fft``, power spectrum, Slaney mel filters,
    ``10 log10(max(., amin_power))``, last frame dropped.
    """
    n_fft, hop = features["n_fft"], features["hop_samples"]
    num_frames = len(waveform) // hop
    if num_frames == 0:
        return np.zeros((0, features["n_mels"]), np.float32)
    padded = np.pad(np.asarray(waveform, np.float64), (n_fft // 2, n_fft // 2))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:num_frames]  # (T, n_fft)
    return frames_to_logmel(frames, features)


class StreamingLogMel:
    """:func:`logmel` over audio arriving in pieces, in constant memory.

    Frame ``i`` is centred on sample ``i * hop`` and needs samples up to ``i * hop + n_fft // 2``
    (the centre padding): a frame comes out ``n_fft // 2`` samples (16 ms at 16 kHz,
    n_fft 512) after its centre. :meth:`flush` adds the final zeros; the concatenated
    frames equal ``logmel(whole_waveform)``.
    """

    def __init__(self, features: dict):
        self.features = features
        self._buffer = np.zeros(features["n_fft"] // 2, np.float64)   # the left centre padding
        self._samples = 0      # waveform samples pushed so far
        self._frames = 0       # frames emitted so far

    def _emit(self, limit: int) -> np.ndarray:
        n_fft, hop = self.features["n_fft"], self.features["hop_samples"]
        count = max(0, min(limit, (len(self._buffer) - n_fft) // hop + 1 if len(self._buffer) >= n_fft else 0))
        if count == 0:
            return np.zeros((0, self.features["n_mels"]), np.float32)
        frames = np.lib.stride_tricks.sliding_window_view(self._buffer, n_fft)[::hop][:count]
        out = frames_to_logmel(frames, self.features)
        self._buffer, self._frames = self._buffer[count * hop:], self._frames + count
        return out

    def push(self, samples: np.ndarray) -> np.ndarray:
        """New mono samples -> the (frames, n_mels) dB frames they complete."""
        self._buffer = np.concatenate([self._buffer, np.asarray(samples, np.float64)])
        self._samples += len(samples)
        return self._emit(self._samples // self.features["hop_samples"] - self._frames)

    def flush(self) -> np.ndarray:
        """End of stream: the last frames (right centre padding with zeros)."""
        self._buffer = np.concatenate([self._buffer, np.zeros(self.features["n_fft"] // 2)])
        return self._emit(self._samples // self.features["hop_samples"] - self._frames)
