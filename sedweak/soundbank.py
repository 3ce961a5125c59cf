"""A sound bank on disk: isolated foreground events and background ambiences.

Layout (the one of ``shared/soundbank``)::

    <bank>/manifest.csv               one row per file (columns: MANIFEST_COLUMNS and more)
    <bank>/foreground/<Class>/*.flac  isolated events, <= 10 s
    <bank>/background/<kind>/*.flac   10-30 s ambiences

Files cut from the same original recording (``_s0``, ``_s1`` excerpts) share
``md5_of_original``; that is their *source group*, the unit that train / valid / eval
splits keep disjoint so that no recording leaks between splits.

The package embeds a small curated bank (``SoundBank.open("embedded")``), made by
:func:`curate_subset` from the shared bank; see ``sedweak/assets/soundbank/README.md``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import shutil
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from sedweak.config import SPLIT_BY
from sedweak.errors import UserError
from sedweak.io_utils import atomic_write_text

EMBEDDED_BANK_DIR = Path(__file__).parent / "assets" / "soundbank"
MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("path", "role", "label", "source_package", "source_path", "license",
                    "attribution", "duration_s", "md5_of_original")
ROLES = ("foreground", "background")
SPLITS = ("train", "valid", "eval")



class SoundBankError(UserError, ValueError):
    """A sound bank folder or manifest that cannot be used; the message names the file."""


@dataclass(frozen=True)
class BankClip:
    """One audio file of a bank.

    ``source_group`` is the original recording (``md5_of_original``, else ``source_path``,
    else the file itself): excerpts of one recording share it. ``collection`` is the
    manifest's ``source_package``: recordings of one origin (a game's sound set, a
    speech corpus), alike in microphone, room and production.
    """

    path: Path  # absolute path of the FLAC file
    relative_path: str  # as written in manifest.csv, e.g. "foreground/Bell/x.flac"
    role: str  # "foreground" | "background"
    label: str  # foreground class or background kind
    source_group: str
    duration_seconds: float
    license: str
    collection: str = ""


@dataclass(frozen=True)
class SoundBank:
    """A bank folder with its parsed manifest. Build with :meth:`SoundBank.open`."""

    root: Path
    clips: tuple[BankClip, ...]

    @classmethod
    def open(cls, path: str | Path = "embedded") -> "SoundBank":
        """Read ``<path>/manifest.csv``; ``"embedded"`` means the bank shipped in the package.

        Raises:
            SoundBankError: missing folder/manifest, missing columns, a row whose file is
                missing, an unknown role or a bad duration (message names file and line).
        """
        root = EMBEDDED_BANK_DIR if str(path) == "embedded" else Path(path)
        manifest = root / MANIFEST_NAME
        if not root.is_dir():
            raise SoundBankError(f"{root}: sound bank folder not found")
        if not manifest.is_file():
            raise SoundBankError(f"{manifest}: manifest not found in sound bank folder {root}")
        rows = _read_manifest(manifest)
        return cls(root=root, clips=tuple(_clip_from_row(root, manifest, line, row) for line, row in rows))

    @property
    def foreground_classes(self) -> list[str]:
        """Sorted foreground class names."""
        return sorted({c.label for c in self.clips if c.role == "foreground"})

    @property
    def background_kinds(self) -> list[str]:
        return sorted({c.label for c in self.clips if c.role == "background"})

    def foreground(self, label: str) -> list[BankClip]:
        """Foreground clips of class ``label`` (manifest order); unknown class is an error."""
        out = [c for c in self.clips if c.role == "foreground" and c.label == label]
        if not out:
            raise SoundBankError(f"{self.root}: no foreground class {label!r}; "
                                 f"known classes: {self.foreground_classes}")
        return out

    def backgrounds(self) -> list[BankClip]:
        return [c for c in self.clips if c.role == "background"]


def _read_manifest(manifest: Path) -> list[tuple[int, dict[str, str]]]:
    with open(manifest, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SoundBankError(f"{manifest}: missing column(s) {missing}; "
                                 f"found {reader.fieldnames}")
        return [(line, row) for line, row in enumerate(reader, start=2)]


def _clip_from_row(root: Path, manifest: Path, line: int, row: dict[str, str]) -> BankClip:
    where = f"{manifest}:{line}"
    path = root / row["path"]
    if not path.is_file():
        raise SoundBankError(f"{where}: file {row['path']!r} listed in the manifest is missing ({path})")
    if row["role"] not in ROLES:
        raise SoundBankError(f"{where}: role must be one of {ROLES}, got {row['role']!r}")
    if not row["label"]:
        raise SoundBankError(f"{where}: empty label")
    try:
        duration = float(row["duration_s"])
    except ValueError:
        raise SoundBankError(f"{where}: duration_s must be a number, got {row['duration_s']!r}") from None
    group = row["md5_of_original"] or row["source_path"] or row["path"]
    return BankClip(path=path, relative_path=row["path"], role=row["role"], label=row["label"],
                    source_group=group, duration_seconds=duration, license=row["license"],
                    collection=row["source_package"])


# ----------------------------------------------------------------------------- splits


def split_by_source(clips: Sequence[BankClip], fractions: Sequence[float] = (0.7, 0.15, 0.15),
                    seed: int = 0, split_by: str = "recording") -> dict[str, list[BankClip]]:
    """Split clips into train / valid / eval, disjoint by source group.

    ``split_by="collection"``: eval holds whole collections that training never hears
    (per stratum, the collection whose size is closest to the eval fraction, never all of
    them; see :func:`hold_out_collections`); train / valid / ``eval_seen`` split the rest by
    recording (``eval_seen``: recordings training never hears from collections it does, the
    "seen" side of the generalisation gap). A stratum with a single collection is split by
    recording, with a warning, its eval recordings going to eval.

    Stratified by (role, label): each stratum's groups are shuffled with ``seed`` and
    dealt out by ``fractions``, every split getting at least one group when the stratum
    has >= 3 groups. A stratum with fewer than 3 groups but >= 3 files is split *by
    file* (a recording may then appear in two splits) and a warning says so; with fewer
    than 3 files it is dealt out file by file (train first) and is missing from some
    splits (warning). Output order: the input order within each split.
    """
    if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
        raise ValueError(f"fractions must be 3 non-negative numbers, got {fractions}")
    if split_by not in SPLIT_BY:
        raise ValueError(f"split_by must be one of {SPLIT_BY}, got {split_by!r}")
    if split_by == "collection":
        held = hold_out_collections(clips, fractions[2] / float(sum(fractions)), seed)
        strata_held = {(c.role, c.label) for c in clips if c.relative_path in held}
        single = [c for c in clips if (c.role, c.label) not in strata_held]   # one collection: by recording
        rest = split_by_source([c for c in clips if (c.role, c.label) in strata_held and c.relative_path not in held],
                               fractions, seed)
        plain = split_by_source(single, fractions, seed)
        chosen = {s: {c.relative_path for c in rest[s] + plain[s]} for s in ("train", "valid")}
        chosen["eval"] = held | {c.relative_path for c in plain["eval"]}
        chosen["eval_seen"] = {c.relative_path for c in rest["eval"]}
        return {s: [c for c in clips if c.relative_path in chosen[s]] for s in (*SPLITS, "eval_seen")}
    strata: dict[tuple[str, str], list[BankClip]] = defaultdict(list)
    for clip in clips:
        strata[(clip.role, clip.label)].append(clip)
    split_of: dict[str, str] = {}  # relative_path -> split
    for (role, label), members in sorted(strata.items()):
        groups = sorted({c.source_group for c in members})
        by_file = len(groups) < 3
        units = sorted(c.relative_path for c in members) if by_file else groups
        if by_file:
            warnings.warn(f"split_by_source: {role} {label!r} has {len(groups)} source group(s) "
                          f"(< 3): splitting its {len(units)} file(s) by file, not by source",
                          stacklevel=2)
        rng = np.random.default_rng([seed, stable_hash(role + "/" + label)])
        units = [units[i] for i in rng.permutation(len(units))]
        for unit, split in zip(units, _deal(len(units), fractions)):
            for c in members:
                if (c.relative_path if by_file else c.source_group) == unit:
                    split_of[c.relative_path] = split
    return {s: [c for c in clips if split_of[c.relative_path] == s] for s in SPLITS}


def hold_out_collections(clips: Sequence[BankClip], eval_fraction: float, seed: int = 0) -> set[str]:
    """Relative paths of the clips whose collection is held out, per (role, label) stratum:
    of the stratum's collections (seeded order), the one whose file count is closest to
    ``eval_fraction`` of the stratum's files, among those that leave others for training.
    A stratum with one collection holds out nothing (warning): it stays seen."""
    held: set[str] = set()
    strata: dict[tuple[str, str], list[BankClip]] = defaultdict(list)
    for clip in clips:
        strata[(clip.role, clip.label)].append(clip)
    for (role, label), members in sorted(strata.items()):
        sizes: dict[str, int] = defaultdict(int)
        for c in members:
            sizes[c.collection] += 1
        if len(sizes) < 2:
            warnings.warn(f"split_by_source: {role} {label!r} has one collection ({next(iter(sizes))!r}): "
                          "it is split by recording, its eval clips come from a seen collection", stacklevel=3)
            continue
        names = sorted(sizes)
        rng = np.random.default_rng([seed, stable_hash("collection/" + role + "/" + label)])
        names = [names[i] for i in rng.permutation(len(names))]
        target = eval_fraction * len(members)
        chosen = min(names, key=lambda n: abs(sizes[n] - target))   # first in seeded order on ties
        held |= {c.relative_path for c in members if c.collection == chosen}
    return held


def _deal(count: int, fractions: Sequence[float]) -> list[str]:
    """Split names for ``count`` units: valid / eval get round(f * count), at least 1 each
    when count >= 3; train keeps the rest. With count < 3: train, valid, eval in turn."""
    if count < 3:
        return list(SPLITS[:count])
    total = float(sum(fractions))
    n_valid = max(1, int(round(fractions[1] / total * count))) if fractions[1] > 0 else 0
    n_eval = max(1, int(round(fractions[2] / total * count))) if fractions[2] > 0 else 0
    while n_valid + n_eval > count - (1 if fractions[0] > 0 else 0):
        if n_valid >= n_eval:
            n_valid -= 1
        else:
            n_eval -= 1
    n_train = count - n_valid - n_eval
    return ["train"] * n_train + ["valid"] * n_valid + ["eval"] * n_eval


def stable_hash(text: str) -> int:
    """Process-independent 32-bit hash (``hash()`` is salted per process)."""
    import zlib

    return zlib.crc32(text.encode("utf-8"))


# ----------------------------------------------------------------------------- toy bank


def write_toy_bank(root: str | Path, classes: Sequence[str] = ("Beep", "Buzz", "Chirp"),
                   files_per_class: int = 6, background_kinds: Sequence[str] = ("hum", "hiss"),
                   backgrounds_per_kind: int = 3, sample_rate_hz: int = 16000, seed: int = 0) -> SoundBank:
    """Write a tiny fabricated bank (tones + noise, FLAC + manifest.csv) for fast tests.

    Foreground file j of class k: a sine at 400 * (k + 1) Hz, amplitude 0.05-0.5, 0.3-1.3 s
    long, with 0.1 s of digital silence before and after (so trimming is testable). Files
    2m and 2m + 1 are excerpts ``_s0`` / ``_s1`` of one source recording. Backgrounds:
    6 s of seeded white noise (shorter than a 10 s clip, so looping is exercised). The last
    recording of each class and kind is in collection "toy B", the others in "toy A", so
    ``split_by: collection`` has a collection to hold out.
    """
    import soundfile as sf

    root, rng = Path(root), np.random.default_rng(seed)
    rate, rows = sample_rate_hz, []

    def add(rel: str, audio: np.ndarray, role: str, label: str, group: str, last: bool) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(root / rel), audio.astype(np.float32), rate, format="FLAC", subtype="PCM_16")
        rows.append({"path": rel, "role": role, "label": label, "source_package": f"toy {'B' if last else 'A'} (test)",
                     "source_path": f"toy/{group}.wav", "license": "CC0-1.0", "attribution": "fabricated",
                     "original_sample_rate": str(rate), "duration_s": f"{len(audio) / rate:.3f}",
                     "certainty": "high", "md5_of_original": hashlib.md5(group.encode()).hexdigest()})

    silence = np.zeros(int(0.1 * rate))
    for k, label in enumerate(classes):
        for j in range(files_per_class):
            t = np.arange(int(rng.uniform(0.3, 1.3) * rate)) / rate
            tone = rng.uniform(0.05, 0.5) * np.sin(2 * np.pi * 400 * (k + 1) * t)
            add(f"foreground/{label}/{label.lower()}-{j // 2}_s{j % 2}.flac",
                np.concatenate([silence, tone, silence]), "foreground", label, f"{label}-{j // 2}",
                j // 2 == (files_per_class - 1) // 2)
    for kind in background_kinds:
        for j in range(backgrounds_per_kind):
            add(f"background/{kind}/{kind}-{j}_s0.flac", rng.normal(0, 0.05, 6 * rate),
                "background", kind, f"{kind}-{j}", j == backgrounds_per_kind - 1)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(root / MANIFEST_NAME, buffer.getvalue())
    return SoundBank.open(root)


# ----------------------------------------------------------------------------- curation


def curate_subset(src_bank: str | Path, dst_dir: str | Path, max_megabytes: float = 12.0,
                  seed: int = 0, backgrounds_per_kind: int = 3,
                  max_files_per_class: int = 24) -> SoundBank:
    """Copy a balanced, small subset of ``src_bank`` into ``dst_dir`` and return it.

    Selection (deterministic for ``seed``): per background kind, the shortest excerpt of
    each of the ``backgrounds_per_kind`` shortest source recordings (so each split can own
    one). Foreground classes are then filled round-robin, shortest files first (ties broken
    by ``seed``), one file per class per round, a new source group preferred, until a class
    has ``max_files_per_class`` files or adding a file would exceed ``max_megabytes`` of
    audio. Thin classes therefore keep every file. Writes manifest.csv (copied rows only),
    LICENSES.md (header of the original + table + a line per copied file) and README.md.
    """
    src, dst = Path(src_bank), Path(dst_dir)
    bank = SoundBank.open(src)
    budget_bytes = max_megabytes * 1e6
    chosen = _choose_backgrounds(bank, backgrounds_per_kind)
    used = sum(c.path.stat().st_size for c in chosen)
    if used > budget_bytes:
        raise SoundBankError(f"{src}: backgrounds alone take {used / 1e6:.1f} MB > {max_megabytes} MB")
    chosen += _choose_foregrounds(bank, budget_bytes - used, seed, max_files_per_class)
    keep = {c.relative_path for c in chosen}
    if dst.exists():
        shutil.rmtree(dst)  # the folder is generated: a stale file must not survive
    for clip in chosen:
        target = dst / clip.relative_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(clip.path, target)
    _write_manifest_subset(src / MANIFEST_NAME, dst / MANIFEST_NAME, keep)
    rows = [row for _, row in _read_manifest(dst / MANIFEST_NAME)]
    atomic_write_text(dst / "LICENSES.md", _licenses_text(src / "LICENSES.md", rows))
    subset = SoundBank.open(dst)
    atomic_write_text(dst / "README.md", _readme_text(subset, max_megabytes, seed,
                                                      backgrounds_per_kind, max_files_per_class))
    return subset


def _choose_backgrounds(bank: SoundBank, per_kind: int) -> list[BankClip]:
    out = []
    for kind in bank.background_kinds:
        shortest: dict[str, BankClip] = {}
        for clip in sorted(bank.backgrounds(), key=lambda c: (c.duration_seconds, c.relative_path)):
            if clip.label == kind:
                shortest.setdefault(clip.source_group, clip)  # shortest excerpt per recording
        out += sorted(shortest.values(), key=lambda c: (c.duration_seconds, c.relative_path))[:per_kind]
    return out


def _choose_foregrounds(bank: SoundBank, budget_bytes: float, seed: int,
                        max_files_per_class: int) -> list[BankClip]:
    rng = np.random.default_rng(seed)
    queues = {}
    for label in bank.foreground_classes:
        clips = bank.foreground(label)
        tie = rng.permutation(len(clips))  # seed only breaks ties within 0.25 s duration bins
        queues[label] = [c for _, _, c in sorted(
            ((round(c.duration_seconds * 4), int(t), c) for c, t in zip(clips, tie)),
            key=lambda x: x[:2])]
    chosen: dict[str, list[BankClip]] = {label: [] for label in queues}
    progress = True
    while progress:
        progress = False
        for label, queue in queues.items():
            if not queue or len(chosen[label]) >= max_files_per_class:
                continue
            seen = {c.source_group for c in chosen[label]}
            pick = next((c for c in queue if c.source_group not in seen), queue[0])
            size = pick.path.stat().st_size
            queue.remove(pick)
            if size <= budget_bytes:
                chosen[label].append(pick)
                budget_bytes -= size
                progress = True
            else:
                queue.clear()  # queues are sorted shortest first: nothing later fits either
    return [c for label in sorted(chosen) for c in chosen[label]]


def _write_manifest_subset(src_manifest: Path, dst_manifest: Path, keep: set[str]) -> None:
    with open(src_manifest, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=reader.fieldnames, lineterminator="\n")
        writer.writeheader()
        writer.writerows(row for row in reader if row["path"] in keep)
    atomic_write_text(dst_manifest, buffer.getvalue())


def _licenses_text(src_licenses: Path, rows: Iterable[dict[str, str]]) -> str:
    """LICENSES.md for the copied rows: original header, licence table, one line per file."""
    rows = list(rows)
    original = src_licenses.read_text(encoding="utf-8")
    header = original.split("## Licenses that occur")[0].rstrip()
    header = header.replace("soundbank (shared part)", "embedded soundbank (curated subset)", 1)
    table = {}  # license id -> (full name, url), parsed from the original table
    for match in re.finditer(r"^\| ([^|]+?) \| ([^|]+?) \| ([^|]+?) \| \d+ \|$", original, re.M):
        table[match.group(1)] = (match.group(2), match.group(3))
    credit_lines = {}  # source_path -> the original per-source line (has species / credits)
    for line in original.splitlines():
        if line.startswith("- ") and "`" in line:
            credit_lines.setdefault(line.split("`")[1], line[2:])
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[row["license"]] += 1
    out = [header, "",
           "This folder is a subset of the project's shared sound bank (selected by "
           "`sedweak.soundbank.curate_subset`); the files are byte-identical copies of the shared ones.",
           "", "## Licenses that occur", "",
           "| License | Full name | Canonical URL | Files |", "|---|---|---|---|"]
    for lic in sorted(counts):
        name, url = table.get(lic, ("see manifest attribution", ""))
        out.append(f"| {lic} | {name} | {url} | {counts[lic]} |")
    out += ["", "## Per-file attribution", "",
            "One line per copied file: file, then package, path inside the package, license, credits.", ""]
    for row in rows:
        credit = credit_lines.get(row["source_path"]) or (
            f"{row['source_package']} — `{row['source_path']}` — {row['license']} — {row['attribution']}")
        out.append(f"- `{row['path']}`: {credit}")
    return "\n".join(out) + "\n"


def _readme_text(bank: SoundBank, max_megabytes: float, seed: int, per_kind: int, cap: int) -> str:
    lines = ["# Embedded sound bank", "",
             "A small subset of the project's shared sound bank (real recordings, 16 kHz mono 16-bit FLAC),",
             "shipped inside the package so that `SoundBank.open(\"embedded\")` and the demo recipe work",
             "offline. Licences and attribution for every file: `LICENSES.md` and `manifest.csv`.", "",
             "Selection: `sedweak/soundbank.py`, `curate_subset(src_bank, dst_dir, "
             f"max_megabytes={max_megabytes:g}, seed={seed})`.",
             f"Per background kind the {per_kind} shortest source recordings (one excerpt each, so",
             "train / valid / eval can each own one);",
             "foreground classes filled round-robin with their shortest files, a new source recording",
             f"preferred, capped at {cap} files per class and by the size budget, so thin classes",
             "(Bell, Glass) keep every file. Regenerate with:", "",
             "```", "python -c \"from sedweak.soundbank import curate_subset; "
             "curate_subset('/work/shared/soundbank', 'sedweak/assets/soundbank')\"", "```", "",
             "| role | label | files | source recordings | seconds |", "|---|---|---|---|---|"]
    strata: dict[tuple[str, str], list[BankClip]] = defaultdict(list)
    for clip in bank.clips:
        strata[(clip.role, clip.label)].append(clip)
    for (role, label), clips in sorted(strata.items()):
        seconds = sum(c.duration_seconds for c in clips)
        lines.append(f"| {role} | {label} | {len(clips)} | {len({c.source_group for c in clips})} "
                     f"| {seconds:.0f} |")
    size = sum(c.path.stat().st_size for c in bank.clips)
    lines += ["", f"Total audio: {size / 1e6:.2f} MB in {len(bank.clips)} files."]
    return "\n".join(lines) + "\n"
