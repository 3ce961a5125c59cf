"""Log-mel front end: librosa reference vs in-graph ``LogMel`` layer, independent references, export.

No expected value here comes from ``sedweak.features`` itself. The references are
(1) a float64 numpy STFT written in this file from the spec at the top of
``sedweak/features.py`` (zero centre padding, periodic Hann of ``window_samples``
centred in ``n_fft``, ``librosa.filters.mel(htk=False, norm="slaney")`` -- the
filterbank the spec names --, ``10 log10(max(power, amin))``, ``samples // hop``
frames), itself checked against ``librosa.stft`` with the spec's arguments; and
(2) hand maths on an impulse (a flat spectrum of known level) and on a bin-centred
cosine (the window's spectrum, shifted), and digital silence (exactly the floor).
"""

from __future__ import annotations

import warnings

import keras
import librosa
import numpy as np
import pytest

from sedweak.config import FeatureConfig
from sedweak.features import logmel_batch, logmel_librosa
from sedweak.models.frontend import LogMel

CONFIG = FeatureConfig()
SR = CONFIG.sample_rate_hz
FLOOR_DB = 10.0 * np.log10(CONFIG.amin_power)  # -100 dB


def _sine(seconds: float = 1.0, freq_hz: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _noise(seconds: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal(int(seconds * SR)) * 0.1).astype(np.float32)


def _chirp(seconds: float = 2.0) -> np.ndarray:
    """Speech-like: 100 Hz -> 4 kHz sweep with a 4 Hz syllable-rate envelope."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * (100 * t + 0.5 * (4000 - 100) / seconds * t**2)
    return (0.3 * np.sin(phase) * (1 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


SIGNALS = {"sine": lambda: _sine(2.0), "noise": lambda: _noise(2.0), "chirp": _chirp}


@pytest.fixture(scope="module")
def layer() -> LogMel:
    return LogMel.from_feature_config(CONFIG)


def _layer_logmel(layer: LogMel, waveform: np.ndarray) -> np.ndarray:
    """``(samples,)`` -> ``(frames, n_mels)`` through the Keras layer."""
    return keras.ops.convert_to_numpy(layer(waveform[None, :]))[0]


# ----------------------------------------------------------------------------- (a) agreement


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_layer_matches_librosa(layer, name):
    """Max |dB diff|, by depth below the clip's peak. Measured (2 s / 10 s clips): noise 1.1e-5 dB
    on every bin; sine and chirp <= 1.4e-4 within 60 dB, <= 2.0e-3 within 80 dB, <= 0.17 dB deeper
    (float32 FFT round-off near -100 dB)."""
    waveform = SIGNALS[name]()
    reference = logmel_librosa(waveform, CONFIG)
    ours = _layer_logmel(layer, waveform)
    assert ours.shape == reference.shape == (CONFIG.num_frames(len(waveform)), CONFIG.n_mels)
    diff = np.abs(ours.astype(np.float64) - reference)
    depth_db = reference.max() - reference
    both_at_floor = (reference <= FLOOR_DB + 1e-3) & (ours <= FLOOR_DB + 1e-3)
    assert diff[depth_db <= 60].max() <= 2e-4
    assert diff[depth_db <= 80].max() <= 5e-3
    assert diff[~both_at_floor].max() <= 0.5
    if name == "noise":  # broadband: no deep bins, so the bound holds everywhere
        assert diff.max() <= 5e-5


def test_batch_equals_one_at_a_time():
    waveforms = np.stack([_sine(1.0), _noise(1.0)])
    batch = logmel_batch(waveforms, CONFIG)
    assert batch.shape == (2, 100, 64) and batch.dtype == np.float32
    for waveform, features in zip(waveforms, batch):
        np.testing.assert_allclose(features, logmel_librosa(waveform, CONFIG), atol=1e-5)


# ----------------------------------------------------------------------------- (b) independent references


def _hann_in_n_fft(config: FeatureConfig) -> np.ndarray:
    """Periodic Hann of ``window_samples`` L, ``0.5 - 0.5 cos(2 pi n / L)``, centred in ``n_fft`` by zeros."""
    length, n_fft = config.window_samples, config.n_fft
    window = np.zeros(n_fft)
    left = (n_fft - length) // 2
    window[left:left + length] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / length)
    return window


def _reference_power(waveform: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """``|STFT|^2`` in float64, by hand: ``n_fft // 2`` zeros on each side; frame ``i`` is
    ``padded[i * hop : i * hop + n_fft]`` (centred on sample ``i * hop``), for the
    ``samples // hop`` frames of the spec. Shape ``(frames, n_fft // 2 + 1)``."""
    waveform = np.asarray(waveform, np.float64)
    n_fft, hop = config.n_fft, config.hop_samples
    padded = np.concatenate([np.zeros(n_fft // 2), waveform, np.zeros(n_fft // 2)])
    starts = hop * np.arange(config.num_frames(len(waveform)))
    frames = padded[starts[:, None] + np.arange(n_fft)] * _hann_in_n_fft(config)
    return np.abs(np.fft.rfft(frames, axis=-1)) ** 2


def _mel_weights(config: FeatureConfig) -> np.ndarray:
    """The spec's filterbank (step 3), float64, ``(n_mels, n_fft // 2 + 1)``."""
    return librosa.filters.mel(sr=config.sample_rate_hz, n_fft=config.n_fft, n_mels=config.n_mels,
                               fmin=config.mel_min_hz, fmax=config.mel_max_hz, htk=False, norm="slaney",
                               dtype=np.float64)


def _to_db(mel_power: np.ndarray, config: FeatureConfig) -> np.ndarray:
    return 10.0 * np.log10(np.maximum(mel_power, config.amin_power))


def _reference_logmel(waveform: np.ndarray, config: FeatureConfig = CONFIG) -> np.ndarray:
    """``(frames, n_mels)`` float64 dB from :func:`_reference_power` (no ``sedweak`` code)."""
    return _to_db(_reference_power(waveform, config) @ _mel_weights(config).T, config)


IMPLEMENTATIONS = ("librosa", "layer")

# Largest |dB error| allowed against the float64 reference, by depth below the clip's peak
# (within 60 dB, within 80 dB, any depth). Both implementations compute in float32, so
# round-off is the only error; it grows as a bin falls towards the -100 dB floor, where a
# fixed absolute round-off is a larger share of the bin's power. Measured on the signals of
# this file: librosa (numpy's float32 FFT) <= 1e-5 dB at any depth; the layer (tf.signal's
# float32 FFT) <= 8e-5 within 60 dB, <= 1.1e-3 within 80 dB, <= 0.12 dB deeper (chirp bins
# near -99 dB). Bounds: 3-5x the measured values.
TOLERANCE_DB = {"librosa": (3e-5, 3e-5, 5e-5), "layer": (2e-4, 5e-3, 0.5)}


def _features(layer: LogMel, implementation: str, waveform: np.ndarray) -> np.ndarray:
    if implementation == "librosa":
        return logmel_librosa(waveform, CONFIG)
    return _layer_logmel(layer, waveform)


def _assert_close_by_depth(ours: np.ndarray, reference: np.ndarray, implementation: str,
                           anywhere: float | None = None) -> None:
    """``TOLERANCE_DB`` tiers; ``anywhere`` replaces the bound for bins deeper than 80 dB."""
    assert ours.shape == reference.shape
    diff = np.abs(ours.astype(np.float64) - reference)
    depth_db = reference.max() - reference
    within_60, within_80, deep = TOLERANCE_DB[implementation]
    anywhere = deep if anywhere is None else anywhere
    assert diff[depth_db <= 60].max() <= within_60
    assert diff[depth_db <= 80].max() <= within_80
    assert diff.max() <= anywhere


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_the_demo_front_end_matches_the_float64_reference(name, implementation, demo_features):
    """The demo recipe's own front end (40 ms windows in n_fft 1024, 20 ms hop): the same
    spec, other sizes; a size the layer or librosa path ignored would break it."""
    config = demo_features
    assert (config.window_samples, config.hop_samples, config.n_fft) != (CONFIG.window_samples, CONFIG.hop_samples,
                                                                           CONFIG.n_fft)
    waveform = SIGNALS[name]()
    if implementation == "librosa":
        ours = logmel_librosa(waveform, config)
    else:
        ours = _layer_logmel(LogMel.from_feature_config(config), waveform)
    reference = _reference_logmel(waveform, config)
    assert ours.shape == (len(waveform) // config.hop_samples, config.n_mels)
    _assert_close_by_depth(ours, reference, implementation)


def test_reference_stft_is_librosa_stft_with_the_spec_arguments():
    """The hand STFT of this file is what the spec calls librosa's behaviour: ``librosa.stft``
    with ``center=True, pad_mode="constant"``, ``window="hann"`` and ``win_length`` (a periodic
    Hann zero-padded to ``n_fft``), minus librosa's extra last frame. Both float64: they agree
    to round-off (measured 6e-16 of the peak bin)."""
    for waveform in (_noise(1.0), _chirp(2.0)[:16001]):
        ours = _reference_power(waveform, CONFIG)
        theirs = np.abs(librosa.stft(waveform.astype(np.float64), n_fft=CONFIG.n_fft, hop_length=CONFIG.hop_samples,
                                     win_length=CONFIG.window_samples, window="hann", center=True,
                                     pad_mode="constant")) ** 2
        assert theirs.shape[1] == 1 + len(waveform) // CONFIG.hop_samples == ours.shape[0] + 1
        np.testing.assert_allclose(ours, theirs[:, :-1].T, rtol=0, atol=1e-12 * theirs.max())


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_matches_the_float64_reference(layer, name, implementation):
    """Every bin of sine, noise and chirp equals the hand reference up to float32 round-off
    (``TOLERANCE_DB``); a wrong pad mode, window, mel norm or frame count breaks it."""
    waveform = SIGNALS[name]()
    _assert_close_by_depth(_features(layer, implementation, waveform), _reference_logmel(waveform), implementation)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_impulse_by_hand(layer, implementation):
    """One sample of amplitude ``a`` at sample 100 of a 1600-sample clip, by hand.

    Frame ``i`` is centred on sample ``160 i``; the impulse lies ``100 - 160 i`` samples from
    that centre, i.e. at index ``200 + 100 - 160 i`` of the 400-sample periodic Hann (whose
    peak, index 200, is at the frame centre): frame 0 -> index 300, ``w = 0.5 - 0.5 cos(3 pi / 2)
    = 0.5``; frame 1 -> index 140, ``w = 0.5 - 0.5 cos(0.7 pi)``; frame 2 -> index -20, in the
    zero padding of the window to 512: nothing. A windowed impulse has a flat spectrum,
    ``|X[k]|^2 = (a w)^2`` in every bin, so band ``b`` has power ``(a w)^2 sum_k M[b, k]``.
    Frames 2..9 are digital silence: exactly the floor. 1600 // 160 = 10 frames.
    Reflect padding (a mirror impulse at -100, also in frame 0), a symmetric or uncentred
    window, another mel norm or another frame count each break this.
    """
    amplitude = 0.5
    waveform = np.zeros(1600, np.float32)
    waveform[100] = amplitude
    band_sums = _mel_weights(CONFIG).sum(axis=1)  # sum_k M[b, k], Slaney-normalised triangles
    expected = np.full((10, CONFIG.n_mels), FLOOR_DB)
    expected[0] = 10 * np.log10((amplitude * 0.5) ** 2 * band_sums)
    expected[1] = 10 * np.log10((amplitude * (0.5 - 0.5 * np.cos(0.7 * np.pi))) ** 2 * band_sums)
    features = _features(layer, implementation, waveform)
    assert features.shape == (10, CONFIG.n_mels)
    # float32 FFT of one sample and a float32 mel product: measured <= 3e-6 dB
    np.testing.assert_allclose(features[:2], expected[:2], rtol=0, atol=2e-5)
    assert (features[2:] == np.float32(FLOOR_DB)).all()


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_bin_centred_cosine_by_hand(layer, implementation):
    """``A cos(2 pi k n / n_fft)`` with ``k = 131`` (4093.75 Hz): in a frame whose window lies in
    the clip, the spectrum is the window's DFT ``W`` shifted to ``+-k`` (shift theorem):
    ``X[j] = A/2 (e^{i phi} W[j - k] + e^{-i phi} W[j + k])``, ``phi = 2 pi k (160 i - 256) / 512``
    for frame ``i``. ``W[0]`` is the window sum, ``L / 2 = 200`` for a periodic Hann, so the
    tone's bin has power ``(A L / 4)^2``. The loudest band is band 50, whose centre (4093.67 Hz,
    ``librosa.mel_frequencies``) is the nearest to the tone. Frames 2..98 of 100 are those
    whose 400 windowed samples lie in the 1 s clip.

    The hand spectrum is that of the exact cosine; the implementations get it rounded to
    float32, white noise of ~1e-8 that only shows within ~20 dB of the floor: there (deeper
    than 80 dB below the peak) the float64 numpy reference of the rounded cosine differs from
    the hand spectrum by 1.1e-3 dB, librosa by the same, the layer by 0.053 dB; bounds 5e-3
    and 0.5 dB. The hand spectrum equals the float64 numpy reference of a float64 cosine to
    5e-8 dB (the two references agree)."""
    amplitude, k, n_fft, hop = 0.5, 131, CONFIG.n_fft, CONFIG.hop_samples
    waveform = (amplitude * np.cos(2 * np.pi * k * np.arange(SR) / n_fft)).astype(np.float32)
    window_dft = np.fft.fft(_hann_in_n_fft(CONFIG))
    assert window_dft[0] == pytest.approx(CONFIG.window_samples / 2, abs=1e-9)
    bins = np.arange(n_fft // 2 + 1)
    interior = np.arange(2, 99)
    phases = 2 * np.pi * k * (hop * interior - n_fft // 2) / n_fft
    spectrum = amplitude / 2 * (np.exp(1j * phases)[:, None] * window_dft[(bins - k) % n_fft]
                                + np.exp(-1j * phases)[:, None] * window_dft[(bins + k) % n_fft])
    power = np.abs(spectrum) ** 2
    assert power[:, k] == pytest.approx((amplitude * CONFIG.window_samples / 4) ** 2, rel=1e-6)
    expected = _to_db(power @ _mel_weights(CONFIG).T, CONFIG)
    exact_cosine = amplitude * np.cos(2 * np.pi * k * np.arange(SR) / n_fft)
    np.testing.assert_allclose(_reference_logmel(exact_cosine)[interior], expected, rtol=0, atol=1e-6)
    centres = librosa.mel_frequencies(CONFIG.n_mels + 2, fmin=CONFIG.mel_min_hz, fmax=CONFIG.mel_max_hz)[1:-1]
    assert np.abs(centres - k * SR / n_fft).argmin() == 50
    features = _features(layer, implementation, waveform)
    assert features.shape == (100, CONFIG.n_mels)
    assert (features[interior].argmax(axis=1) == 50).all()
    _assert_close_by_depth(features[interior], expected, implementation,
                           anywhere={"librosa": 5e-3, "layer": 0.5}[implementation])


# ----------------------------------------------------------------------------- (c) shapes, silence


def test_ten_second_clip_shape(layer):
    waveform = _noise(10.0)
    assert logmel_librosa(waveform, CONFIG).shape == (1000, 64)
    assert tuple(layer(waveform[None]).shape) == (1, 1000, 64)
    assert layer.compute_output_shape((None, 160000)) == (None, 1000, 64)


@pytest.mark.parametrize("num_samples", [0, 100, 159, 160, 1000, 16001])
def test_short_and_odd_lengths_give_num_frames(layer, num_samples):
    waveform = _noise(1.1)[:num_samples]
    expected = (num_samples // 160, 64)
    reference = logmel_librosa(waveform, CONFIG)
    ours = _layer_logmel(layer, waveform)
    assert reference.shape == ours.shape == expected
    # noise at 0.1 RMS: no bin near the floor, so float32 round-off stays small (measured <= 1e-5 dB)
    np.testing.assert_allclose(reference, _reference_logmel(waveform), rtol=0, atol=5e-5)
    np.testing.assert_allclose(ours, reference, atol=1e-3)


def test_silence_is_exactly_the_floor(layer):
    """Digital silence: every mel power is 0 < amin_power, so every value is 10 log10(1e-10) = -100 dB."""
    silence = np.zeros(16000, dtype=np.float32)
    assert FLOOR_DB == -100.0
    np.testing.assert_array_equal(logmel_librosa(silence, CONFIG), np.float32(-100.0))  # numpy: exact
    # the layer takes log10 of float32(1e-10) in float32: within one float32 ulp of 100 (7.6e-6)
    np.testing.assert_allclose(_layer_logmel(layer, silence), -100.0, rtol=0, atol=8e-6)


def test_rejects_wrong_ranks_and_float16():
    with pytest.raises(ValueError, match="mono"):
        logmel_librosa(np.zeros((2, 1600), np.float32), CONFIG)
    with pytest.raises(ValueError, match="float32"):
        LogMel(dtype="float16")
    with pytest.raises(ValueError, match="window_samples"):
        LogMel(window_samples=600, n_fft=512)


# ----------------------------------------------------------------------------- (d) config, saving


def test_get_config_round_trip():
    original = LogMel(sample_rate_hz=8000, window_samples=200, hop_samples=80, n_fft=256,
                      n_mels=40, mel_min_hz=50.0, mel_max_hz=4000.0, amin_power=1e-8, name="fe")
    config = original.get_config()
    for key in ("sample_rate_hz", "window_samples", "hop_samples", "n_fft", "n_mels",
                "mel_min_hz", "mel_max_hz", "amin_power"):
        assert config[key] == getattr(original, key)
    clone = LogMel.from_config(config)
    assert clone.get_config() == config
    waveform = _noise(0.5)[None]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clone(waveform)),
                                  keras.ops.convert_to_numpy(original(waveform)))


def test_from_feature_config_uses_config_values():
    layer = LogMel.from_feature_config(CONFIG)
    assert (layer.window_samples, layer.hop_samples, layer.n_fft) == (400, 160, 512)
    assert layer.amin_power == CONFIG.amin_power


def test_keras_file_save_load(tmp_path):
    inputs = keras.Input((1600,))
    features = LogMel.from_feature_config(CONFIG)(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(features))
    model = keras.Model(inputs, outputs)
    path = tmp_path / "tiny.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    waveforms = np.stack([_sine(0.1), _noise(0.1)])
    assert isinstance(loaded.layers[1], LogMel)
    np.testing.assert_array_equal(loaded.predict_on_batch(waveforms), model.predict_on_batch(waveforms))


# ----------------------------------------------------------------------------- TFLite (~2 s)


def test_tflite_conversion_uses_builtin_ops_only(tmp_path):
    """ExportArchive -> SavedModel -> TFLiteConverter (TFLITE_BUILTINS only); parity with librosa."""
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TFLite export needs the TensorFlow backend")
    inputs = keras.Input((16000,), batch_size=1)
    model = keras.Model(inputs, LogMel.from_feature_config(CONFIG)(inputs))
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", model.call, input_signature=[tf.TensorSpec((1, 16000), tf.float32)])
    archive.write_out(str(tmp_path / "saved_model"), verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "saved_model"))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    flatbuffer = converter.convert()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    op_names = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "RFFT2D" in op_names and not any(name.startswith("Flex") for name in op_names)
    interpreter.allocate_tensors()
    waveform = _noise(1.0)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], waveform[None])
    interpreter.invoke()
    output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
    assert output.shape == (100, 64)
    np.testing.assert_allclose(output, logmel_librosa(waveform, CONFIG), atol=1e-4)
