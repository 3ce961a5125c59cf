"""sedweak on a device: a .tflite CRNN + its sidecar -> sound events. numpy, soundfile, ai-edge-litert only.

No TensorFlow, Keras, librosa or scipy: the log-mel front end, the median filter and
the event decoding are re-implemented here in numpy, to the same spec as
``sedweak.features`` / ``sedweak.postprocessing`` / ``sedweak.inference`` (tests
compare them). Usage::

    python sedweak_runtime.py MODEL.tflite AUDIO.wav [AUDIO.wav ...] --out events.tsv

``MODEL.tflite.json`` (written by ``sedweak export``) must sit next to the model.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIDECAR_FORMAT = "sedweak-tflite-1"
STAGED_FORMAT = "sedweak-staged-3"          # sedweak.export_staged.STAGED_FORMAT
STRONG_HEADER = "filename\tonset\toffset\tevent_label"
_TIME_TOLERANCE_SECONDS = 1e-6  # as sedweak.postprocessing: frame times are i / rate


@dataclass(frozen=True)
class Event:
    """One detected event; times in seconds."""

    filename: str
    onset_seconds: float
    offset_seconds: float
    label: str


# ----------------------------------------------------------------------------- front end


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


# ----------------------------------------------------------------------------- post-processing


def median_filter(probs: np.ndarray, size_frames: int) -> np.ndarray:
    """(frames, classes) -> median over ``size_frames`` (odd) along time, edges repeated (scipy 'nearest')."""
    if size_frames <= 1:
        return probs
    half = size_frames // 2
    padded = np.pad(probs, ((half, half), (0, 0)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, size_frames, axis=0)  # (frames, classes, size)
    return np.median(windows, axis=-1).astype(probs.dtype)


def odd_window_frames(seconds: float, frames_per_second: float) -> int:
    """``seconds * rate`` rounded, made odd, >= 1 (sedweak.postprocessing.odd_window_frames)."""
    frames = max(1, int(round(seconds * frames_per_second)))
    return frames if frames % 2 == 1 else frames + 1


def _runs_to_events(binary: np.ndarray, classes, frames_per_second: float, filename: str) -> list[Event]:
    changes = np.diff(np.pad(binary, ((1, 1), (0, 0))).astype(np.int8), axis=0)
    events = []
    for k, label in enumerate(classes):
        starts, stops = np.flatnonzero(changes[:, k] == 1), np.flatnonzero(changes[:, k] == -1)
        events += [Event(filename, round(a / frames_per_second, 6), round(b / frames_per_second, 6), label)
                   for a, b in zip(starts, stops)]
    return events


def _merge_and_drop(events: list[Event], min_gap_seconds: float, min_duration_seconds: float) -> list[Event]:
    """Per class: merge events closer than the gap, then drop the short ones."""
    out = []
    for label in sorted({e.label for e in events}):
        merged: list[Event] = []
        for e in sorted((e for e in events if e.label == label), key=lambda e: e.onset_seconds):
            if merged and e.onset_seconds - merged[-1].offset_seconds < min_gap_seconds - _TIME_TOLERANCE_SECONDS:
                last = merged[-1]
                merged[-1] = Event(last.filename, last.onset_seconds, max(last.offset_seconds, e.offset_seconds), label)
            else:
                merged.append(e)
        out += [e for e in merged
                if e.offset_seconds - e.onset_seconds >= min_duration_seconds - _TIME_TOLERANCE_SECONDS]
    return sorted(out, key=lambda e: (e.onset_seconds, e.label))


def probabilities_to_events(probs: np.ndarray, meta: dict, filename: str) -> list[Event]:
    """(frames, classes) probabilities -> median filter -> thresholds -> runs -> gaps / min duration."""
    post, rate = meta["postprocess"], meta["model_frames_per_second"]
    smoothed = median_filter(probs, odd_window_frames(post["median_filter_seconds"], rate))
    binary = smoothed > np.asarray(post["thresholds"])[np.newaxis, :]
    events = _runs_to_events(binary, meta["classes"], rate, filename)
    return _merge_and_drop(events, post["min_gap_seconds"], post["min_duration_seconds"])


def strong_tsv_text(events_by_file: dict[str, list[Event]]) -> str:
    """DESED strong TSV; a file without events gets a filename-only row."""
    lines = [STRONG_HEADER]
    for filename in sorted(events_by_file):
        events = sorted(events_by_file[filename], key=lambda e: (e.onset_seconds, e.label))
        if not events:
            lines.append(f"{filename}\t\t\t")
        lines += [f"{filename}\t{e.onset_seconds:.3f}\t{e.offset_seconds:.3f}\t{e.label}" for e in events]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- detector


def window_starts(num_frames: int, window_frames: int, hop_frames: int) -> list[int]:
    """Window start frames covering ``num_frames``; the last window ends at the end."""
    if num_frames <= window_frames:
        return [0]
    return list(range(0, num_frames - window_frames, hop_frames)) + [num_frames - window_frames]


def to_model(x: np.ndarray, tensor: dict) -> np.ndarray:
    """Float -> what the model's input takes: int8 with the sidecar's scale / zero point, else float32."""
    if tensor["dtype"] != "int8":
        return np.asarray(x, np.float32)
    return np.clip(np.round(x / tensor["scale"] + tensor["zero_point"]), -128, 127).astype(np.int8)


def from_model(x: np.ndarray, tensor: dict) -> np.ndarray:
    """A model output -> float32 (int8 outputs dequantized)."""
    x = np.asarray(x)
    return x.astype(np.float32) if tensor["dtype"] != "int8" else (x.astype(np.float32) - tensor["zero_point"]) * tensor["scale"]


class StreamingModel:
    """A ``sedweak export --streaming`` file: feature chunks + recurrent states -> frame probabilities.

    Each call sees ``context`` frames either side of a ``chunk`` of frames (a mask marks the
    frames beyond the stream's ends) and carries the forward GRU states; int8 inputs and
    outputs are quantized / dequantized with the sidecar's scale and zero point.
    """

    def __init__(self, runner, meta: dict):
        self._runner, self.meta = runner, meta
        stream = meta["streaming"]
        self.chunk, self.context, self.pool = stream["chunk_frames"], stream["context_frames"], meta["time_pooling"]
        self.width = self.chunk + stream.get("lookahead_frames", 0) + 2 * self.context   # frames per step
        self._tensors = stream["tensors"]
        self.reset()

    def reset(self) -> None:
        self._states = [np.zeros((1, u), np.float32) for u in self.meta["streaming"]["state_units"]]
        self._frames = np.zeros((self.context, self.meta["features"]["n_mels"]), np.float32)  # left edge
        self._valid = np.zeros(self.context, np.float32)
        self._seen, self._emitted = 0, 0

    def _to_model(self, name: str, x: np.ndarray) -> np.ndarray:
        return to_model(x, self._tensors["inputs"][name])

    def _from_model(self, name: str, x: np.ndarray) -> np.ndarray:
        return from_model(x, self._tensors["outputs"][name])

    def _step(self) -> np.ndarray:
        inputs = {"logmel": self._frames[np.newaxis, :self.width], "mask": self._valid[np.newaxis, :self.width],
                  **{f"state_{i}": s for i, s in enumerate(self._states)}}
        out = self._runner(**{k: self._to_model(k, v) for k, v in inputs.items()})
        self._states = [self._from_model(f"state_{i}", out[f"state_{i}"]) for i in range(len(self._states))]
        self._frames, self._valid = self._frames[self.chunk:], self._valid[self.chunk:]
        return self._from_model("strong", np.asarray(out["strong"]))[0]

    def push(self, frames: np.ndarray, final: bool = False) -> np.ndarray:
        """(n, n_mels) new feature frames -> (m, classes) model frames now complete (m may be 0).
        ``final``: end of stream; pads the right edge and returns the rest."""
        self._frames = np.concatenate([self._frames, frames.astype(np.float32)])
        self._valid = np.concatenate([self._valid, np.ones(len(frames), np.float32)])
        self._seen += len(frames)
        total = self._seen // self.pool
        if final:
            pad = self.width
            self._frames = np.concatenate([self._frames, np.zeros((pad, self._frames.shape[1]), np.float32)])
            self._valid = np.concatenate([self._valid, np.zeros(pad, np.float32)])
        outputs = [np.zeros((0, len(self.meta["classes"])), np.float32)]
        while self._emitted < total and (final or len(self._valid) >= self.width):
            probs = self._step()[:total - self._emitted]
            outputs.append(probs)
            self._emitted += len(probs)
        if final:
            self.reset()
        return np.concatenate(outputs)


class StagedModel:
    """A staged file (``sedweak export --mode int8``, or ``--staged``): signatures ``conv``,
    ``gru_i`` and ``head``, no loops. One window of log-mel -> the Keras model's outputs.

    ``conv`` runs once; each recurrent layer walks its chunks of ``steps`` model frames in
    one pass, call k running the forward direction on chunk k and the backward one on
    chunk k of the time-reversed sequence, both states carried (so bidirectional models
    are exact); ``head`` runs once. Inputs
    and outputs are (de)quantized per the sidecar (int8 for ``--full-integer``).
    The same loop as ``sedweak.export_staged.run_staged`` (tests compare them).
    """

    def __init__(self, interpreter, meta: dict):
        staged = meta["staged"]
        if staged.get("format") != STAGED_FORMAT:
            raise ValueError(f"staged layout {staged.get('format')!r}, this runtime reads {STAGED_FORMAT!r}: "
                             "re-export the model with the matching sedweak")
        self.steps, self.layers, self._tensors = staged["steps"], staged["layers"], staged["tensors"]
        self._input = meta["input"]["name"]                                # logmel or waveform
        self._runners = {name: interpreter.get_signature_runner(name) for name in self._tensors}

    def _call(self, signature: str, inputs: dict) -> dict:
        tensors = self._tensors[signature]
        out = self._runners[signature](**{k: to_model(v, tensors["inputs"][k]) for k, v in inputs.items()})
        return {k: from_model(v, tensors["outputs"][k]) for k, v in out.items()}

    def _recurrent(self, x: np.ndarray, layer: dict) -> np.ndarray:
        """(T', D) -> (T', U or 2U): one layer, both directions in one pass. The backward
        direction reads the time-reversed sequence (and writes its outputs reversed); each
        sequence is padded to whole chunks after its end, which it meets last.

        ~100 calls per clip, so the loop does no per-call conversions: inputs are put in the
        model's dtype once for the whole layer, outputs converted once at the end, and a
        carried state goes back in as it came out when its input and output share a
        quantization (else it is re-quantized)."""
        tensors = self._tensors[layer["signature"]]
        ins, outs, run = tensors["inputs"], tensors["outputs"], self._runners[layer["signature"]]
        steps, frames, both = self.steps, len(x), layer["bidirectional"]
        chunks = -(-frames // steps)
        pad = np.zeros((chunks * steps - frames, x.shape[1]), np.float32)
        names = ["state_forward", "state_backward"] if both else ["state_forward"]
        states = {n: to_model(np.zeros((1, layer["units"]), np.float32), ins[n]) for n in names}
        same = {n: ins[n] == outs[n] for n in names}
        chunked = lambda name, a: np.ascontiguousarray(to_model(a, ins[name]).reshape(chunks, 1, steps, a.shape[1]))
        x_forward = chunked("x_forward", np.concatenate([x, pad]))
        if both:
            x_backward = chunked("x_backward", np.concatenate([x[::-1], pad]))
        forward, backward = [None] * chunks, [None] * chunks
        for k in range(chunks):
            if both:
                out = run(x_forward=x_forward[k], x_backward=x_backward[k], **states)
                backward[k] = out["y_backward"][0]
            else:
                out = run(x_forward=x_forward[k], **states)
            forward[k] = out["y_forward"][0]
            states = {n: out[n] if same[n] else to_model(from_model(out[n], outs[n]), ins[n]) for n in names}
        y = from_model(np.concatenate(forward)[:frames], outs["y_forward"])
        if not both:
            return y
        return np.concatenate([y, from_model(np.concatenate(backward)[:frames][::-1], outs["y_backward"])], axis=-1)

    def __call__(self, window: np.ndarray) -> dict[str, np.ndarray]:
        """(1, clip_frames, n_mels) dB, or (1, clip_samples) for a waveform-input file ->
        {"strong": (1, T', K), "weak": (1, K)}."""
        x = self._call("conv", {self._input: window})["features"][0]          # (T', D)
        for layer in self.layers:
            x = self._recurrent(x, layer)
        return self._call("head", {"x": x[None]})


class Detector:
    """A .tflite CRNN exported by ``sedweak export`` and its ``.tflite.json`` sidecar.

    Audio of any length is cut into windows of the training clip with ~50 % overlap on
    the model-frame grid; overlapping frame probabilities are averaged, then the
    stitched track is post-processed once (as ``sedweak.inference.predict_logmel``).
    """

    def __init__(self, model_path: str | Path, num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        model_path = Path(model_path)
        sidecar = model_path.with_name(model_path.name + ".json")
        if not model_path.is_file() or not sidecar.is_file():
            raise FileNotFoundError(f"{model_path}: need the model and its sidecar {sidecar.name}")
        self.meta = json.loads(sidecar.read_text())
        if self.meta.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"{sidecar}: not a {SIDECAR_FORMAT} sidecar")
        self.classes = list(self.meta["classes"])
        self.features = self.meta["features"]
        interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
        self.staged = StagedModel(interpreter, self.meta) if "staged" in self.meta else None
        self._runner = None if self.staged else interpreter.get_signature_runner(self.meta["signature"])
        self._input = self.meta["input"]
        self.streaming = StreamingModel(self._runner, self.meta) if "streaming" in self.meta else None

    def stream(self, audio_chunks):
        """Audio pieces (any lengths, model rate) -> yields (frames, classes) probabilities as they
        complete; needs a ``--streaming`` export. Constant memory. A model frame comes out
        ``context_frames`` feature frames + ``n_fft // 2`` samples (the STFT centre padding)
        after its last feature frame, and at most one chunk later (see export/README.md)."""
        if self.streaming is None:
            raise ValueError("stream() needs a model exported with `sedweak export --streaming`")
        front_end = StreamingLogMel(self.features)
        self.streaming.reset()
        for piece in audio_chunks:
            probs = self.streaming.push(front_end.push(np.asarray(piece, np.float32)))
            if len(probs):
                yield probs
        yield self.streaming.push(front_end.flush(), final=True)

    def _run_window(self, x: np.ndarray) -> np.ndarray:
        """One window of the input shape without batch -> strong (model_frames, classes)."""
        if self.staged is not None:
            return self.staged(x[np.newaxis].astype(np.float32))["strong"][0]
        outputs = self._runner(**{self._input["name"]: x[np.newaxis].astype(np.float32)})
        return np.asarray(outputs["strong"])[0]

    def frame_probabilities(self, waveform: np.ndarray) -> np.ndarray:
        """Mono waveform (samples,) at the model rate -> strong (samples // hop // pool, classes)."""
        if self.streaming is not None:   # the whole file through the streaming step (any length)
            return np.concatenate(list(self.stream([waveform])))
        pool, hop_samples = self.meta["time_pooling"], self.features["hop_samples"]
        window = self.meta["clip_frames"]
        covered = (window // pool) * pool
        hop = max(pool, (covered // 2) // pool * pool)
        frames = len(waveform) // hop_samples
        out_frames = max(-(-frames // pool), covered // pool)
        starts = window_starts(out_frames * pool, covered, hop)
        padded_frames = starts[-1] + window
        waveform_input = self._input["kind"] == "waveform"
        if waveform_input:   # windows cut from the waveform on the same frame grid
            source = np.zeros(max(len(waveform), starts[-1] * hop_samples + self.meta["clip_samples"]), np.float32)
            source[:len(waveform)] = waveform
        else:
            source = logmel(waveform, self.features)
            pad = max(0, padded_frames - frames)
            source = np.concatenate([source, np.full((pad, source.shape[1]), self._input["pad_value"], np.float32)])
        total = np.zeros((out_frames, len(self.classes)), np.float64)
        count = np.zeros((out_frames, 1), np.float64)
        for s in starts:
            x = (source[s * hop_samples:s * hop_samples + self.meta["clip_samples"]] if waveform_input
                 else source[s:s + window])
            probs = self._run_window(x)
            total[s // pool:s // pool + len(probs)] += probs
            count[s // pool:s // pool + len(probs)] += 1
        return (total / np.maximum(count, 1)).astype(np.float32)[:max(1, frames // pool)]

    def read_audio(self, path: str | Path) -> np.ndarray:
        """Mono float32 waveform; the file must already be at the model's sample rate."""
        import soundfile as sf

        path = Path(path)
        try:
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as err:  # soundfile raises several types
            raise ValueError(f"{path}: unreadable audio ({err})") from None
        if rate != self.features["sample_rate_hz"]:
            raise ValueError(f"{path}: sample rate {rate} Hz, the model needs {self.features['sample_rate_hz']} Hz "
                             f"(no resampling on the device: convert the file first)")
        if data.shape[0] == 0 or not np.all(np.isfinite(data)):
            raise ValueError(f"{path}: empty audio or NaN/infinite samples")
        return data.mean(axis=1)

    def detect_file(self, path: str | Path) -> list[Event]:
        """Events of one audio file, sorted by (onset, label); ``filename`` is the file's name."""
        probs = self.frame_probabilities(self.read_audio(path))
        return probabilities_to_events(probs, self.meta, Path(path).name)


def main(argv: list[str] | None = None) -> int:
    """CLI: detect events in audio files, write a DESED strong TSV; bad files reported on stderr."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="MODEL.tflite (MODEL.tflite.json next to it)")
    parser.add_argument("audio", nargs="+", help="audio files at the model's sample rate")
    parser.add_argument("--out", required=True, help="events TSV to write")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        detector = Detector(args.model, args.threads)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    events = {}
    for path in args.audio:
        try:
            events[Path(path).name] = detector.detect_file(path)
        except (FileNotFoundError, ValueError) as err:
            print(f"skipped {path}: {err}", file=sys.stderr)
    if not events:
        print("error: no file could be processed", file=sys.stderr)
        return 1
    Path(args.out).write_text(strong_tsv_text(events))
    print(f"{sum(map(len, events.values()))} events in {len(events)} files -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
