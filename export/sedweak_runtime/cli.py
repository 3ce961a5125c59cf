"""``sedweak-detect``: sound events in audio files and folders -> one DESED strong TSV.

    sedweak-detect MODEL.tflite INPUT [INPUT ...] --out EVENTS.tsv [--embeddings EMB.npz] [--threads N]
                   [--stream] [--strict] [--quiet]
    sedweak-detect EMBEDDING_MODEL.tflite INPUT [INPUT ...] --embeddings EMB.npz [...]

``--embeddings``: one clip embedding per processed file (a model exported ``sedweak export
--with-embedding``), as a numpy ``.npz`` with arrays ``embeddings`` (N, E) float32 of unit
length and ``files`` (N,) str, the keys of the TSV, in the same order.

An embedding-only file (exported from a model whose one output is its embedding) gives no
events: ``--embeddings`` is required and ``--out`` is refused (exit 2), rather than writing
an events table that would be empty whatever the audio holds. Every other file needs ``--out``.

Exit status: 0 when at least one file was processed (1 with ``--strict`` if any was
skipped), 1 when none was, 2 for a bad model / sidecar or bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from .detector import Detector
from .events import Event, strong_tsv_text
from .inputs import AUDIO_EXTENSIONS, DuplicateKeyError, keyed_inputs
PROGRESS_MIN_FILES = 10   # a progress line on stderr for more files than this


class UsageError(Exception):
    """A problem with the command line itself (exit status 2)."""


def audio_inputs(inputs: list[str]) -> tuple[list[tuple[str, Path]], list[str]]:
    """Command-line inputs -> ([(key, path)] in order, [missing inputs]) (see
    :func:`sedweak_runtime.inputs.keyed_inputs`); a folder without audio is warned about.
    Two files with the same key raise :class:`UsageError`."""
    try:
        items, missing, empty = keyed_inputs(inputs)
    except DuplicateKeyError as err:
        raise UsageError(str(err)) from None
    for folder in empty:
        print(f"warning: no audio files ({' '.join(AUDIO_EXTENSIONS)}) in {folder}", file=sys.stderr)
    return items, missing


def _reason(err: Exception, path: Path) -> str:
    """One line: the error without its leading file name; its type too unless a ValueError or OSError."""
    text = " ".join(str(err).split())
    if text.startswith(f"{path}: "):
        text = text[len(f"{path}: "):]
    if not isinstance(err, (ValueError, OSError)):
        text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text or "error"


def _write_atomically(out: Path, write) -> None:
    """``write(binary file)`` into a temporary file beside ``out``, then renamed over it."""
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as f:
            write(f)
        os.replace(temporary, out)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_tsv(events: dict[str, list[Event]], out: Path) -> None:
    """The strong TSV, written to a temporary file beside ``out`` then renamed over it."""
    _write_atomically(out, lambda f: f.write(strong_tsv_text(events).encode("utf-8")))


def write_embeddings(embeddings: dict[str, np.ndarray], out: Path) -> None:
    """``.npz`` with ``embeddings`` (N, E) float32 and ``files`` (N,) str (the keys, in order),
    written to a temporary file beside ``out`` then renamed over it (readable without pickle)."""
    files = np.array(list(embeddings), dtype=str)
    vectors = np.stack(list(embeddings.values())).astype(np.float32)
    _write_atomically(out, lambda f: np.savez(f, embeddings=vectors, files=files))


def _checked_output(path: Path, flag: str, suffix: str | None = None) -> Path:
    """``path`` as an output file: its folder must exist, it must not be a folder (UsageError)."""
    if not path.parent.is_dir() or path.is_dir():
        raise UsageError(f"{flag} {path}: " + ("is a folder" if path.is_dir() else f"no folder {path.parent}"))
    if suffix and path.suffix != suffix:
        raise UsageError(f"{flag} {path}: must end in {suffix}")
    return path


class _Progress:
    """``\\r[i/n] name`` on stderr, redrawn in place."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.width = total, enabled, 0

    def show(self, index: int, name: str) -> None:
        if self.enabled:
            text = f"[{index}/{self.total}] {name}"
            sys.stderr.write("\r" + text.ljust(self.width))
            sys.stderr.flush()
            self.width = len(text)

    def clear(self) -> None:
        if self.enabled and self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            self.width = 0

    def end(self) -> None:
        if self.enabled and self.width:
            sys.stderr.write("\n")
            self.width = 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sedweak-detect",
        description="Sound events in audio files with a sedweak .tflite model: writes a DESED strong TSV. "
                    "numpy, soundfile and ai-edge-litert only.")
    parser.add_argument("model", help="MODEL.tflite (written by `sedweak export`; MODEL.tflite.json next to it)")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="audio files, or folders searched recursively for "
                             f"{' '.join(AUDIO_EXTENSIONS)} files; at the model's sample rate")
    parser.add_argument("--out", help="events TSV to write (DESED strong format); required, except for an "
                                      "embedding-only model, which refuses it")
    parser.add_argument("--embeddings", metavar="EMB.npz",
                        help="also write each file's clip embedding: arrays 'embeddings' (N, E) and 'files' (N,) "
                             "(needs a model exported with `sedweak export --with-embedding`)")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    parser.add_argument("--stream", action="store_true",
                        help="feed each file in 0.1 s pieces through the streaming step, as a microphone "
                             "would (needs a `sedweak export --streaming` model)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any file was skipped")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Detect events in audio files and folders, write one strong TSV (and / or the clip
    embeddings); bad files are skipped and reported on stderr. Returns the exit status (0, 1 or 2: see the module docstring)."""
    args = _parser().parse_args(argv)
    out = Path(args.out) if args.out else None
    try:
        if args.threads < 1:
            raise UsageError(f"--threads {args.threads}: need at least 1")
        if out is not None:
            _checked_output(out, "--out")
        embeddings_out = _checked_output(Path(args.embeddings), "--embeddings", ".npz") if args.embeddings else None
        items, missing = audio_inputs(args.inputs)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        detector = Detector(args.model, args.threads)
    except Exception as err:  # missing files, a bad sidecar, a file the interpreter refuses
        print(f"error: {args.model}: {_reason(err, Path(args.model))}", file=sys.stderr)
        return 2
    if args.stream and detector.streaming is None:
        print(f"error: {args.model}: --stream needs a model exported with `sedweak export --streaming`",
              file=sys.stderr)
        return 2
    problem = _outputs_problem(detector, out, embeddings_out)
    if problem:
        print(f"error: {args.model}: {problem}", file=sys.stderr)
        return 2

    for text in missing:
        print(f"skipped {text}: no such file or folder", file=sys.stderr)
    skipped = len(missing)
    events: dict[str, list[Event]] = {}
    embeddings: dict[str, np.ndarray] = {}
    progress = _Progress(len(items), not args.quiet and len(items) > PROGRESS_MIN_FILES)
    for index, (key, path) in enumerate(items, 1):
        progress.show(index, key)
        try:
            result = detector.analyse_file(path, name=key, stream=args.stream)
            events[key] = result.events
            if result.embedding is not None:
                embeddings[key] = result.embedding
        except Exception as err:  # one bad clip never ends the batch (interpreter RuntimeErrors included)
            progress.clear()
            print(f"skipped {path}: {_reason(err, path)}", file=sys.stderr)
            skipped += 1
    progress.end()

    if not events:                                          # every processed file has a key, [] if no events
        print("error: no file could be processed" if items or missing else "error: no audio files found",
              file=sys.stderr)
        return 1
    try:
        if out is not None:
            write_tsv(events, out)
        if embeddings_out is not None:
            write_embeddings(embeddings, embeddings_out)
    except OSError as err:
        print(f"error: cannot write {err.filename or out or embeddings_out}: {err}", file=sys.stderr)
        return 2
    note = f" ({skipped} skipped)" if skipped else ""
    if out is not None:
        print(f"{sum(map(len, events.values()))} events in {len(events)} files -> {out}{note}")
    if embeddings_out is not None:
        print(f"{len(embeddings)} clip embeddings of {detector.embedding['dim']} -> {embeddings_out}"
              f"{'' if out is not None else note}")
    return 1 if args.strict and skipped else 0


def _outputs_problem(detector: Detector, out: Path | None, embeddings_out: Path | None) -> str | None:
    """Why the outputs asked for do not fit the model file (None: they do)."""
    if embeddings_out is not None and detector.embedding is None:
        return ("--embeddings, but this model file has no clip embedding (export it with "
                "`sedweak export --with-embedding`)")
    if not detector.detects and out is not None:
        return ("--out, but this is an embedding-only model file: it gives no events, only clip embeddings; "
                "pass --embeddings OUT.npz instead of --out")
    if not detector.detects and embeddings_out is None:
        return "an embedding-only model file gives clip embeddings alone: pass --embeddings OUT.npz"
    if detector.detects and out is None:
        return "--out EVENTS.tsv is required (the events table)"
    return None


if __name__ == "__main__":
    sys.exit(main())
