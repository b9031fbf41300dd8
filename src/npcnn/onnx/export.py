"""npcnn model -> ONNX inference graph.

Every layer becomes the ONNX operators that compute its inference forward
(batch norm with its running statistics, dropout left out):

    Conv2D          Conv (group = groups; weight (O, C/groups, kh, kw), as npcnn's)
    BatchNorm1D/2D  BatchNormalization (scale, B, input_mean, input_var = running stats)
    ReLU, LeakyReLU, Sigmoid, Tanh     Relu, LeakyRelu (alpha), Sigmoid, Tanh
    MaxPool2D       MaxPool (pads = padding on both sides; padded values never win; ceil_mode)
    AvgPool2D       AveragePool (count_include_pad = 1: npcnn's zeros count, as PyTorch's)
    GlobalAvgPool2D GlobalAveragePool, then Flatten (npcnn's output is (N, C))
    ZeroPad2D       Pad (mode constant, pads as an int64 input)
    Flatten         Flatten (axis 1)
    Dense           Gemm (transB = 1: the weight stays (out, in))
    Add, Concatenate  Add (chained for more than two inputs), Concat (axis 1)
    Dropout, Identity nothing: their inference forward is the identity
    Sequential, Model their layers, with dotted names

Initializers carry the model's state-dict names ("conv1.weight",
"layer1.0.bn1.running_mean"); the graph's input "input" has a symbolic batch
dimension ("batch"), so any batch size runs. Weights are written as float32
(a float64 model is exported at float32 precision).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from npcnn import nn
from npcnn.files import atomic_write_bytes
from npcnn.onnx.metadata import npcnn_metadata
from npcnn.onnx.nodes import unique_name
from npcnn.onnx.requirements import require_onnx

DEFAULT_OPSET = 17
SUPPORTED_OPSETS = range(13, 22)
INPUT_NAME = "input"
OUTPUT_NAME = "output"
BATCH_DIM = "batch"


@dataclass
class GraphBuilder:
    """The nodes and initializers of the graph being written, with unique value names."""

    helper: Any
    nodes: list[Any] = field(default_factory=list)
    initializers: list[Any] = field(default_factory=list)
    names: set[str] = field(default_factory=lambda: {INPUT_NAME})

    def unique(self, name: str) -> str:
        """`name`, or `name_2`, `name_3`, ... if it is taken."""
        return unique_name(name, self.names)

    def constant(self, name: str, array: np.ndarray) -> str:
        """An initializer called `name` holding `array` as float32; returns its name."""
        from onnx import numpy_helper

        name = self.unique(name)
        data = np.ascontiguousarray(array, dtype=np.float32)
        self.initializers.append(numpy_helper.from_array(data, name))
        return name

    def integers(self, name: str, values: list[int]) -> str:
        """An int64 initializer called `name` (pads, shapes); returns its name."""
        from onnx import numpy_helper

        name = self.unique(name)
        self.initializers.append(numpy_helper.from_array(np.array(values, np.int64), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attributes: Any) -> str:
        """Append an `op` node on `inputs`; returns the name of its one output."""
        output = self.unique(name)
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=output, **attributes))
        return output


Emitter = Callable[[GraphBuilder, Any, list[str], str], str]


def _conv(b: GraphBuilder, layer: nn.Conv2D, xs: list[str], prefix: str) -> str:
    inputs = [xs[0], b.constant(prefix + "weight", layer.weight.data)]
    if layer.bias is not None:
        inputs.append(b.constant(prefix + "bias", layer.bias.data))
    (ph, pw), (kh, kw) = layer.padding, layer.kernel_size
    return b.node(
        "Conv",
        inputs,
        prefix + "Conv",
        kernel_shape=[kh, kw],
        strides=list(layer.stride),
        pads=[ph, pw, ph, pw],
        group=layer.groups,
    )


def _batch_norm(b: GraphBuilder, layer: Any, xs: list[str], prefix: str) -> str:
    names = ("weight", "bias", "running_mean", "running_var")
    arrays = (layer.weight.data, layer.bias.data, layer.running_mean, layer.running_var)
    inputs = [xs[0], *(b.constant(prefix + n, a) for n, a in zip(names, arrays, strict=True))]
    return b.node("BatchNormalization", inputs, prefix + "BatchNormalization", epsilon=layer.eps)


def _pool(op: str, **extra: Any) -> Emitter:
    def emit(b: GraphBuilder, layer: Any, xs: list[str], prefix: str) -> str:
        (ph, pw) = layer.padding
        return b.node(
            op,
            xs,
            prefix + op,
            kernel_shape=list(layer.kernel_size),
            strides=list(layer.stride),
            pads=[ph, pw, ph, pw],
            **extra,
        )

    return emit


def _max_pool(b: GraphBuilder, layer: nn.MaxPool2D, xs: list[str], prefix: str) -> str:
    return _pool("MaxPool", ceil_mode=int(layer.ceil_mode))(b, layer, xs, prefix)


def _zero_pad(b: GraphBuilder, layer: nn.ZeroPad2D, xs: list[str], prefix: str) -> str:
    left, right, top, bottom = layer.padding
    pads = b.integers(prefix + "pads", [0, 0, top, left, 0, 0, bottom, right])
    return b.node("Pad", [xs[0], pads], prefix + "Pad", mode="constant")


def _global_avg_pool(b: GraphBuilder, layer: Any, xs: list[str], prefix: str) -> str:
    pooled = b.node("GlobalAveragePool", xs, prefix + "GlobalAveragePool")
    return b.node("Flatten", [pooled], prefix + "Flatten", axis=1)


def _dense(b: GraphBuilder, layer: nn.Dense, xs: list[str], prefix: str) -> str:
    inputs = [xs[0], b.constant(prefix + "weight", layer.weight.data)]
    if layer.bias is not None:
        inputs.append(b.constant(prefix + "bias", layer.bias.data))
    return b.node("Gemm", inputs, prefix + "Gemm", transB=1)


def _add(b: GraphBuilder, layer: Any, xs: list[str], prefix: str) -> str:
    total = xs[0]
    for x in xs[1:]:
        total = b.node("Add", [total, x], prefix + "Add")
    return total


def _simple(op: str, **attributes: Any) -> Emitter:
    def emit(b: GraphBuilder, layer: Any, xs: list[str], prefix: str) -> str:
        return b.node(op, xs, prefix + op, **attributes)

    return emit


def _leaky_relu(b: GraphBuilder, layer: Any, xs: list[str], prefix: str) -> str:
    return b.node("LeakyRelu", xs, prefix + "LeakyRelu", alpha=float(layer.negative_slope))


def _identity(b: GraphBuilder, layer: Any, xs: list[str], prefix: str) -> str:
    return xs[0]


def _sequential(b: GraphBuilder, layer: nn.Sequential, xs: list[str], prefix: str) -> str:
    x = xs[0]
    for name, child in layer.named_children():
        x = emit_layer(b, child, [x], f"{prefix}{name}.")
    return x


def _model(b: GraphBuilder, layer: nn.Model, xs: list[str], prefix: str) -> str:
    values = {layer.input_name: xs[0]}
    for node in layer.nodes:
        inputs = [values[name] for name in node.inbound]
        values[node.name] = emit_layer(b, node.layer, inputs, f"{prefix}{node.name}.")
    return values[layer.output_name]


#: Each layer type's emitter: (builder, layer, input value names, name prefix) -> output name.
EMITTERS: dict[type, Emitter] = {
    nn.Conv2D: _conv,
    nn.BatchNorm1D: _batch_norm,
    nn.BatchNorm2D: _batch_norm,
    nn.ReLU: _simple("Relu"),
    nn.LeakyReLU: _leaky_relu,
    nn.Sigmoid: _simple("Sigmoid"),
    nn.Tanh: _simple("Tanh"),
    nn.MaxPool2D: _max_pool,
    nn.AvgPool2D: _pool("AveragePool", count_include_pad=1),
    nn.GlobalAvgPool2D: _global_avg_pool,
    nn.ZeroPad2D: _zero_pad,
    nn.Flatten: _simple("Flatten", axis=1),
    nn.Dense: _dense,
    nn.Add: _add,
    nn.Concatenate: _simple("Concat", axis=1),
    nn.Dropout: _identity,
    nn.Identity: _identity,
    nn.Sequential: _sequential,
    nn.Model: _model,
}


def emit_layer(b: GraphBuilder, layer: nn.Layer, xs: list[str], prefix: str) -> str:
    """Append `layer`'s operators on the values `xs`; returns its output value's name.

    Raises ValueError for a layer type with no ONNX form (a layer of your own)."""
    emitter = EMITTERS.get(type(layer))
    if emitter is None:
        raise ValueError(
            f"cannot export layer {prefix.rstrip('.') or 'model'!r} of type "
            f"{type(layer).__name__}: ONNX export knows {', '.join(t.__name__ for t in EMITTERS)}"
        )
    return emitter(b, layer, xs, prefix)


def _check_opset(opset: int) -> int:
    if not isinstance(opset, int) or opset not in SUPPORTED_OPSETS:
        first, last = SUPPORTED_OPSETS[0], SUPPORTED_OPSETS[-1]
        raise ValueError(f"opset must be an integer from {first} to {last}, got {opset!r}")
    return opset


def to_onnx(
    model: nn.Layer,
    input_shape: tuple[int, ...] | None = None,
    opset: int = DEFAULT_OPSET,
    softmax: bool = False,
) -> Any:
    """The ONNX ModelProto of `model`'s inference forward on inputs (batch, *input_shape),
    checked by onnx.checker (full check, shapes included). `input_shape` defaults
    to a graph model's own (`nn.Model.input_shape`), else (1, 28, 28).

    `softmax` appends a Softmax over axis 1 (probabilities instead of logits).
    Raises ValueError for an opset outside SUPPORTED_OPSETS, a layer with no
    ONNX form, or an input shape the model does not take; OnnxMissingError
    without the onnx package.
    """
    onnx = require_onnx()
    opset = _check_opset(opset)
    if input_shape is None:
        input_shape = getattr(model, "input_shape", (1, 28, 28))
    input_shape = tuple(int(n) for n in input_shape)
    probe = np.zeros((1, *input_shape), dtype=np.float32)
    output_shape = _output_shape(model, probe)
    b = GraphBuilder(onnx.helper)
    out = emit_layer(b, model, [INPUT_NAME], "")
    if softmax:
        out = b.node("Softmax", [out], "Softmax", axis=1)
    b.nodes.append(onnx.helper.make_node("Identity", [out], [OUTPUT_NAME], name=OUTPUT_NAME))
    float32 = onnx.TensorProto.FLOAT
    graph = onnx.helper.make_graph(
        b.nodes,
        "npcnn",
        [onnx.helper.make_tensor_value_info(INPUT_NAME, float32, [BATCH_DIM, *input_shape])],
        [onnx.helper.make_tensor_value_info(OUTPUT_NAME, float32, [BATCH_DIM, *output_shape])],
        b.initializers,
    )
    proto = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid("", opset)],
        producer_name="npcnn",
        producer_version=_version(),
    )
    onnx.helper.set_model_props(proto, npcnn_metadata(model))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _output_shape(model: nn.Layer, probe: np.ndarray) -> tuple[int, ...]:
    """The per-sample output shape of `model` on `probe` (1, *input_shape), or ValueError."""
    try:
        with nn.passes_undone(model):  # a training forward's caches stay for its backward
            y = model.forward(probe.astype(_dtype(model)), training=False)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"the model does not take inputs of shape (N, {', '.join(map(str, probe.shape[1:]))})"
            f": {err}"
        ) from err
    return tuple(int(n) for n in y.shape[1:])


def _dtype(model: nn.Layer) -> np.dtype:
    params = list(model.parameters())
    return params[0].data.dtype if params else np.dtype(np.float32)


def _version() -> str:
    from npcnn import __version__

    return __version__


def export(
    model: nn.Layer,
    path: str | os.PathLike[str],
    input_shape: tuple[int, ...] | None = None,
    opset: int = DEFAULT_OPSET,
    softmax: bool = False,
) -> Path:
    """Write `model`'s inference graph (see `to_onnx`) to the .onnx file `path`,
    atomically (a failed export leaves no file); returns the path."""
    proto = to_onnx(model, input_shape, opset, softmax)
    return atomic_write_bytes(path, proto.SerializeToString())
