"""How big and how costly a CRNN is on a device: the numbers DCASE's low-complexity
tracks budget (parameters of the deployed graph, multiply-accumulates per second of audio).

Counted analytically from the layers, for the graph that is exported: the strong and
weak outputs (the embedding head is dropped by ``sedweak export``). MACs count the
matrix products (convolutions, GRU projections, dense layers); element-wise ops,
pooling and batch normalisation (folded into the convolutions by the converter) are
left out, as DCASE's counting tools do.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Complexity:
    """``parameters``: weights of the exported graph; ``macs_per_second``: multiply-accumulates
    per second of audio; ``macs_per_clip``: per inference window of ``clip_seconds``."""

    parameters: int
    macs_per_clip: int
    clip_seconds: float

    @property
    def macs_per_second(self) -> float:
        return self.macs_per_clip / self.clip_seconds

    @property
    def int8_kilobytes(self) -> float:
        """Parameters at one byte each (DCASE counts int8 weights this way), in kB (1000 B)."""
        return self.parameters / 1000.0


def _gru_cost(layer, steps: int, input_width: int) -> tuple[int, int, int]:
    """(parameters, MACs over ``steps``, output width) of a GRU or Bidirectional(GRU)."""
    directions = [layer.forward_layer, layer.backward_layer] if hasattr(layer, "backward_layer") else [layer]
    params = sum(int(w.numpy().size) for w in layer.weights)
    units = int(directions[0].units)
    macs = sum(steps * 3 * units * (input_width + units) for _ in directions)
    return params, macs, units * len(directions)


def crnn_complexity(model, clip_frames: int, n_mels: int, clip_seconds: float) -> Complexity:
    """Parameters and MACs of a :func:`sedweak.models.crnn.build_crnn` model on one window of
    ``clip_frames`` log-mel frames of ``n_mels`` bands lasting ``clip_seconds``."""
    import keras

    from sedweak.models.layers import ConvBlock, WeakPooling

    frames, bands, channels = clip_frames, n_mels, 1
    params = macs = 0
    width = None
    for layer in model.layers:
        if layer.name == "input_norm":
            params += sum(int(w.numpy().size) for w in layer.weights)
        elif isinstance(layer, ConvBlock):
            out_channels = layer.conv.filters
            macs += frames * bands * layer.kernel_size ** 2 * channels * out_channels
            params += sum(int(w.numpy().size) for w in layer.weights)
            frames, bands, channels = frames // layer.pool_time, bands // layer.pool_freq, layer.filters
            width = bands * channels
        elif isinstance(layer, (keras.layers.Bidirectional, keras.layers.GRU)):
            p, m, width = _gru_cost(layer, frames, width)
            params, macs = params + p, macs + m
        elif isinstance(layer, keras.layers.Dense) and (layer.name.startswith("dense_") or layer.name == "strong"):
            params += sum(int(w.numpy().size) for w in layer.weights)
            macs += frames * width * layer.units
            width = layer.units if layer.name != "strong" else width
        elif isinstance(layer, WeakPooling) and layer.attention is not None:
            params += sum(int(w.numpy().size) for w in layer.weights)
            macs += frames * layer.attention.kernel.shape[0] * layer.num_classes
    return Complexity(int(params), int(macs), float(clip_seconds))
