"""Reading exported .tflite flatbuffers (ai-edge-litert's schema, no TensorFlow): the ops,
tensor types, constant buffers, and the quantization mistakes the converter can make."""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def read_flatbuffer(path: str | Path | bytes):
    """A .tflite path, or its bytes -> (schema module, root ``Model``)."""
    from ai_edge_litert import schema_py_generated as schema

    data = path if isinstance(path, bytes) else Path(path).read_bytes()
    return schema, schema.Model.GetRootAsModel(data, 0)


def operator_names(schema, model) -> list[str]:
    """The model's operator-code table as names (``CONV_2D``, ``CUSTOM:<name>``, ...),
    indexed like ``Operator.OpcodeIndex()``."""
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = names.get(builtin, str(builtin))
        codes.append(f"CUSTOM:{code.CustomCode().decode()}" if name == "CUSTOM" else name)
    return codes


def tflite_ops(path: str | Path) -> dict[str, int]:
    """Operator name -> count over all subgraphs (WHILE bodies included), from the flatbuffer.

    Custom ops appear as ``CUSTOM:<name>`` (Flex ops are ``CUSTOM:Flex...``).
    """
    schema, model = read_flatbuffer(path)
    codes = operator_names(schema, model)
    counts: Counter = Counter()
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for o in range(graph.OperatorsLength()):
            counts[codes[graph.Operators(o).OpcodeIndex()]] += 1
    return dict(sorted(counts.items()))


# Kernels that move quantized values without rescaling them: their input and output must
# share scale and zero point (the converter's quantizer should ensure it, and for
# REVERSE_V2 it did not: 0.108 / -5 in, 0.164 / 7 out, measured in a GRU graph).
RAW_COPY_OPS = ("REVERSE_V2", "TRANSPOSE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "GATHER", "GATHER_ND",
                "STRIDED_SLICE", "SLICE", "PACK", "UNPACK", "SPLIT", "SPLIT_V", "TILE")


def requantizing_copies(path: str | Path | bytes) -> list[str]:
    """``"OP: input (scale, zero point) -> output (...)"`` for every :data:`RAW_COPY_OPS` op
    whose quantized input and output disagree; empty for a sound file."""
    schema, model = read_flatbuffer(path)
    codes = operator_names(schema, model)
    found = []
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)

        def quantization(index):
            q = graph.Tensors(index).Quantization()
            scale = None if q is None else q.ScaleAsNumpy()
            if scale is None or isinstance(scale, int) or len(scale) != 1:
                return None                                        # float, or per-channel weights
            return float(scale[0]), int(q.ZeroPointAsNumpy()[0])

        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            if codes[op.OpcodeIndex()] not in RAW_COPY_OPS:
                continue
            source = quantization(op.Inputs(0 if codes[op.OpcodeIndex()] != "SPLIT" else 1))
            for k in range(op.OutputsLength()):
                target = quantization(op.Outputs(k))
                if source and target and (abs(source[0] - target[0]) > 1e-6 * source[0] or source[1] != target[1]):
                    found.append(f"{codes[op.OpcodeIndex()]} {graph.Tensors(op.Outputs(k)).Name().decode()}: "
                                 f"{source} -> {target}")
    return found


def flatbuffer_tensor_types(path: str | Path | bytes) -> dict[str, str]:
    """Tensor name -> element type (``FLOAT32``, ``INT8``, ...) over all subgraphs: what a
    selective quantization left float."""
    schema, model = read_flatbuffer(path)
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    out = {}
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for t in range(graph.TensorsLength()):
            out[graph.Tensors(t).Name().decode()] = types.get(graph.Tensors(t).Type(), "?")
    return out


def buffer_sizes(path: str | Path, top: int = 10) -> list[tuple[str, str, tuple[int, ...], int]]:
    """Largest constant buffers: (tensor name, dtype, shape, bytes), biggest first.

    A buffer shared by several tensors is listed once, under its first tensor.
    """
    schema, model = read_flatbuffer(path)
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    seen, rows = set(), []
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            index = tensor.Buffer()
            size = model.Buffers(index).DataLength() if index < model.BuffersLength() else 0
            if size == 0 or index in seen:
                continue
            seen.add(index)
            rows.append((tensor.Name().decode(), types.get(tensor.Type(), "?"),
                         tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else (), size))
    return sorted(rows, key=lambda row: -row[3])[:top]


def quantized_ops(path: str | Path | bytes, op_names) -> list[str]:
    """``"OP output"`` for every op named in ``op_names`` whose first input is an integer
    tensor: e.g. a quantized DIV, which aborts the invoke on a zero divisor."""
    schema, model = read_flatbuffer(path)
    codes = operator_names(schema, model)
    integer = {schema.TensorType.INT8, schema.TensorType.UINT8, schema.TensorType.INT16}
    found = []
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            if codes[op.OpcodeIndex()] in op_names and graph.Tensors(op.Inputs(0)).Type() in integer:
                found.append(f"{codes[op.OpcodeIndex()]} {graph.Tensors(op.Outputs(0)).Name().decode()}")
    return found
