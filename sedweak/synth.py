"""Scaper-like, seeded soundscape synthesis with numpy only (no sox, no scaper).

Each clip = one background excerpt + foreground events (DESED / Turpault WAA recipe):

* background: random offset in a background file of the split, looped when shorter than
  the clip, scaled to ``background_gain_db`` RMS dBFS over the excerpt;
* events: ``waa`` mode exactly one, ``multi`` mode U{min_events..max_events}; label uniform
  over the classes, a foreground file of that class from the split; onset truncated
  normal(onset_mean, onset_std) in [onset_min, min(onset_max, clip - 0.25 s)]; event cut
  at the clip end; SNR ~ U(snr_min, snr_max) dB between the RMS of the event's *active*
  part and the background RMS; same-class overlaps re-drawn (MAX_PLACEMENT_TRIES onsets)
  then dropped, unless ``allow_same_class_overlap``;
* the mix is scaled down (everything, labels unchanged) only if its peak exceeds PEAK_LIMIT.

Active part: 20 ms frames whose energy is within ACTIVE_THRESHOLD_DB (-40 dB) of the
loudest frame of the foreground file. Foregrounds are trimmed to their first..last active
frame before placement, so strong-label onsets/offsets do not include quiet lead-in/out.

Splits: the bank is split by source recording (:func:`sedweak.soundbank.split_by_source`,
foregrounds and backgrounds), so train / valid / eval never share a recording. With
``synth.split_by: collection`` the eval split also draws on whole collections (the
manifest's ``source_package``) that train and valid never hear: recordings from another
origin, the harder and more honest test of a detector meant for other microphones.

Resumability: a split is rendered into ``audio/.<split>.partial`` and renamed into place;
``metadata/<split>_synth.json`` (all parameters + the bank manifest hash) is written
last. A split whose stamp matches and whose files exist is skipped; anything else is
re-rendered whole. Every clip has its own RNG (seed, split, index), so a split's content
depends only on the parameters.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from sedweak.audio import load_audio, write_wav
from sedweak.config import ConfigError, SynthConfig
from sedweak.io_utils import atomic_write_json, atomic_write_text
from sedweak.labels import Event, write_strong_tsv, write_weak_tsv
from sedweak.soundbank import (
    SPLITS,
    BankClip,
    SoundBank,
    SoundBankError,
    split_by_source,
)

ACTIVE_FRAME_SECONDS = 0.02
ACTIVE_THRESHOLD_DB = -40.0
MAX_PLACEMENT_TRIES = 20
MIN_EVENT_SECONDS_IN_CLIP = 0.25  # latest onset = clip_seconds - this (DESED: 0.25 s)
PEAK_LIMIT = 0.99  # headroom below 16-bit full scale
SOURCES_COLUMNS = ("filename", "role", "label", "bank_path", "source_group", "onset_seconds",
                   "offset_seconds", "bank_offset_seconds", "snr_db", "gain_db")


@dataclass(frozen=True)
class Foreground:
    """A foreground file trimmed to its active region (first..last active frame)."""

    audio: np.ndarray  # float32 (samples,)
    active_frames: np.ndarray  # bool (frames,), frame i = samples [i*hop, (i+1)*hop)
    active_rms: float  # RMS over the samples of the active frames, linear full scale
    hop_samples: int


def active_region(waveform: np.ndarray, sample_rate_hz: int) -> tuple[int, int, np.ndarray, float]:
    """Active frames of a (samples,) waveform: energy within ACTIVE_THRESHOLD_DB of the max.

    Returns (start_sample, stop_sample, active mask (frames,), active RMS). All-zero audio
    has no active frame: the whole file is returned with RMS 0.
    """
    hop = max(1, int(round(ACTIVE_FRAME_SECONDS * sample_rate_hz)))
    frames = -(-len(waveform) // hop)
    padded = np.zeros(frames * hop, dtype=np.float64)
    padded[: len(waveform)] = waveform
    energy = (padded.reshape(frames, hop) ** 2).mean(axis=1)  # (frames,)
    if energy.max() <= 0:
        return 0, len(waveform), np.zeros(frames, dtype=bool), 0.0
    active = energy >= energy.max() * 10.0 ** (ACTIVE_THRESHOLD_DB / 10.0)
    first, last = np.flatnonzero(active)[[0, -1]]
    rms = float(np.sqrt(energy[active].mean()))  # frames are equal-length: mean of means
    return int(first * hop), int(min(len(waveform), (last + 1) * hop)), active, rms


class BankAudio:
    """Loads each bank file once; foregrounds are trimmed and measured once."""

    def __init__(self, sample_rate_hz: int) -> None:
        self.sample_rate_hz = sample_rate_hz
        self._raw: dict[Path, np.ndarray] = {}
        self._fg: dict[Path, Foreground] = {}

    def raw(self, clip: BankClip) -> np.ndarray:
        if clip.path not in self._raw:
            self._raw[clip.path] = load_audio(clip.path, self.sample_rate_hz)
        return self._raw[clip.path]

    def foreground(self, clip: BankClip) -> Foreground:
        if clip.path not in self._fg:
            self._fg[clip.path] = trim_to_active(self.raw(clip), self.sample_rate_hz)
            del self._raw[clip.path]  # only the trimmed copy is needed from now on
        return self._fg[clip.path]


def trim_to_active(audio: np.ndarray, sample_rate_hz: int) -> Foreground:
    """A foreground waveform trimmed to its active region, with its active frames and RMS."""
    start, stop, active, rms = active_region(audio, sample_rate_hz)
    hop = max(1, int(round(ACTIVE_FRAME_SECONDS * sample_rate_hz)))
    # start is a frame boundary, so the trimmed audio's frames are a slice of `active`.
    first, n_frames = start // hop, -(-(stop - start) // hop)
    return Foreground(audio[start:stop], active[first:first + n_frames], rms, hop)


@dataclass(frozen=True)
class PlannedEvent:
    label: str
    clip: BankClip
    onset_seconds: float  # onset of the active region in the soundscape
    offset_seconds: float  # label offset: end of the last active frame kept in the clip
    snr_db: float


@dataclass(frozen=True)
class PlannedClip:
    filename: str
    background: BankClip
    background_offset_seconds: float
    events: tuple[PlannedEvent, ...]
    background_gain_db: float  # RMS dBFS of the background excerpt in the mix


# ----------------------------------------------------------------------------- planning


def truncated_normal(rng: np.random.Generator, mean: float, std: float, low: float, high: float) -> float:
    for _ in range(100):  # rejection sampling; falls back to uniform for absurd bounds
        x = rng.normal(mean, std) if std > 0 else mean
        if low <= x <= high:
            return float(x)
    return float(rng.uniform(low, high))


def label_offset(fg: Foreground, onset_seconds: float, clip_seconds: float, sample_rate_hz: int) -> float:
    """End of the last active frame that survives the cut at the clip end (seconds)."""
    onset_sample = int(round(onset_seconds * sample_rate_hz))
    kept = min(len(fg.audio), int(round(clip_seconds * sample_rate_hz)) - onset_sample)
    kept_frames = fg.active_frames[: -(-kept // fg.hop_samples)]
    active = np.flatnonzero(kept_frames)
    stop = kept if not len(active) else min(kept, (active[-1] + 1) * fg.hop_samples)
    return (onset_sample + stop) / sample_rate_hz


def _plan_events(rng: np.random.Generator, pool: dict[str, list[BankClip]], config: SynthConfig,
                 clip_seconds: float, cache: BankAudio, clip_index: int = 0) -> tuple[PlannedEvent, ...]:
    labels = sorted(pool)
    count = 1 if config.mode == "waa" else int(rng.integers(config.min_events, config.max_events + 1))
    low = config.onset_min_seconds
    high = min(config.onset_max_seconds, clip_seconds - MIN_EVENT_SECONDS_IN_CLIP)
    events: list[PlannedEvent] = []
    for _ in range(count):
        label = labels[int(rng.integers(len(labels)))]   # drawn either way: the other draws stay put
        if config.balance_classes:
            label = labels[clip_index % len(labels)]
        clip = pool[label][int(rng.integers(len(pool[label])))]
        snr_db = float(rng.uniform(config.snr_min_db, config.snr_max_db))
        if config.event_gain_jitter_db > 0:   # no draw at 0: the streams of plain mixes stay as they were
            snr_db += float(rng.uniform(-config.event_gain_jitter_db, config.event_gain_jitter_db))
        fg = cache.foreground(clip)
        for _ in range(MAX_PLACEMENT_TRIES):
            onset = round(truncated_normal(rng, config.onset_mean_seconds, config.onset_std_seconds,
                                            low, high) * cache.sample_rate_hz) / cache.sample_rate_hz
            offset = label_offset(fg, onset, clip_seconds, cache.sample_rate_hz)
            if config.event_max_seconds > 0:
                offset = min(offset, onset + config.event_max_seconds)
            clash = any(e.label == label and onset < e.offset_seconds and e.onset_seconds < offset
                        for e in events)
            if config.allow_same_class_overlap or not clash:
                events.append(PlannedEvent(label, clip, onset, offset, snr_db))
                break  # after MAX_PLACEMENT_TRIES clashes the event is dropped
    return tuple(sorted(events, key=lambda e: (e.onset_seconds, e.label)))


def plan_split(split_index: int, split: str, num_clips: int, pool: dict[str, list[BankClip]],
               backgrounds: Sequence[BankClip], config: SynthConfig, clip_seconds: float,
               cache: BankAudio) -> list[PlannedClip]:
    """Plans of ``num_clips`` clips; clip i uses RNG (config.seed, split_index, i)."""
    low = config.onset_min_seconds
    if low > clip_seconds - MIN_EVENT_SECONDS_IN_CLIP:
        raise ConfigError(f"synth.onset_min_seconds={low} leaves no room in a {clip_seconds} s clip")
    digits = max(4, len(str(num_clips - 1)))
    plans = []
    for i in range(num_clips):
        rng = np.random.default_rng([config.seed, split_index, i])
        background = backgrounds[int(rng.integers(len(backgrounds)))]
        spare = max(0.0, background.duration_seconds - clip_seconds)
        bg_offset = round(float(rng.uniform(0.0, spare)), 3)
        events = _plan_events(rng, pool, config, clip_seconds, cache, i)
        gain_db = config.background_gain_db
        if config.background_gain_jitter_db > 0:
            gain_db += float(rng.uniform(-config.background_gain_jitter_db, config.background_gain_jitter_db))
        plans.append(PlannedClip(f"{split}_{i:0{digits}d}.wav", background, bg_offset, events, gain_db))
    return plans


# ----------------------------------------------------------------------------- rendering


def render_clip(plan: PlannedClip, config: SynthConfig, clip_seconds: float,
                cache: BankAudio) -> np.ndarray:
    """Mix of one planned clip: float32 (clip_samples,), peak <= PEAK_LIMIT.

    A silent background (RMS 0) is treated as having the target RMS for the SNR, so the
    event level stays defined.
    """
    rate = cache.sample_rate_hz
    n = int(round(clip_seconds * rate))
    bg = cache.raw(plan.background)
    start = int(round(plan.background_offset_seconds * rate)) % len(bg)
    reps = -(-(start + n) // len(bg))
    excerpt = np.tile(bg, reps)[start:start + n].astype(np.float64)  # loops a short file
    target_rms = 10.0 ** (plan.background_gain_db / 20.0)
    bg_rms = float(np.sqrt(np.mean(excerpt ** 2)))
    mix = excerpt * (target_rms / bg_rms) if bg_rms > 0 else excerpt
    for event in plan.events:
        fg = cache.foreground(event.clip)
        gain = target_rms * 10.0 ** (event.snr_db / 20.0) / max(fg.active_rms, 1e-12)
        onset = int(round(event.onset_seconds * rate))
        length = min(len(fg.audio), n - onset)
        if config.event_max_seconds > 0:   # the 200 ms set: the event itself is cut, not only its label
            length = min(length, int(round(config.event_max_seconds * rate)))
        mix[onset:onset + length] += gain * fg.audio[:length]
    peak = float(np.max(np.abs(mix)))
    if peak > PEAK_LIMIT:
        mix *= PEAK_LIMIT / peak  # scale everything: SNRs and labels unchanged
    return mix.astype(np.float32)


def _sources_rows(plan: PlannedClip, config: SynthConfig, clip_seconds: float) -> list[list[str]]:
    bg = plan.background
    rows = [[plan.filename, "background", bg.label, bg.relative_path, bg.source_group, "0.000",
             f"{clip_seconds:.3f}", f"{plan.background_offset_seconds:.3f}", "",
             f"{plan.background_gain_db:.3f}"]]
    for e in plan.events:
        rows.append([plan.filename, "foreground", e.label, e.clip.relative_path, e.clip.source_group,
                     f"{e.onset_seconds:.6f}", f"{e.offset_seconds:.6f}", "0.000", f"{e.snr_db:.4f}", ""])
    return rows


def _write_split(plans: list[PlannedClip], split: str, out_dir: Path, config: SynthConfig,
                 clip_seconds: float, cache: BankAudio) -> None:
    """Render into audio/.<split>.partial, write metadata, then rename the folder into place."""
    final, partial = out_dir / "audio" / split, out_dir / "audio" / f".{split}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    for plan in plans:
        write_wav(partial / plan.filename, render_clip(plan, config, clip_seconds, cache),
                  cache.sample_rate_hz)
    partial.mkdir(parents=True, exist_ok=True)  # a split of 0 clips still gets its folder
    meta = out_dir / "metadata"
    strong = {p.filename: [Event(p.filename, e.onset_seconds, e.offset_seconds, e.label) for e in p.events]
              for p in plans}
    write_strong_tsv(meta / f"{split}.tsv", strong)
    write_weak_tsv(meta / f"{split}_weak.tsv", {f: [e.label for e in ev] for f, ev in strong.items()})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SOURCES_COLUMNS)
    for plan in plans:
        writer.writerows(_sources_rows(plan, config, clip_seconds))
    atomic_write_text(meta / f"{split}_sources.csv", buffer.getvalue())
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)


# ----------------------------------------------------------------------------- entry point


def split_bank(bank: SoundBank, classes: Sequence[str], seed: int, split_by: str = "recording") -> dict[str, dict]:
    """Per split: {"pool": {class: [clips]}, "backgrounds": [clips]}, disjoint by source
    recording (``split_by="collection"``: eval from collections training never hears, plus
    ``eval_seen`` from held-out recordings of the others, when the bank leaves any)."""
    foreground = [c for label in classes for c in bank.foreground(label)]
    fg_splits = split_by_source(foreground, seed=seed, split_by=split_by)
    bg_splits = split_by_source(bank.backgrounds(), seed=seed, split_by=split_by)
    if not all(bg_splits[s] for s in SPLITS):  # too few recordings per kind: split the pool as one kind
        pooled = [dataclasses.replace(c, label="background") for c in bank.backgrounds()]
        bg_splits = split_by_source(pooled, seed=seed, split_by=split_by)
    if "eval_seen" in bg_splits and not bg_splits["eval_seen"]:
        bg_splits["eval_seen"] = bg_splits["valid"]   # backgrounds are not what eval_seen measures
    out = {}
    for split in fg_splits:
        pool = {label: [c for c in fg_splits[split] if c.label == label] for label in classes}
        missing = [label for label, clips in pool.items() if not clips]
        if missing:
            warnings.warn(f"synthesize: split {split!r} has no foreground file of {missing}; "
                          f"its events are drawn from the other classes", stacklevel=3)
        pool = {label: clips for label, clips in pool.items() if clips}
        if not pool or not bg_splits[split]:
            raise SoundBankError(f"{bank.root}: split {split!r} got no foreground or no background file; "
                                 f"the bank needs >= 3 source recordings of each role")
        out[split] = {"pool": pool, "backgrounds": bg_splits[split]}
    return out


# Splits beyond train / valid / eval, each synthesized when its count is > 0:
# eval_seen (split_by: collection): recordings training never hears, of collections it hears;
# eval_remix: eval's unseen collections mixed another way (``synth.remix``).
EXTRA_EVAL_SPLITS = ("eval_seen", "eval_remix")
# unlabelled: more mixes of the train split's bank files for the mean teacher, whose
# labels training never reads (``synth.num_unlabelled_clips``).
UNLABELLED = "unlabelled"
_STREAMS = (*SPLITS, *EXTRA_EVAL_SPLITS, UNLABELLED)  # a split's RNG stream: its index here
_SPLIT_ONLY_KEYS = {"num_train_clips": "train", "num_valid_clips": "valid", "num_eval_clips": "eval",
                    "num_eval_seen_clips": "eval_seen", "remix": "eval_remix",
                    "num_unlabelled_clips": UNLABELLED}


# Settings added after stamps were first written, with the value that renders as before they
# existed: left out of a stamp at that value, so caches synthesized earlier stay valid.
_LATER_KEYS = {"balance_classes": False, "event_max_seconds": 0.0}


def split_counts(config: SynthConfig) -> dict[str, int]:
    """Clips per split to synthesize (a split with 0 extra clips is not made)."""
    counts = {"train": config.num_train_clips, "valid": config.num_valid_clips, "eval": config.num_eval_clips,
              "eval_seen": config.num_eval_seen_clips, "eval_remix": config.remix.num_clips,
              UNLABELLED: config.num_unlabelled_clips}
    return {s: n for s, n in counts.items() if s in SPLITS or n > 0}


def remix_config(config: SynthConfig) -> SynthConfig:
    """The mixing settings of ``eval_remix``: ``config`` with ``config.remix`` applied."""
    r = config.remix
    return dataclasses.replace(config, mode="multi", min_events=r.min_events, max_events=r.max_events,
                               snr_min_db=r.snr_min_db, snr_max_db=r.snr_max_db,
                               onset_std_seconds=r.onset_std_seconds,
                               background_gain_jitter_db=r.background_gain_jitter_db,
                               event_gain_jitter_db=r.event_gain_jitter_db)


def _stamp(bank: SoundBank, config: SynthConfig, clip_seconds: float, sample_rate_hz: int,
           classes: Sequence[str], split: str) -> dict:
    manifest = (bank.root / "manifest.csv").read_bytes()
    synth = dataclasses.asdict(config)
    num_clips = split_counts(config)[split]
    for key, owner in _SPLIT_ONLY_KEYS.items():  # another split's settings do not change this one
        if owner != split:
            del synth[key]
    for key, neutral in _LATER_KEYS.items():  # a later setting left neutral renders what older stamps cover
        if synth[key] == neutral:
            del synth[key]
    return {"split": split, "num_clips": num_clips, "synth": synth, "clip_seconds": clip_seconds,
            "sample_rate_hz": sample_rate_hz, "classes": list(classes),
            "bank_manifest_sha256": hashlib.sha256(manifest).hexdigest()}


def _split_paths(out_dir: Path, split: str) -> dict[str, Path]:
    meta = out_dir / "metadata"
    return {"audio_dir": out_dir / "audio" / split, "strong_tsv": meta / f"{split}.tsv",
            "weak_tsv": meta / f"{split}_weak.tsv", "sources_csv": meta / f"{split}_sources.csv",
            "stamp_json": meta / f"{split}_synth.json"}


def _is_complete(paths: dict[str, Path], stamp: dict, filenames: Sequence[str]) -> bool:
    try:
        if json.loads(paths["stamp_json"].read_text(encoding="utf-8")) != stamp:
            return False
    except (OSError, ValueError):
        return False
    return all(paths[k].is_file() for k in ("strong_tsv", "weak_tsv", "sources_csv")) and all(
        (paths["audio_dir"] / f).is_file() for f in filenames)


def synthesize(bank: SoundBank, config: SynthConfig, out_dir: str | Path, clip_seconds: float = 10.0,
               sample_rate_hz: int = 16000, classes: Sequence[str] | None = None) -> dict:
    """Synthesize train / valid / eval soundscapes from ``bank`` into ``out_dir`` (and the
    extra eval splits of :data:`EXTRA_EVAL_SPLITS` and the :data:`UNLABELLED` split whose
    counts are > 0).

    Writes ``audio/<split>/<split>_NNNN.wav`` (16-bit, ``sample_rate_hz``, ``clip_seconds``
    long), ``metadata/<split>.tsv`` (DESED strong labels, seconds), ``<split>_weak.tsv``,
    ``<split>_sources.csv`` (bank files, drawn SNR in dB per event) and
    ``<split>_synth.json`` (completion stamp). Splits already complete with the same
    parameters are skipped.

    Returns:
        {"classes": [class, ...], "splits": {split: {"audio_dir", "strong_tsv", "weak_tsv",
        "sources_csv", "stamp_json": Path, "num_clips": int, "rendered": bool}}}
    """
    out_dir = Path(out_dir)
    classes = list(classes) if classes else bank.foreground_classes
    if config.mode == "multi" and config.max_events == 0:
        warnings.warn("synthesize: max_events = 0, every clip is background only", stacklevel=2)
    parts = split_bank(bank, classes, config.seed, config.split_by)
    if config.num_eval_seen_clips and "eval_seen" not in parts:
        raise SoundBankError(f"{bank.root}: no recording of a seen collection is left for eval_seen "
                             "(each class needs >= 3 recordings outside its held-out collection)")
    parts["eval_remix"] = parts["eval"]
    parts[UNLABELLED] = parts["train"]
    cache = BankAudio(sample_rate_hz)
    counts = split_counts(config)
    result: dict = {"classes": classes, "splits": {}}
    for split in counts:
        index = _STREAMS.index(split)   # the split's RNG stream
        mixing = remix_config(config) if split == "eval_remix" else config
        paths = _split_paths(out_dir, split)
        stamp = _stamp(bank, config, clip_seconds, sample_rate_hz, classes, split)
        digits = max(4, len(str(counts[split] - 1)))
        names = [f"{split}_{i:0{digits}d}.wav" for i in range(counts[split])]
        rendered = not _is_complete(paths, stamp, names)
        if rendered:
            plans = plan_split(index, split, counts[split], parts[split]["pool"],
                               parts[split]["backgrounds"], mixing, clip_seconds, cache)
            _write_split(plans, split, out_dir, mixing, clip_seconds, cache)
            atomic_write_json(paths["stamp_json"], stamp)  # last: marks the split complete
        result["splits"][split] = {**paths, "num_clips": counts[split], "rendered": rendered}
    return result
