"""The exported graphs a runtime calls: tensor (de)quantization, the streaming step, the staged model.

Both classes take *runners*: callables ``runner(**inputs) -> {output_name: array}``, as
``Interpreter.get_signature_runner(name)`` returns, or any function with that call
signature (sedweak's library runs :class:`StagedModel` over ``tf.function`` runners).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from .embedding import RunningMean, window_embedding
from .sidecar import STAGED_FORMAT

Runner = Callable[..., Mapping[str, np.ndarray]]


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
    ``runner(logmel=, mask=, state_0=, ...) -> {"strong": ..., "state_0": ..., ...}``.

    A file with an embedding (``meta["embedding"]``, per-frame projections) also gives each
    step's ``embedding_frames``: their running sum and count make :meth:`embedding`, the
    model's embedding of everything pushed since the last :meth:`reset` (a stream ended by
    ``push(final=True)`` keeps it until the next push starts a new stream).
    """

    def __init__(self, runner: Runner, meta: dict):
        self._runner, self.meta = runner, meta
        self._embedding = meta.get("embedding")
        self._mean = RunningMean(self._embedding["dim"]) if self._embedding else None
        stream = meta["streaming"]
        self.chunk, self.context, self.pool = stream["chunk_frames"], stream["context_frames"], meta["time_pooling"]
        self.width = self.chunk + stream.get("lookahead_frames", 0) + 2 * self.context   # frames per step
        self._tensors = stream["tensors"]
        self.reset()

    def reset(self) -> None:
        self._states = [np.zeros((1, u), np.float32) for u in self.meta["streaming"]["state_units"]]
        self._frames = np.zeros((self.context, self.meta["features"]["n_mels"]), np.float32)  # left edge
        self._valid = np.zeros(self.context, np.float32)
        self._seen, self._emitted, self._ended = 0, 0, False
        if self._mean is not None:
            self._mean.reset()

    def embedding(self) -> np.ndarray:
        """(E,) float32 unit-norm: the L2-normalised mean of the per-frame projections of every
        model frame emitted since the last :meth:`reset` (the stream so far)."""
        if self._mean is None:
            raise ValueError("this streaming file has no clip embedding (exported without --with-embedding)")
        return self._mean.result()

    def _to_model(self, name: str, x: np.ndarray) -> np.ndarray:
        return to_model(x, self._tensors["inputs"][name])

    def _from_model(self, name: str, x: np.ndarray) -> np.ndarray:
        return from_model(x, self._tensors["outputs"][name])

    def _step(self) -> tuple[np.ndarray, np.ndarray | None]:
        """One chunk: (strong (C // P, K), per-frame embedding projections (C // P, E) or None)."""
        inputs = {"logmel": self._frames[np.newaxis, :self.width], "mask": self._valid[np.newaxis, :self.width],
                  **{f"state_{i}": s for i, s in enumerate(self._states)}}
        out = self._runner(**{k: self._to_model(k, v) for k, v in inputs.items()})
        self._states = [self._from_model(f"state_{i}", out[f"state_{i}"]) for i in range(len(self._states))]
        self._frames, self._valid = self._frames[self.chunk:], self._valid[self.chunk:]
        frames = None
        if self._embedding is not None:
            name = self._embedding["output"]
            frames = self._from_model(name, np.asarray(out[name]))[0]
        return self._from_model("strong", np.asarray(out["strong"]))[0], frames

    def push(self, frames: np.ndarray, final: bool = False) -> np.ndarray:
        """(n, n_mels) new feature frames -> (m, classes) model frames now complete (m may be 0).
        ``final``: end of stream; pads the right edge and returns the rest."""
        if self._ended:                       # the previous stream ended: this push starts a new one
            self.reset()
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
            probs, frames = self._step()
            probs = probs[:total - self._emitted]            # frames past the stream's end are dropped
            if self._mean is not None:
                self._mean.add(frames[:len(probs)])
            outputs.append(probs)
            self._emitted += len(probs)
        self._ended = final
        return np.concatenate(outputs)


def _staged_layout(meta: dict) -> dict:
    """``meta["staged"]``, checked to be the layout this runtime reads."""
    staged = meta["staged"]
    if staged.get("format") != STAGED_FORMAT:
        raise ValueError(f"staged layout {staged.get('format')!r}, this runtime reads {STAGED_FORMAT!r}: "
                         "re-export the model with the matching sedweak")
    return staged


class StagedModel:
    """A staged file (``sedweak export --mode int8``, or ``--staged``): signatures ``conv``,
    ``gru_i`` and ``head``, no loops. One window of log-mel -> the Keras model's outputs.

    ``conv`` runs once; each recurrent layer walks its chunks of ``steps`` model frames in
    one pass, call k running the forward direction on chunk k and the backward one on
    chunk k of the time-reversed sequence, both states carried (so bidirectional models
    are exact); ``head`` runs once. Inputs and outputs are (de)quantized per the sidecar's
    ``meta["staged"]["tensors"]`` tables (int8 for ``--full-integer``; a ``"float32"`` entry
    means no conversion).

    ``runners[signature](**inputs) -> {output_name: array}`` for every signature in
    ``meta["staged"]["tensors"]``: :meth:`from_interpreter` takes them from a TFLite
    interpreter; sedweak's library passes ``tf.function`` runners with all-float32 tables.
    Nothing else is assumed of a runner: it gets numpy arrays, and its outputs go through
    ``np.asarray``.
    """

    def __init__(self, runners: Mapping[str, Runner], meta: dict):
        staged = _staged_layout(meta)
        self.steps, self.layers, self._tensors = staged["steps"], staged["layers"], staged["tensors"]
        self._input = meta["input"]["name"]                                # logmel or waveform
        self._embedding = meta.get("embedding")                            # None: no embedding output
        missing = sorted(set(self._tensors) - set(runners))
        if missing:
            raise ValueError(f"staged model: no runner for signature(s) {', '.join(missing)}")
        self._runners = {name: runners[name] for name in self._tensors}

    @classmethod
    def from_interpreter(cls, interpreter, meta: dict) -> "StagedModel":
        """The staged model of a loaded ``ai_edge_litert`` (or ``tf.lite``) interpreter."""
        names = _staged_layout(meta)["tensors"]
        return cls({name: interpreter.get_signature_runner(name) for name in names}, meta)

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
                backward[k] = np.asarray(out["y_backward"])[0]
            else:
                out = run(x_forward=x_forward[k], **states)
            forward[k] = np.asarray(out["y_forward"])[0]
            states = {n: np.asarray(out[n]) if same[n] else to_model(from_model(out[n], outs[n]), ins[n])
                      for n in names}
        y = from_model(np.concatenate(forward)[:frames], outs["y_forward"])
        if not both:
            return y
        return np.concatenate([y, from_model(np.concatenate(backward)[:frames][::-1], outs["y_backward"])], axis=-1)

    def __call__(self, window: np.ndarray) -> dict[str, np.ndarray]:
        """(1, clip_frames, n_mels) dB, or (1, clip_samples) for a waveform-input file ->
        {"strong": (1, T', K), "weak": (1, K)} and, for a file with an embedding,
        ``"embedding"`` (1, E): the head's per-frame projections averaged, L2-normalised."""
        x = self._call("conv", {self._input: window})["features"][0]          # (T', D)
        for layer in self.layers:
            x = self._recurrent(x, layer)
        out = self._call("head", {"x": x[None]})
        if self._embedding is not None:
            out["embedding"] = window_embedding(out.pop(self._embedding["output"]), self._embedding["finish"])
        return out
