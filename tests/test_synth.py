"""Soundscape synthesis on a fabricated toy bank: labels, SNR, splits, determinism, resume."""

from __future__ import annotations

import csv
import dataclasses
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sedweak.audio import AudioError
from sedweak.config import SynthConfig
from sedweak.labels import read_strong_tsv, read_weak_tsv
from sedweak.soundbank import SPLITS, SoundBank, write_toy_bank
from sedweak.synth import PEAK_LIMIT, active_region, synthesize

CLIP_SECONDS = 10.0
RATE = 16000
WAA = SynthConfig(mode="waa", num_train_clips=12, num_valid_clips=6, num_eval_clips=6, seed=7)
MULTI = SynthConfig(mode="multi", num_train_clips=20, num_valid_clips=5, num_eval_clips=5,
                    min_events=1, max_events=4, seed=3)


@pytest.fixture(scope="module")
def toy_bank(tmp_path_factory) -> SoundBank:
    return write_toy_bank(tmp_path_factory.mktemp("bank"))


@pytest.fixture(scope="module")
def waa_out(toy_bank, tmp_path_factory):
    out = tmp_path_factory.mktemp("waa")
    return out, synthesize(toy_bank, WAA, out, clip_seconds=CLIP_SECONDS, sample_rate_hz=RATE)


def _sources(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open(newline="", encoding="utf-8")))


def test_outputs_and_wav_format(waa_out):
    out, result = waa_out
    assert result["classes"] == ["Beep", "Buzz", "Chirp"]
    for split, n in zip(SPLITS, (12, 6, 6)):
        paths = result["splits"][split]
        wavs = sorted(paths["audio_dir"].glob("*.wav"))
        assert [w.name for w in wavs] == [f"{split}_{i:04d}.wav" for i in range(n)]
        info = sf.info(str(wavs[0]))
        assert (info.samplerate, info.frames, info.subtype) == (RATE, int(CLIP_SECONDS * RATE), "PCM_16")
        assert paths["strong_tsv"] == out / "metadata" / f"{split}.tsv"
        assert set(read_weak_tsv(paths["weak_tsv"])) == {w.name for w in wavs}
        assert not list((out / "audio").glob(".*partial"))


def test_waa_has_exactly_one_event_in_bounds(waa_out):
    _, result = waa_out
    for split in SPLITS:
        events = read_strong_tsv(result["splits"][split]["strong_tsv"], classes=result["classes"])
        assert all(len(ev) == 1 for ev in events.values())
        for (event,) in events.values():
            assert WAA.onset_min_seconds <= event.onset_seconds <= CLIP_SECONDS - 0.25
            assert event.onset_seconds < event.offset_seconds <= CLIP_SECONDS


def test_splits_disjoint_by_source_group(waa_out):
    _, result = waa_out
    groups = {s: {r["source_group"] for r in _sources(result["splits"][s]["sources_csv"])} for s in SPLITS}
    roles = {r["role"] for r in _sources(result["splits"]["train"]["sources_csv"])}
    assert roles == {"background", "foreground"}
    for a, b in (("train", "valid"), ("train", "eval"), ("valid", "eval")):
        assert not groups[a] & groups[b], (a, b)


def test_labels_are_tightened_to_the_tone(waa_out, toy_bank):
    # Toy foregrounds have 0.1 s of silence on each side: the label must span the tone only.
    _, result = waa_out
    durations = {c.relative_path: c.duration_seconds - 0.2 for c in toy_bank.clips}
    for row in _sources(result["splits"]["train"]["sources_csv"]):
        if row["role"] != "foreground":
            continue
        onset, offset = float(row["onset_seconds"]), float(row["offset_seconds"])
        expected = min(durations[row["bank_path"]], CLIP_SECONDS - onset)
        assert expected - 0.001 <= offset - onset <= expected + 0.021  # one 20 ms frame


def test_measured_snr_matches_drawn_snr(waa_out):
    _, result = waa_out
    checked = 0
    for split in SPLITS:
        rows = [r for r in _sources(result["splits"][split]["sources_csv"]) if r["role"] == "foreground"]
        for row in rows:
            audio, _ = sf.read(str(result["splits"][split]["audio_dir"] / row["filename"]), dtype="float64")
            a, b = (int(round(float(row[k]) * RATE)) for k in ("onset_seconds", "offset_seconds"))
            inside = np.mean(audio[a:b] ** 2)
            background = np.mean(np.concatenate([audio[:a], audio[b:]]) ** 2)
            measured_db = 10 * np.log10((inside - background) / background)
            assert measured_db == pytest.approx(float(row["snr_db"]), abs=1.0), row
            assert WAA.snr_min_db <= float(row["snr_db"]) <= WAA.snr_max_db
            assert np.max(np.abs(audio)) <= PEAK_LIMIT + 1e-4
            checked += 1
    assert checked == 24


def test_multi_event_counts_bounds_and_no_same_class_overlap(toy_bank, tmp_path):
    config = dataclasses.replace(MULTI, allow_same_class_overlap=True)
    result = synthesize(toy_bank, config, tmp_path / "a", clip_seconds=CLIP_SECONDS)
    counts = [len(ev) for s in SPLITS for ev in read_strong_tsv(result["splits"][s]["strong_tsv"]).values()]
    assert min(counts) >= 1 and max(counts) <= 4 and len(set(counts)) >= 3
    result = synthesize(toy_bank, dataclasses.replace(MULTI, max_events=8), tmp_path / "b",
                        clip_seconds=CLIP_SECONDS)
    for split in SPLITS:
        for events in read_strong_tsv(result["splits"][split]["strong_tsv"]).values():
            assert len(events) <= 8
            by_class = defaultdict(list)
            for e in events:
                by_class[e.label].append((e.onset_seconds, e.offset_seconds))
            for spans in by_class.values():
                spans.sort()
                assert all(prev[1] <= nxt[0] + 1e-3 for prev, nxt in zip(spans, spans[1:])), spans


def test_zero_event_clips_are_listed(toy_bank, tmp_path):
    config = dataclasses.replace(MULTI, min_events=0, max_events=0)
    with pytest.warns(UserWarning, match="background only"):
        result = synthesize(toy_bank, config, tmp_path, clip_seconds=4.0)
    events = read_strong_tsv(result["splits"]["valid"]["strong_tsv"])
    assert len(events) == 5 and all(ev == [] for ev in events.values())
    assert all(v == [] for v in read_weak_tsv(result["splits"]["valid"]["weak_tsv"]).values())


def test_deterministic_bytes_and_seed_dependent(toy_bank, tmp_path):
    runs = [synthesize(toy_bank, MULTI, tmp_path / name, clip_seconds=CLIP_SECONDS) for name in ("a", "b")]
    for split in SPLITS:
        a, b = (r["splits"][split] for r in runs)
        for key in ("strong_tsv", "weak_tsv", "sources_csv"):
            assert a[key].read_bytes() == b[key].read_bytes()
        for wav in sorted(a["audio_dir"].glob("*.wav")):
            assert wav.read_bytes() == (b["audio_dir"] / wav.name).read_bytes()
    other = synthesize(toy_bank, dataclasses.replace(MULTI, seed=4), tmp_path / "c", clip_seconds=CLIP_SECONDS)
    assert other["splits"]["train"]["strong_tsv"].read_bytes() != runs[0]["splits"]["train"]["strong_tsv"].read_bytes()


def test_resume_skips_complete_splits_and_redoes_changed_ones(toy_bank, tmp_path):
    first = synthesize(toy_bank, MULTI, tmp_path, clip_seconds=4.0)
    assert all(first["splits"][s]["rendered"] for s in SPLITS)
    wav = first["splits"]["train"]["audio_dir"] / "train_0000.wav"
    stamp = wav.stat().st_mtime_ns
    again = synthesize(toy_bank, MULTI, tmp_path, clip_seconds=4.0)
    assert not any(again["splits"][s]["rendered"] for s in SPLITS)
    assert wav.stat().st_mtime_ns == stamp
    (first["splits"]["eval"]["audio_dir"] / "eval_0002.wav").unlink()  # an interrupted copy
    changed = synthesize(toy_bank, dataclasses.replace(MULTI, num_valid_clips=3), tmp_path, clip_seconds=4.0)
    assert [changed["splits"][s]["rendered"] for s in SPLITS] == [False, True, True]
    assert len(list(changed["splits"]["valid"]["audio_dir"].glob("*.wav"))) == 3
    assert (changed["splits"]["eval"]["audio_dir"] / "eval_0002.wav").is_file()


def test_unknown_class_and_broken_file_errors_name_them(tmp_path):
    bank = write_toy_bank(tmp_path / "bank")
    with pytest.raises(ValueError, match="Bell"):
        synthesize(bank, WAA, tmp_path / "out", classes=["Beep", "Bell"])
    broken = bank.foreground("Chirp")[0]
    broken.path.write_bytes(b"not a flac file")
    with pytest.raises(AudioError, match=broken.path.name):
        synthesize(bank, dataclasses.replace(WAA, num_train_clips=40), tmp_path / "out")


def test_active_region_trims_quiet_edges():
    rate = 16000
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)
    audio = np.concatenate([np.zeros(3200), 1e-4 * np.ones(1600), tone, np.zeros(4800)]).astype(np.float32)
    start, stop, active, rms = active_region(audio, rate)
    assert start == 4800 and stop == 4800 + rate  # the -73 dB hum is below the -40 dB threshold
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)
    assert active.sum() == 50


def test_classes_subset_restricts_labels(toy_bank, tmp_path):
    result = synthesize(toy_bank, WAA, tmp_path, classes=["Buzz", "Chirp"], clip_seconds=4.0)
    assert result["classes"] == ["Buzz", "Chirp"]
    labels = {e.label for s in SPLITS for ev in read_strong_tsv(result["splits"][s]["strong_tsv"]).values()
              for e in ev}
    assert labels <= {"Buzz", "Chirp"}


def _two_collection_bank(root: Path) -> dict[str, str]:
    """The toy bank with each class's third recording in collection "B", the rest in "A";
    returns bank path -> collection."""
    write_toy_bank(root)
    manifest = root / "manifest.csv"
    rows = list(csv.DictReader(manifest.open(newline="", encoding="utf-8")))
    for row in rows:
        third = row["role"] == "foreground" and row["path"].rsplit("_", 1)[0].endswith("-2")
        row["source_package"] = "B" if third else "A"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return {row["path"]: row["source_package"] for row in rows}


def test_split_by_collection_mixes_eval_from_collections_training_never_hears(tmp_path):
    """Each class's third recording is re-labelled collection "B" in the manifest: with
    ``split_by: collection`` every eval foreground comes from B and no train / valid one does."""
    import warnings

    root = tmp_path / "bank"
    collection = _two_collection_bank(root)
    config = dataclasses.replace(WAA, split_by="collection")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # A's two recordings per class are split by file
        synthesize(SoundBank.open(root), config, tmp_path / "out", clip_seconds=CLIP_SECONDS, sample_rate_hz=RATE)
    used = {split: {collection[r["bank_path"]] for r in _sources(tmp_path / "out" / "metadata" / f"{split}_sources.csv")
                    if r["role"] == "foreground"} for split in SPLITS}
    assert used["eval"] == {"B"}
    assert used["train"] | used["valid"] == {"A"}


def test_extra_eval_splits_seen_collections_and_another_mix(tmp_path):
    """eval_seen mixes unheard recordings of the collections training hears (A); eval_remix
    mixes eval's unseen collection (B) with up to 5 events and per-clip / per-event gains.
    Each extra split has its own stamp: changing the remix re-renders eval_remix alone."""
    import warnings

    from sedweak.config import RemixConfig

    collection = _two_collection_bank(tmp_path / "bank")
    bank = SoundBank.open(tmp_path / "bank")
    remix = RemixConfig(num_clips=8, min_events=2, max_events=5, snr_min_db=0.0, snr_max_db=12.0)
    config = dataclasses.replace(MULTI, split_by="collection", num_eval_seen_clips=4, remix=remix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # A's two recordings per class are split by file
        result = synthesize(bank, config, tmp_path / "out", clip_seconds=CLIP_SECONDS, sample_rate_hz=RATE)
        assert list(result["splits"]) == ["train", "valid", "eval", "eval_seen", "eval_remix"]
        rows = {s: _sources(result["splits"][s]["sources_csv"]) for s in result["splits"]}
        fg = {s: {collection[r["bank_path"]] for r in rs if r["role"] == "foreground"} for s, rs in rows.items()}
        assert fg["eval_seen"] == {"A"} and fg["eval_remix"] == fg["eval"] == {"B"}
        counts = [len(ev) for ev in read_strong_tsv(result["splits"]["eval_remix"]["strong_tsv"]).values()]
        assert len(counts) == 8 and min(counts) >= 2 and max(counts) <= 5
        gains = {s: {float(r["gain_db"]) for r in rs if r["role"] == "background"} for s, rs in rows.items()}
        assert gains["train"] == {-20.0} and len(gains["eval_remix"]) == 8
        assert all(-28.0 <= g <= -12.0 for g in gains["eval_remix"])
        snrs = [float(r["snr_db"]) for r in rows["eval_remix"] if r["role"] == "foreground"]
        assert -4.0 <= min(snrs) and max(snrs) <= 16.0             # SNR draw 0-12 dB, +- 4 dB event gain
        assert min(snrs) < 0.0 or max(snrs) > 12.0                  # ... and the jitter shows

        again = synthesize(bank, dataclasses.replace(config, remix=dataclasses.replace(remix, snr_max_db=6.0)),
                           tmp_path / "out", clip_seconds=CLIP_SECONDS, sample_rate_hz=RATE)
    assert [s for s, r in again["splits"].items() if r["rendered"]] == ["eval_remix"]


def test_eval_seen_needs_split_by_collection():
    from sedweak.config import ConfigError

    with pytest.raises(ConfigError, match="num_eval_seen_clips needs split_by: collection"):
        dataclasses.replace(MULTI, num_eval_seen_clips=4)


def test_unlabelled_split_mixes_the_train_recordings_only(tmp_path):
    """synth.num_unlabelled_clips: more mixes of the train split's bank files (never valid's or
    eval's), its own RNG stream and stamp: adding it re-renders nothing else, and the labelled
    splits stay byte-identical."""
    import warnings

    collection = _two_collection_bank(tmp_path / "bank")
    bank = SoundBank.open(tmp_path / "bank")
    config = dataclasses.replace(MULTI, split_by="collection")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # A's two recordings per class are split by file
        first = synthesize(bank, config, tmp_path / "out", clip_seconds=CLIP_SECONDS, sample_rate_hz=RATE)
        before = {p: p.read_bytes() for p in sorted((tmp_path / "out").rglob("*")) if p.is_file()}
        result = synthesize(bank, dataclasses.replace(config, num_unlabelled_clips=6), tmp_path / "out",
                            clip_seconds=CLIP_SECONDS, sample_rate_hz=RATE)
    assert list(first["splits"]) == ["train", "valid", "eval"]
    assert [s for s, r in result["splits"].items() if r["rendered"]] == ["unlabelled"]
    assert all(p.read_bytes() == data for p, data in before.items())
    rows = {s: _sources(result["splits"][s]["sources_csv"]) for s in ("train", "unlabelled", "valid", "eval")}
    files = {s: {r["bank_path"] for r in rs if r["role"] == "foreground"} for s, rs in rows.items()}
    assert len(list((tmp_path / "out" / "audio" / "unlabelled").glob("*.wav"))) == 6
    assert files["unlabelled"] and not files["unlabelled"] & (files["valid"] | files["eval"])
    assert {collection[f] for f in files["unlabelled"]} == {"A"}
