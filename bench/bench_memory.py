"""Peak memory of ``sedweak predict`` and ``sedweak-detect`` against a file's length.

Writes a long soundscape (real bank clips laid end to end over noise, 16 kHz PCM-16 WAV),
runs each command in its own process and reads that process's peak resident memory
(``os.wait4`` rusage). Both stream files from disk in blocks through the window stitcher,
so the peak should not grow with the length beyond the output track.

    python bench/bench_memory.py --model RUN/model.keras [--tflite M.tflite] [--minutes 1 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_record  # noqa: E402

RATE = 16_000


def long_file(path: Path, minutes: float, seed: int = 0) -> Path:
    """A ``minutes``-long WAV written block by block (never held whole)."""
    from sedweak.soundbank import SoundBank

    clips = [c.path for c in SoundBank.open("embedded").clips if c.role == "foreground"][:40]
    rng = np.random.default_rng(seed)
    with sf.SoundFile(str(path), "w", RATE, 1, subtype="PCM_16") as out:
        written, target = 0, int(minutes * 60 * RATE)
        while written < target:
            noise = 0.01 * rng.standard_normal(RATE * 10).astype(np.float32)
            clip, rate = sf.read(str(clips[int(rng.integers(len(clips)))]), dtype="float32", always_2d=True)
            clip = clip.mean(axis=1)[:RATE * 5] if rate == RATE else np.zeros(RATE, np.float32)
            noise[:len(clip)] += 0.5 * clip
            block = noise[:target - written]
            out.write(block)
            written += len(block)
    return path


def peak_rss_mb(argv: list[str]) -> float:
    """Run ``argv`` to completion; its peak resident set size in MB."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {process.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a .keras model (sedweak predict)")
    parser.add_argument("--tflite", help="a .tflite export (sedweak-detect)")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 30.0])
    parser.add_argument("--sedweak", default="sedweak", help="the command that runs sedweak (e.g. to measure "
                        "another checkout: 'env PYTHONPATH=OLD python -m sedweak.cli')")
    parser.add_argument("--detect", default="sedweak-detect", help="the command that runs sedweak-detect")
    parser.add_argument("--out", default="bench/results/memory.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    rows = []
    try:
        for minutes in args.minutes:
            audio = long_file(work / f"{minutes:g}min.wav", minutes)
            row = {"minutes": minutes, "file_mb": audio.stat().st_size / 1e6,
                   "predict_mb": peak_rss_mb(args.sedweak.split() + ["predict", args.model, str(audio),
                                                                    "--out", str(work / "p.tsv")])}
            if args.tflite:
                row["detect_mb"] = peak_rss_mb(args.detect.split() + [args.tflite, str(audio),
                                                                  "--out", str(work / "d.tsv"), "--quiet"])
            rows.append(row)
            print(" | ".join(f"{k} {v:.1f}" for k, v in row.items()), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n| minutes | WAV MB | sedweak predict peak RSS MB | sedweak-detect peak RSS MB |\n|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['minutes']:g} | {row['file_mb']:.0f} | {row['predict_mb']:.0f} | "
              f"{row.get('detect_mb', float('nan')):.0f} |")
    write_record(Path(args.out), {"rows": rows, "model": args.model, "tflite": args.tflite,
                                  "sedweak": args.sedweak, "detect": args.detect})


if __name__ == "__main__":
    main()
