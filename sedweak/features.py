"""Log-mel features: a librosa reference and an in-graph Keras layer, one spec.

Spec (both implementations):

1. Centre padding: ``n_fft // 2`` zeros on each side (librosa ``center=True`` with
   ``pad_mode="constant"``, its default since 0.10). Zeros, not reflection: a clip
   boundary is a boundary, and zero padding needs no look at the signal, so a
   streaming front end can reproduce it.
2. Power spectrogram ``|STFT|^2``: periodic Hann window of ``window_samples``
   centred in ``n_fft`` by zero padding (librosa's ``win_length`` behaviour),
   hop ``hop_samples``.
3. Mel filterbank ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)``
   (Slaney scale, ``htk=False``, ``norm="slaney"``).
4. ``dB = 10 * log10(max(mel_power, amin_power))``: no reference scaling, no
   ``top_db``. Silence is exactly ``10 * log10(amin_power)`` (-100 dB).
5. Frames: librosa yields ``1 + samples // hop``; the last is dropped so that the
   output has ``FeatureConfig.num_frames(samples) = samples // hop`` frames and
   frame ``i`` is the label frame ``[i * hop, (i + 1) * hop)`` (its STFT window is
   centred on ``i * hop``). A 10 s clip at 16 kHz gives ``(1000, 64)``.

Implementation choice for the layer: ``keras.ops.stft(center=False)`` on an input
that the layer zero-pads itself with ``keras.ops.pad``. ``keras.ops.stft``'s own
``center=True`` pads by *reflection* on every backend, which is not the spec, so it
is not used. Window and mel matrix are numpy constants from librosa (not
``tf.signal.hann_window``), so both implementations multiply by the same numbers.
Under TensorFlow ``keras.ops.stft`` lowers to ``tf.signal.stft``, which the TFLite
converter maps to builtin ops (RFFT2D, REAL, IMAG; see tests/test_features.py);
under JAX it lowers to ``jax.scipy.signal.stft``. Everything is float32 (float16
overflows in the power spectrogram). Measured agreement with librosa (float32 input):
white noise 1.1e-5 dB on every bin; tones and chirps <= 1.4e-4 dB within 60 dB of the
clip's peak and <= 2e-3 dB within 80 dB; deeper bins (near the -100 dB floor) differ by
float32 FFT round-off, up to 0.17 dB at -99 dB on a chirp peaking at +17 dB.

The layer lives in :mod:`sedweak.models.frontend` so that this module (and the
feature cache, and ``sedweak.evaluation``) never imports Keras or TensorFlow.
"""

from __future__ import annotations

import warnings

import librosa
import numpy as np

from sedweak.config import FeatureConfig

__all__ = ["LogmelStream", "logmel_batch", "logmel_file", "logmel_librosa", "mel_matrix", "mix_logmels", "shift_bands", "stft_window"]


def mel_matrix(sample_rate_hz: int, n_fft: int, n_mels: int, mel_min_hz: float,
               mel_max_hz: float) -> np.ndarray:
    """Slaney mel filterbank, shape ``(n_fft // 2 + 1, n_mels)`` float32 (transposed librosa)."""
    weights = librosa.filters.mel(sr=sample_rate_hz, n_fft=n_fft, n_mels=n_mels, fmin=mel_min_hz,
                                  fmax=mel_max_hz, htk=False, norm="slaney")
    return np.ascontiguousarray(weights.T, dtype=np.float32)


def stft_window(window_samples: int) -> np.ndarray:
    """Periodic Hann window, shape ``(window_samples,)`` float32 (before padding to n_fft)."""
    return librosa.filters.get_window("hann", window_samples, fftbins=True).astype(np.float32)


def logmel_batch(waveforms: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Log-mel (dB) of equal-length clips with librosa.

    Args:
        waveforms: ``(batch, samples)`` or ``(samples,)`` float, at ``config.sample_rate_hz``.
        config: the front-end parameters.

    Returns:
        ``(batch, frames, n_mels)`` (or ``(frames, n_mels)``) float32 dB, with
        ``frames = config.num_frames(samples)``.
    """
    waveforms = np.asarray(waveforms, dtype=np.float32)
    if waveforms.ndim not in (1, 2):
        raise ValueError(f"expected (samples,) or (batch, samples), got shape {waveforms.shape}")
    num_frames = config.num_frames(waveforms.shape[-1])
    if num_frames == 0:
        return np.zeros(waveforms.shape[:-1] + (0, config.n_mels), dtype=np.float32)
    with warnings.catch_warnings():
        # Clips shorter than n_fft are well defined here (zero centre padding); librosa warns.
        warnings.filterwarnings("ignore", message="n_fft=.* is too large", category=UserWarning)
        mel_power = librosa.feature.melspectrogram(
            y=waveforms, sr=config.sample_rate_hz, n_fft=config.n_fft,
            hop_length=config.hop_samples, win_length=config.window_samples, window="hann",
            center=True, pad_mode="constant", power=2.0, n_mels=config.n_mels,
            fmin=config.mel_min_hz, fmax=config.mel_max_hz, htk=False, norm="slaney",
        )  # (..., n_mels, 1 + samples // hop)
    log_mel = 10.0 * np.log10(np.maximum(mel_power, config.amin_power))
    log_mel = np.swapaxes(log_mel, -1, -2)[..., :num_frames, :]  # drop librosa's extra last frame
    return np.ascontiguousarray(log_mel, dtype=np.float32)


def logmel_librosa(waveform: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Reference log-mel (dB) of one clip: ``(samples,)`` -> ``(frames, n_mels)`` float32.

    ``frames = config.num_frames(samples)``; computed in float32, as cached.
    """
    waveform = np.asarray(waveform)
    if waveform.ndim != 1:
        raise ValueError(f"expected a mono waveform of shape (samples,), got {waveform.shape}")
    return logmel_batch(waveform, config)


class LogmelStream:
    """:func:`logmel_librosa` of a waveform arriving in blocks, in memory bounded by the block.

    Frame ``i`` is centred on sample ``i * hop`` (spec item 1): it needs samples up to
    ``i * hop + n_fft // 2``. Each :meth:`push` computes, with librosa on the buffered
    samples (``center=False``; the left centre padding is put in front of the first block),
    the frames its samples complete; :meth:`flush` adds the right padding and returns the
    rest, up to ``config.num_frames(samples)``. The frames equal the one-call result (same
    STFT frames; float32 round-off only: measured <= 4e-6 dB on noise plus a tone).
    """

    def __init__(self, config: FeatureConfig):
        self.config = config
        self._buffer = np.zeros(config.n_fft // 2, np.float32)   # the left centre padding
        self._samples = 0
        self._frames = 0

    def push(self, samples: np.ndarray) -> np.ndarray:
        """New mono samples -> the (frames, n_mels) dB frames they complete."""
        samples = np.asarray(samples, np.float32)
        self._buffer = np.concatenate([self._buffer, samples])
        self._samples += len(samples)
        return self._emit(self.config.num_frames(self._samples) - self._frames)

    def flush(self) -> np.ndarray:
        """End of the waveform: its last frames (right centre padding with zeros)."""
        self._buffer = np.concatenate([self._buffer, np.zeros(self.config.n_fft // 2, np.float32)])
        return self._emit(self.config.num_frames(self._samples) - self._frames)

    def _emit(self, wanted: int) -> np.ndarray:
        n_fft, hop = self.config.n_fft, self.config.hop_samples
        count = min(wanted, (len(self._buffer) - n_fft) // hop + 1 if len(self._buffer) >= n_fft else 0)
        if count <= 0:
            return np.zeros((0, self.config.n_mels), np.float32)
        span = (count - 1) * hop + n_fft
        mel_power = librosa.feature.melspectrogram(
            y=self._buffer[:span], sr=self.config.sample_rate_hz, n_fft=n_fft, hop_length=hop,
            win_length=self.config.window_samples, window="hann", center=False, power=2.0,
            n_mels=self.config.n_mels, fmin=self.config.mel_min_hz, fmax=self.config.mel_max_hz,
            htk=False, norm="slaney")  # (n_mels, count)
        self._buffer = self._buffer[count * hop:]
        self._frames += count
        return np.ascontiguousarray((10.0 * np.log10(np.maximum(mel_power, self.config.amin_power))).T,
                                    dtype=np.float32)



def logmel_file(path, config: FeatureConfig) -> np.ndarray:
    """(frames, n_mels) dB of an audio file, read in blocks (:func:`sedweak.audio.audio_blocks`:
    mono, resampled) through :class:`LogmelStream`; AudioError naming the file for a bad one,
    or one shorter than a feature hop."""
    from sedweak.audio import AudioError, audio_blocks

    stream, parts, samples = LogmelStream(config), [], 0
    for block in audio_blocks(path, config.sample_rate_hz):
        samples += len(block)
        parts.append(stream.push(block))
    parts.append(stream.flush())
    logmel = np.concatenate(parts)
    if logmel.shape[0] == 0:
        raise AudioError(f"{path}: {samples} samples, shorter than one feature hop")
    return logmel

# Operations on log-mels in dB (augmentation, mixing, self-supervised positives).

def mix_logmels(a_db: np.ndarray, b_db: np.ndarray, b_gain_db: float) -> np.ndarray:
    """Log-mel of the sum of two signals' mel powers (b scaled by ``b_gain_db``)."""
    return (10.0 * np.logaddexp(a_db * np.log(10) / 10, (b_db + b_gain_db) * np.log(10) / 10) / np.log(10)
            ).astype(np.float32)


def shift_bands(x: np.ndarray, bands: int) -> np.ndarray:
    """(frames, n_mels) rolled by ``bands`` along mel (up when > 0), the vacated bins
    filled with the edge bin they came from (no wrap-around of low into high frequencies)."""
    if bands == 0:
        return x
    out = np.empty_like(x)
    if bands > 0:
        out[:, bands:], out[:, :bands] = x[:, :-bands], x[:, :1]
    else:
        out[:, :bands], out[:, bands:] = x[:, -bands:], x[:, -1:]
    return out
