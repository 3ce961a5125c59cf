"""Dynamic mixing: fresh soundscapes in every training batch, from augmented bank events.

A fixed synthetic train split shows the model the same few hundred mixes for every epoch;
it learns them, recordings and all. Here each batch is mixed anew, seeded by (seed, epoch,
batch), from the *train split's* bank files (the split of :func:`sedweak.synth.split_bank`,
so no eval recording is ever heard) with the same event counts, SNRs, onsets and
background level as ``data.synth`` (plus its gain jitters).

Mixing happens in the **mel-power domain**: each event and background is turned into mel
power once (:class:`MelSource`), and a soundscape is the sum of their scaled, shifted mel
powers, then ``10 log10``. Events are placed on feature-hop boundaries, where the STFT of a
shifted signal is the shifted STFT, so every source's own contribution is exact; what is
left out is the cross term ``2 Re(X conj(Y))`` of two sources in one bin, whose expectation
is zero for independent sources. Per bin it is not (tests/test_dynamic_mix.py measures it):
two equally loud noises mixed this way differ from the rendered mix by a median 1.3 dB per
bin, 0.4-0.5 dB louder on average in dB (the log of a sum of powers fluctuates less);
20 dB apart, by 0.28 dB. In exchange a batch of 16 fresh 10 s clips costs ~25 ms (1.5 ms a
clip, measured) instead of ~1 s of rendering and STFTs, so the demo's CPU budget holds. The
eval splits stay rendered waveforms, so any mismatch this approximation adds shows in the
scores.

Before mixing, each event exists in ``augment.event_variants`` versions: the clean one and
waveform augmentations drawn per variant (audiomentations: pitch shift, time stretch,
seven-band EQ, band-pass; and a synthetic room, :func:`synthetic_room`), each re-trimmed
to its active region and re-measured, so labels and SNRs follow the augmented sound.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from sedweak.config import AugmentConfig, FeatureConfig, SynthConfig
from sedweak.features import logmel_librosa
from sedweak.labels import Event, events_to_frames, weak_vector
from sedweak.soundbank import BankClip, stable_hash
from sedweak.synth import (MIN_EVENT_SECONDS_IN_CLIP, PEAK_LIMIT, BankAudio, Foreground, label_offset,
                           trim_to_active, truncated_normal)
from sedweak.losses import MASKED


@dataclass(frozen=True)
class MelSource:
    """One sound as mel power: ``power`` (frames, n_mels) float32 of its waveform (feature
    hop), ``frame_energy`` (frames,) mean squared sample per hop, ``peak`` max |sample|.
    Foregrounds also keep their trimmed ``foreground`` (active frames, active RMS)."""

    power: np.ndarray
    frame_energy: np.ndarray
    peak: float
    foreground: Foreground | None = None


def mel_power(waveform: np.ndarray, features: FeatureConfig) -> np.ndarray:
    """(frames, n_mels) float32 mel power of a waveform: the log-mel spec without the log."""
    return (10.0 ** (logmel_librosa(waveform, features).astype(np.float64) / 10.0)).astype(np.float32)


def _frame_energy(waveform: np.ndarray, hop: int) -> np.ndarray:
    frames = len(waveform) // hop
    return (np.asarray(waveform[:frames * hop], np.float64).reshape(frames, hop) ** 2).mean(axis=1)


@contextlib.contextmanager
def seeded_global_rngs(seed: Sequence[int]):
    """Seed Python's and NumPy's global RNGs (audiomentations draws from them) for the block,
    then put back their states: the draws are reproducible and nothing else is disturbed."""
    py_state, np_state = random.getstate(), np.random.get_state()
    seed_int = int(np.random.SeedSequence(list(seed)).generate_state(1)[0])
    random.seed(seed_int)
    np.random.seed(seed_int)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def synthetic_room(waveform: np.ndarray, sample_rate_hz: int, rng: np.random.Generator,
                   rt60_seconds: tuple[float, float] = (0.2, 0.8),
                   drr_db: tuple[float, float] = (0.0, 12.0)) -> np.ndarray:
    """``waveform`` in a synthetic room: a unit direct path plus an exponentially decaying
    Gaussian tail (energy -60 dB at RT60), scaled to a direct-to-reverberant ratio drawn in
    ``drr_db``; output longer by the tail. Written by hand: no impulse responses ship with
    sedweak (nothing may be downloaded) and a room simulator (pyroomacoustics) is a heavy
    compiled dependency for a few lines of arithmetic."""
    from scipy.signal import fftconvolve

    rt60 = float(rng.uniform(*rt60_seconds))
    n = max(2, int(rt60 * sample_rate_hz))
    t = np.arange(1, n) / sample_rate_hz
    tail = rng.standard_normal(n - 1) * np.exp(-6.9078 * t / rt60)   # 10^(-60/20) at t = rt60
    drr = float(rng.uniform(*drr_db))
    tail *= np.sqrt(10.0 ** (-drr / 10.0) / np.sum(tail ** 2))
    impulse = np.concatenate([[1.0], tail])
    return fftconvolve(np.asarray(waveform, np.float64), impulse).astype(np.float32)


def augment_event(waveform: np.ndarray, sample_rate_hz: int, augment: AugmentConfig,
                  seed: Sequence[int]) -> np.ndarray:
    """One seeded waveform augmentation of an event (module docstring)."""
    from audiomentations import BandPassFilter, Compose, PitchShift, SevenBandParametricEQ, TimeStretch

    chain = Compose([
        PitchShift(min_semitones=-augment.event_pitch_semitones_max, max_semitones=augment.event_pitch_semitones_max,
                   p=0.5 if augment.event_pitch_semitones_max else 0.0),
        TimeStretch(min_rate=1 - augment.event_stretch_max, max_rate=1 + augment.event_stretch_max,
                    leave_length_unchanged=False, p=0.5 if augment.event_stretch_max else 0.0),
        SevenBandParametricEQ(min_gain_db=-6.0, max_gain_db=6.0, p=augment.event_eq_probability),
        BandPassFilter(min_center_freq=200.0, max_center_freq=4000.0, p=augment.event_bandpass_probability),
    ])
    with seeded_global_rngs(seed):
        out = chain(samples=np.asarray(waveform, np.float32), sample_rate=sample_rate_hz)
    rng = np.random.default_rng(list(seed))
    if rng.random() < augment.event_reverb_probability:
        out = synthetic_room(out, sample_rate_hz, rng)
    return np.asarray(out, np.float32)


def event_sources(clip: BankClip, audio: BankAudio, features: FeatureConfig, augment: AugmentConfig,
                  seed: int, index: int) -> list[MelSource]:
    """``augment.event_variants`` MelSources of one bank event: the clean one first."""
    clean = audio.raw(clip)
    out = []
    for variant in range(augment.event_variants):
        waveform = clean if variant == 0 else augment_event(clean, features.sample_rate_hz, augment,
                                                            (seed, index, variant))
        fg = trim_to_active(waveform, features.sample_rate_hz)
        if fg.active_rms <= 0 or features.num_frames(len(fg.audio)) == 0:
            continue   # silent or shorter than a hop after augmentation: not a usable event
        out.append(MelSource(mel_power(fg.audio, features), _frame_energy(fg.audio, features.hop_samples),
                             float(np.max(np.abs(fg.audio))), fg))
    return out


def background_source(clip: BankClip, audio: BankAudio, features: FeatureConfig, clip_seconds: float) -> MelSource:
    """A background looped to at least its own length + one clip, as mel power, so that any
    offset into the file has a full clip after it."""
    raw = audio.raw(clip)
    need = len(raw) + int(round(clip_seconds * features.sample_rate_hz)) + features.n_fft
    looped = np.tile(raw, -(-need // max(1, len(raw))))[:need]
    return MelSource(mel_power(looped, features), _frame_energy(looped, features.hop_samples),
                     float(np.max(np.abs(raw))) if len(raw) else 0.0)


class DynamicMixer:
    """Seeded fresh soundscapes as ``(logmel (frames, n_mels), strong (model_frames, classes),
    weak (classes,))`` from a split's bank pool (module docstring).

    Args:
        pool: class -> bank clips of the split; backgrounds: its background clips.
        classes: target order; synth: counts, SNRs, onsets and levels of the mixes;
        features: the front end; clip_seconds; time_pooling: model frames per feature frame;
        augment: the event-variant settings; seed: variants are drawn from it;
        label_type / weak_clip_strong_target: as :func:`sedweak.training.targets.build_targets`.
    """

    def __init__(self, pool: dict[str, list[BankClip]], backgrounds: Sequence[BankClip], classes: Sequence[str],
                 synth: SynthConfig, features: FeatureConfig, clip_seconds: float, time_pooling: int,
                 augment: AugmentConfig, seed: int = 0, label_type: str = "strong",
                 weak_clip_strong_target: str = "repeat"):
        audio = BankAudio(features.sample_rate_hz)
        self.label_type, self.weak_clip_strong_target = label_type, weak_clip_strong_target
        self.classes, self.synth, self.features = list(classes), synth, features
        self.clip_frames = features.num_frames(int(round(clip_seconds * features.sample_rate_hz)))
        self.clip_seconds, self.time_pooling = clip_seconds, time_pooling
        self.model_frames = self.clip_frames // time_pooling
        self.events: dict[str, list[MelSource]] = {}
        for label in sorted(pool):
            if label not in self.classes:
                continue
            sources = [s for i, clip in enumerate(sorted(pool[label], key=lambda c: c.relative_path))
                       for s in event_sources(clip, audio, features, augment, seed, stable_hash(f"{label}/{i}"))]
            if sources:
                self.events[label] = sources
        if not self.events:
            raise ValueError("dynamic mixing: no usable foreground event in the pool")
        self.backgrounds = [background_source(c, audio, features, clip_seconds)
                            for c in sorted(backgrounds, key=lambda c: c.relative_path)]
        if not self.backgrounds:
            raise ValueError("dynamic mixing: no background in the pool")

    def mix(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One fresh soundscape and its targets."""
        synth, hop, fps = self.synth, self.features.hop_samples, self.features.frames_per_second
        background = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
        spare = len(background.frame_energy) - self.clip_frames - 1
        start = int(rng.integers(0, max(1, spare)))
        excerpt = slice(start, start + self.clip_frames)
        gain_db = synth.background_gain_db
        if synth.background_gain_jitter_db > 0:
            gain_db += float(rng.uniform(-synth.background_gain_jitter_db, synth.background_gain_jitter_db))
        target_rms = 10.0 ** (gain_db / 20.0)
        bg_rms = float(np.sqrt(background.frame_energy[excerpt].mean()))
        bg_gain = target_rms / bg_rms if bg_rms > 0 else 1.0
        power = background.power[excerpt].astype(np.float64) * bg_gain ** 2
        peak = bg_gain * background.peak
        events = self._place_events(rng, power, target_rms, fps, hop)
        peak += sum(gain * source.peak for gain, source in events[1])
        if peak > PEAK_LIMIT:   # the renderer scales the whole mix down; bound by the sum of peaks
            power *= (PEAK_LIMIT / peak) ** 2
        logmel = 10.0 * np.log10(np.maximum(power, self.features.amin_power))
        strong = events_to_frames(events[0], self.classes, self.model_frames, fps / self.time_pooling)
        weak = weak_vector({e.label for e in events[0]}, self.classes)
        if self.label_type == "weak":   # as build_targets does for a weakly labelled clip
            strong = np.broadcast_to(weak, strong.shape) if self.weak_clip_strong_target == "repeat" \
                else np.full(strong.shape, MASKED, np.float32)
        return logmel.astype(np.float32), np.array(strong, np.float32), weak

    def _place_events(self, rng, power, target_rms, fps, hop):
        synth = self.synth
        labels = sorted(self.events)
        count = 1 if synth.mode == "waa" else int(rng.integers(synth.min_events, synth.max_events + 1))
        low = synth.onset_min_seconds
        high = min(synth.onset_max_seconds, self.clip_seconds - MIN_EVENT_SECONDS_IN_CLIP)
        placed: list[Event] = []
        gains: list[tuple[float, MelSource]] = []
        for _ in range(count):
            label = labels[int(rng.integers(len(labels)))]
            source = self.events[label][int(rng.integers(len(self.events[label])))]
            snr_db = float(rng.uniform(synth.snr_min_db, synth.snr_max_db))
            if synth.event_gain_jitter_db > 0:
                snr_db += float(rng.uniform(-synth.event_gain_jitter_db, synth.event_gain_jitter_db))
            for _ in range(10):
                onset_frame = int(round(truncated_normal(rng, synth.onset_mean_seconds, synth.onset_std_seconds,
                                                         low, high) * fps))
                onset = onset_frame * hop / self.features.sample_rate_hz
                offset = label_offset(source.foreground, onset, self.clip_seconds, self.features.sample_rate_hz)
                clash = any(e.label == label and onset < e.offset_seconds and e.onset_seconds < offset
                            for e in placed)
                if synth.allow_same_class_overlap or not clash:
                    gain = target_rms * 10.0 ** (snr_db / 20.0) / source.foreground.active_rms
                    length = min(len(source.power), len(power) - onset_frame)
                    power[onset_frame:onset_frame + length] += gain ** 2 * source.power[:length]
                    placed.append(Event("", onset, offset, label))
                    gains.append((gain, source))
                    break
        return placed, gains
