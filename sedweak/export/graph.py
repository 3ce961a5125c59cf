"""Loop-free pieces of a trained CRNN for export: its conv stack, head and recurrent layers
walked with the plain-op GRU (:mod:`sedweak.export.gru`), and the streaming step.

* :func:`stream_chunk` runs a trained :func:`sedweak.models.crnn.build_crnn` model on
  one chunk of feature frames with ``context_frames`` of features on each side, a
  validity ``mask`` (0 beyond the stream's start / end) and the forward GRU states:
  the conv stack sees exactly what it sees offline ('same' zero padding is the mask),
  the forward recurrence carries its state, so a **forward-only** model streams
  exactly. A **bidirectional** GRU's backward direction needs the future of the whole
  clip: here it restarts from zero at the end of every chunk, an approximation whose
  error ``bench/bench_export.py`` measures.

Shapes: ``C`` chunk feature frames, ``L`` context frames (each a multiple of the
model's time pooling ``P``), window ``W = L + C + L``; outputs ``C // P`` model frames.
"""

from __future__ import annotations

import numpy as np

from sedweak.errors import ExportError, ExportSettingsError
from sedweak.export.gru import bidirectional_steps, chunked_gru, gru_steps, gru_weights
from sedweak.models.layers import ConvBlock, L2Normalize, MeanOverTime

# ----------------------------------------------------------------------------- chunked CRNN


def time_pooling(model) -> int:
    """Product of the conv blocks' time pooling."""
    return int(np.prod([layer.pool_time for layer in model.layers if isinstance(layer, ConvBlock)]))


def context_frames(model) -> int:
    """Feature frames of context each side that make the conv stack exact: its receptive
    half-width, rounded up to a multiple of the time pooling."""
    reach, rate = 0, 1
    for block in (layer for layer in model.layers if isinstance(layer, ConvBlock)):
        reach += (block.kernel_size // 2) * rate
        rate *= block.pool_time
    return -(-reach // rate) * rate


def recurrent_layers(model) -> list:
    """The model's GRU / Bidirectional(GRU) layers, in order."""
    import keras

    return [layer for layer in model.layers
            if isinstance(layer, (keras.layers.Bidirectional, keras.layers.GRU))]


def state_units(model) -> list[int]:
    """Units of each carried (forward) state, one per recurrent layer."""
    return [int(gru_weights(getattr(layer, "forward_layer", layer))[1].shape[0]) for layer in recurrent_layers(model)]


def conv_stack(model, x, mask=None):
    """(B, W, F) features, (B, W) mask -> (B, W // P, F' C) conv features and the pooled mask,
    with each block's input zeroed where invalid (the offline 'same' zero padding at the
    clip's edges). ``mask=None``: every frame is real (a whole clip), no masking ops."""
    from keras import ops

    x = ops.expand_dims(model.get_layer("input_norm")(x, training=False), -1)   # (B, W, F, 1)
    for block in (layer for layer in model.layers if isinstance(layer, ConvBlock)):
        if mask is None:
            x = block(x, training=False)
            continue
        x = block(x * mask[:, :, None, None], training=False)  # frames outside the stream are zeros
        frames = int(x.shape[1])                 # a pooled frame is valid when its whole group is
        mask = ops.min(ops.reshape(mask[:, :frames * block.pool_time], (-1, frames, block.pool_time)), axis=-1)
    return ops.reshape(x, (-1, int(x.shape[1]), int(x.shape[2]) * int(x.shape[3]))), mask


def dense_stack(model, x):
    """The dense layers (ReLU) after the recurrence: (B, T', D) -> (B, T', D'), the per-frame
    features the strong layer, attention pooling and the embedding head all read."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense) and layer.name.startswith("dense_"):
            x = layer(x)
    return x


def strong_head(model, x):
    """Dense layers (ReLU) and the ``strong`` sigmoid layer on (B, T', D) -> (B, T', K)."""
    return model.get_layer("strong")(dense_stack(model, x))


def embedding_dim(model, name: str) -> int:
    """E of the model's ``embedding`` output (B, E); :class:`ExportSettingsError` naming the
    model (``name``) when it has none (an export ``--with-embedding`` needs one)."""
    outputs = model.output
    if not isinstance(outputs, dict) or "embedding" not in outputs:
        names = sorted(outputs) if isinstance(outputs, dict) else [getattr(outputs, "name", "one tensor")]
        raise ExportSettingsError(f"{name}: --with-embedding, but the model has no 'embedding' output "
                                  f"(outputs: {', '.join(names)})")
    return int(outputs["embedding"].shape[-1])


def embedding_only(model) -> bool:
    """Whether the model's one output is ``embedding`` (no ``strong`` / ``weak``): an embedding
    model such as :func:`sedweak.embeddings.models.build_patch_embedding`, exported whole-clip
    ``--with-embedding`` as a file that gives the clip embedding alone."""
    outputs = model.output
    return isinstance(outputs, dict) and set(outputs) == {"embedding"}


def embedding_projection(model, name: str):
    """The ``Dense`` of the CRNN's embedding head ``L2Normalize(Dense(MeanOverTime(x)))``
    (:func:`sedweak.models.crnn.build_crnn`), checked to be that head.

    A loop-free graph emits ``Dense(x_t)`` per frame: Dense is affine, so the mean over
    frames of ``W x_t + b`` is ``W mean(x) + b``, and the runtime's mean then L2
    normalisation gives the model's embedding exactly."""
    import keras

    embedding_dim(model, name)
    expected = {"mean_time": MeanOverTime, "embedding_dense": keras.layers.Dense, "embedding": L2Normalize}
    found = {layer.name: layer for layer in model.layers if layer.name in expected}
    if any(not isinstance(found.get(n), cls) for n, cls in expected.items()):
        raise ExportSettingsError(f"{name}: --with-embedding in a staged or streaming file needs the CRNN's "
                                  "embedding head (MeanOverTime 'mean_time' -> Dense 'embedding_dense' -> "
                                  "L2Normalize 'embedding'); this model's differs: export it whole-clip")
    return found["embedding_dense"]


def embedding_frames(model, x):
    """Per-frame embedding projections: (B, T', D) recurrent features -> (B, T', E) ``Dense(x_t)``,
    whose mean over a clip's frames, L2-normalised, is the model's ``embedding`` of that clip."""
    return model.get_layer("embedding_dense")(dense_stack(model, x))


def stream_chunk(model, frames, mask, states: list, context: int, lookahead: int = 0,
                 with_embedding: bool = False):
    """One streaming step.

    Args:
        frames: (1, L + C + A + L, n_mels) dB features; mask: same frames, 1 = a real frame.
        states: forward GRU states, (1, U) per recurrent layer. context: L.
        lookahead: A feature frames past the chunk that bidirectional layers' backward
            direction reads (from a zero state at their end): more = closer to offline.
        with_embedding: also return the chunk's per-frame embedding projections
            (:func:`embedding_frames`).
    Returns: strong (1, C // P, K), new states [, embedding frames (1, C // P, E)].
    """
    pool = time_pooling(model)
    x, valid = conv_stack(model, frames, mask)
    begin, end = context // pool, int(x.shape[1]) - context // pool
    keep = end - begin - lookahead // pool                                  # C // P
    x, valid = x[:, begin:end], valid[:, begin:end]                         # (1, (C + A) // P, D)
    new_states = []
    for layer, state in zip(recurrent_layers(model), states):
        if hasattr(layer, "backward_layer"):   # approximation: backward state reset per chunk
            x, state = bidirectional_steps(x, state, gru_weights(layer.forward_layer),
                                           gru_weights(layer.backward_layer), valid, keep)
        else:
            x, state = gru_steps(x, state, gru_weights(layer))
        new_states.append(state)
    if with_embedding:
        return strong_head(model, x[:, :keep]), new_states, embedding_frames(model, x[:, :keep])
    return strong_head(model, x[:, :keep]), new_states


def offline_strong(model, logmel: np.ndarray, chunk_steps: int):
    """Whole-clip strong output with the plain-op GRU in chunks (exact for any model):
    the backward direction walks the chunks from the end with its state carried.
    ``logmel`` (1, T, n_mels) -> (1, T // P, K)."""
    from keras import ops

    frames = int(logmel.shape[1])
    x, _ = conv_stack(model, ops.convert_to_tensor(logmel), ops.ones((1, frames)))
    for layer in recurrent_layers(model):
        forward = getattr(layer, "forward_layer", layer)
        out, _ = chunked_gru(x, gru_weights(forward), chunk_steps)
        if hasattr(layer, "backward_layer"):
            backward, _ = chunked_gru(x, gru_weights(layer.backward_layer), chunk_steps, reverse=True)
            out = ops.concatenate([out, backward], axis=-1)
        x = out
    return strong_head(model, x)


def stream_logmel(model, logmel: np.ndarray, chunk_frames: int, step=None, lookahead: int = 0) -> np.ndarray:
    """Streams (T, n_mels) features through :func:`stream_chunk` chunk by chunk (Keras, or
    ``step(window, mask, states) -> (strong, states)`` e.g. a TFLite runner).
    Returns (T // P, K): for a forward-only model equal to the offline strong output."""
    pool, context = time_pooling(model), context_frames(model)
    if chunk_frames % pool or lookahead % pool:
        raise ExportSettingsError(f"chunk_frames {chunk_frames} and lookahead {lookahead} must be multiples of the "
                                  f"time pooling {pool}")
    if step is None:
        step = lambda w, m, s: stream_chunk(model, w, m, s, context, lookahead)
    frames = logmel.shape[0]
    padded = np.zeros((context + frames + chunk_frames + lookahead + context, logmel.shape[1]), np.float32)
    padded[context:context + frames] = logmel
    valid = np.zeros(padded.shape[0], np.float32)
    valid[context:context + frames] = 1.0
    states = [np.zeros((1, u), np.float32) for u in state_units(model)]
    outputs = []
    for start in range(0, frames, chunk_frames):   # window [start - L, start + C + L) in stream frames
        window = slice(start, start + chunk_frames + lookahead + 2 * context)
        strong, states = step(padded[window][None], valid[window][None], states)
        outputs.append(np.asarray(strong)[0])
        states = [np.asarray(s) for s in states]
    return np.concatenate(outputs)[:frames // pool]
