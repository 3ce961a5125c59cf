"""In-graph log-mel front end (Keras layer), the twin of :func:`sedweak.features.logmel_librosa`.

See :mod:`sedweak.features` for the shared spec and the measured agreement.
"""

from __future__ import annotations

import keras

from sedweak.config import FeatureConfig
from sedweak.features import mel_matrix, stft_window


@keras.saving.register_keras_serializable(package="sedweak")
class LogMel(keras.layers.Layer):
    """In-graph log-mel front end: ``(batch, samples)`` -> ``(batch, frames, n_mels)`` dB.

    Same spec as :func:`logmel_librosa` (see the module docstring);
    ``frames = samples // hop_samples``. Always computes in float32; no weights
    (window and mel matrix are constants rebuilt from the arguments).
    """

    def __init__(self, sample_rate_hz: int = 16000, window_samples: int = 400,
                 hop_samples: int = 160, n_fft: int = 512, n_mels: int = 64,
                 mel_min_hz: float = 0.0, mel_max_hz: float = 8000.0,
                 amin_power: float = 1e-10, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if self.compute_dtype != "float32":
            raise ValueError(f"LogMel computes in float32 only (float16 overflows), "
                             f"got dtype {self.compute_dtype}")
        if not 0 < window_samples <= n_fft:
            raise ValueError(f"need 0 < window_samples <= n_fft, got {window_samples}, {n_fft}")
        if hop_samples <= 0:
            raise ValueError(f"hop_samples must be > 0, got {hop_samples}")
        self.sample_rate_hz = int(sample_rate_hz)
        self.window_samples = int(window_samples)
        self.hop_samples = int(hop_samples)
        self.n_fft = int(n_fft)
        self.n_mels = int(n_mels)
        self.mel_min_hz = float(mel_min_hz)
        self.mel_max_hz = float(mel_max_hz)
        self.amin_power = float(amin_power)
        self._window = stft_window(self.window_samples)
        self._mel_matrix = mel_matrix(self.sample_rate_hz, self.n_fft, self.n_mels,
                                      self.mel_min_hz, self.mel_max_hz)

    @classmethod
    def from_feature_config(cls, config: FeatureConfig, **kwargs) -> "LogMel":
        """The layer for ``config`` (``kwargs``: Layer options such as ``name``)."""
        return cls(sample_rate_hz=config.sample_rate_hz, window_samples=config.window_samples,
                   hop_samples=config.hop_samples, n_fft=config.n_fft, n_mels=config.n_mels,
                   mel_min_hz=config.mel_min_hz, mel_max_hz=config.mel_max_hz,
                   amin_power=config.amin_power, **kwargs)

    def call(self, waveforms):
        """``waveforms``: ``(batch, samples)`` float32 -> ``(batch, samples // hop, n_mels)`` dB."""
        ops = keras.ops
        waveforms = ops.cast(waveforms, "float32")
        num_frames = ops.shape(waveforms)[-1] // self.hop_samples
        half = self.n_fft // 2
        padded = ops.pad(waveforms, [(0, 0), (half, half)])  # (batch, samples + n_fft), zeros
        real, imag = ops.stft(padded, self.window_samples, self.hop_samples, self.n_fft,
                              window=self._window, center=False)  # (batch, 1 + samples // hop, bins)
        power = real * real + imag * imag
        mel_power = ops.matmul(power, ops.convert_to_tensor(self._mel_matrix))  # (..., n_mels)
        log_mel = 10.0 * ops.log10(ops.maximum(mel_power, self.amin_power))
        return log_mel[:, :num_frames, :]

    def compute_output_shape(self, input_shape):
        samples = input_shape[-1]
        frames = None if samples is None else samples // self.hop_samples
        return (input_shape[0], frames, self.n_mels)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(sample_rate_hz=self.sample_rate_hz, window_samples=self.window_samples,
                      hop_samples=self.hop_samples, n_fft=self.n_fft, n_mels=self.n_mels,
                      mel_min_hz=self.mel_min_hz, mel_max_hz=self.mel_max_hz,
                      amin_power=self.amin_power)
        return config
