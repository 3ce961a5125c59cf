"""A plain-op GRU: ``keras.layers.GRU`` (``reset_after=True``, the Keras default) written
as MatMul / Add / Mul / Logistic / Tanh over a fixed number of steps, so that TFLite needs
no WHILE / TensorList and the int8 calibrator can run it. Shared by the staged and the
streaming exports; the same numbers as the Keras layer (tests: < 1e-5).

Shapes: B batch, S steps (static), D input features, U units.
"""

from __future__ import annotations

from sedweak.errors import ExportError, ExportSettingsError


def gru_weights(gru) -> tuple:
    """``keras.layers.GRU`` -> (kernel (D, 3U), recurrent (U, 3U), input bias (3U,), recurrent bias (3U,)).

    Gate order z, r, h (Keras); the layer's variables (tensors inside a ``tf.function``).
    Only ``reset_after=True`` with biases is supported.
    """
    cell = getattr(gru, "cell", gru)
    if not getattr(cell, "reset_after", False) or not cell.use_bias:
        raise ExportSettingsError(f"{gru.name}: only GRU(reset_after=True, use_bias=True) is supported")
    return cell.kernel, cell.recurrent_kernel, cell.bias[0], cell.bias[1]


def gru_steps(inputs, state, weights, reverse: bool = False):
    """Plain-op GRU over a fixed number of steps.

    Args:
        inputs: (B, S, D) with S static. state: (B, U). weights: :func:`gru_weights`.
        reverse: walk the steps from the last to the first (Keras ``go_backwards``);
            outputs stay in input order (as ``Bidirectional`` re-aligns them).
    Returns: outputs (B, S, U), final state (B, U).
    """
    from keras import ops

    _, recurrent, _, bias_rec = weights
    units = int(recurrent.shape[0])
    # Gates z, r together and the candidate h apart, so that no step slices a tensor:
    # per step 2 FullyConnected + 8 elementwise ops (fewer ops: a smaller, faster file).
    gates_in, candidate_in = _projections(inputs, weights, units, unstack=True)
    gates_kernel = recurrent[:, :2 * units]
    candidate_kernel, candidate_bias = recurrent[:, 2 * units:], bias_rec[2 * units:]
    outputs = [None] * len(gates_in)
    for t in (reversed(range(len(gates_in))) if reverse else range(len(gates_in))):
        z, r = ops.split(ops.sigmoid(gates_in[t] + ops.matmul(state, gates_kernel)), 2, axis=-1)
        candidate = ops.tanh(candidate_in[t] + r * (ops.matmul(state, candidate_kernel) + candidate_bias))
        state = candidate + z * (state - candidate)             # z h + (1 - z) h~
        outputs[t] = state
    return ops.stack(outputs, axis=1), state


def bidirectional_steps(inputs, state, forward_weights, backward_weights, valid=None, keep=None):
    """Forward GRU from ``state`` and backward GRU from zeros over the same steps, batched
    (:func:`paired_steps`). Same maths as two :func:`gru_steps` calls.

    inputs (B, S, D), state (B, U); ``valid`` (B, S) 1 = a real frame: the backward state
    stays zero over the invalid frames past the stream's end (as offline, where the
    backward pass starts at the last real frame); ``keep``: return the forward state
    after that many steps (the rest are look-ahead for the backward direction).
    Returns outputs (B, S, 2U) [forward, backward] and the forward state.
    """
    from keras import ops

    forward, backward, states = paired_steps(inputs, inputs, state, ops.zeros_like(state), forward_weights,
                                             backward_weights, valid, keep)
    return ops.concatenate([forward, backward], axis=-1), states[0]


def paired_steps(forward_inputs, backward_inputs, forward_state, backward_state, forward_weights,
                 backward_weights, backward_valid=None, keep=None, backward_reversed: bool = False):
    """A forward GRU over ``forward_inputs`` and a backward GRU over ``backward_inputs``
    (walked from the last step), batched: each step is one BatchMatMul pair for both
    directions (half the ops of two :func:`gru_steps`, a smaller and faster TFLite file).

    Args:
        forward_inputs, backward_inputs: (B, S, D), S static. forward_state, backward_state: (B, U).
        backward_valid: (B, S), 1 = a real frame; the backward state is held at zero over
            the others (frames past the end of a clip, where offline it has not started).
        keep: the forward state is returned after that many steps (default S).
        backward_reversed: ``backward_inputs`` come already time-reversed (walked first to
            last) and the backward outputs are returned in that reversed order: no flips in
            the graph (the staged export; not with ``backward_valid``).
    Returns: forward outputs (B, S, U), backward outputs (B, S, U) in the order of
        ``backward_inputs``, and the (forward, backward) states after the walk.
    """
    from keras import ops

    if backward_reversed and backward_valid is not None:
        raise ValueError("backward_valid is in input order: not with backward_reversed")
    units = int(forward_weights[1].shape[0])
    pair = (forward_weights, backward_weights)
    # (2, B, S, .) per-step terms, backward time-reversed, unstacked once: step t needs no Pack
    projections = [_projections(x, w, units) for x, w in zip((forward_inputs, backward_inputs), pair)]
    flip = (lambda t: t) if backward_reversed else _reverse_time
    gates_in = ops.unstack(ops.stack([projections[0][0], flip(projections[1][0])]), axis=2)
    candidate_in = ops.unstack(ops.stack([projections[0][1], flip(projections[1][1])]), axis=2)
    gates_kernel = ops.stack([w[1][:, :2 * units] for w in pair])                       # (2, U, 2U)
    candidate_kernel = ops.stack([w[1][:, 2 * units:] for w in pair])                   # (2, U, U)
    candidate_bias = ops.stack([w[3][None, 2 * units:] for w in pair])                  # (2, 1, U)
    states = ops.stack([forward_state, backward_state])                                 # (2, B, U)
    step_valid = [None] * len(gates_in)
    if backward_valid is not None:   # (2, B, S, 1): forward always kept, backward masked, time-reversed
        valid = ops.stack([ops.ones_like(backward_valid), _reverse_time(backward_valid)])[..., None]
        step_valid = ops.unstack(valid, axis=2)
    seen = []
    for t in range(len(gates_in)):   # forward at step t, backward at step S - 1 - t
        z, r = ops.split(ops.sigmoid(gates_in[t] + ops.matmul(states, gates_kernel)), 2, axis=-1)
        candidate = ops.tanh(candidate_in[t] + r * (ops.matmul(states, candidate_kernel) + candidate_bias))
        states = candidate + z * (states - candidate)
        states = states if step_valid[t] is None else states * step_valid[t]
        seen.append(states)
    final = (seen[(keep or len(seen)) - 1][0], seen[-1][1])
    seen = ops.stack(seen, axis=2)                                                      # (2, B, S, U)
    return seen[0], flip(seen[1]), final


def _reverse_time(x):
    """``x`` (B, S, ...) with axis 1 reversed, as UNPACK + PACK rather than ``ops.flip``:
    TFLite's int8 REVERSE_V2 copies raw values, and the converter may give its input and
    output different scales (measured: 0.108 -> 0.164, zero point -5 -> 7, silently
    rescaling a GRU's backward inputs), while UNPACK / PACK keep one scale."""
    from keras import ops

    return ops.stack(ops.unstack(x, axis=1)[::-1], axis=1)


def _projections(inputs, weights, units: int, unstack: bool = False):
    """Per-step input terms, (B, S, 2U) gates z, r (both biases folded in) and (B, S, U)
    candidate; ``unstack``: as lists of S (B, .) tensors."""
    from keras import ops

    kernel, _, bias_in, bias_rec = weights
    gates = ops.matmul(inputs, kernel[:, :2 * units]) + (bias_in[:2 * units] + bias_rec[:2 * units])
    candidate = ops.matmul(inputs, kernel[:, 2 * units:]) + bias_in[2 * units:]
    if unstack:
        return ops.unstack(gates, axis=1), ops.unstack(candidate, axis=1)
    return gates, candidate


def chunked_gru(inputs, weights, chunk_steps: int, state=None, reverse: bool = False):
    """:func:`gru_steps` over fixed chunks of ``chunk_steps`` with the state carried between them.

    ``inputs`` (B, S, D), S static (the last chunk may be shorter). Returns (B, S, U), state.
    """
    from keras import ops

    steps, units = int(inputs.shape[1]), int(weights[1].shape[0])
    if state is None:
        state = ops.zeros((int(inputs.shape[0]), units), dtype="float32")
    starts = list(range(0, steps, chunk_steps))
    outputs = {}
    for start in (reversed(starts) if reverse else starts):
        outputs[start], state = gru_steps(inputs[:, start:start + chunk_steps], state, weights, reverse)
    return ops.concatenate([outputs[s] for s in starts], axis=1), state
