"""An ONNX graph -> an npcnn `nn.Model`, node by node, through the operators' handlers.

The converter walks the nodes in order, keeping each value as data of the
batch (`values.Batch`, a symbolic tensor of the model being built), a NumPy
constant, or a `values.ShapeVector`. Each operator's handler
(`operators.HANDLERS`: layers in `ops`, folded constants and shapes in
`constants`; each reads the model's opset where a signature changed) turns
a node into npcnn layers called on symbolic tensors, or folds it into a
constant. Anything npcnn cannot represent raises `UnsupportedOnnx`
naming the node, the operator and what is unsupported; nothing is built
half-way, since the model is only made at the end.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np

from npcnn import nn
from npcnn.onnx.layout import CHANNELS_LAST, channels_last_input
from npcnn.onnx.nodes import UnsupportedOnnx, attributes, default_opset, label, unique_name
from npcnn.onnx.operators import handler_for
from npcnn.onnx.values import Batch
from npcnn.text import names_list

#: Operators whose initializers are a layer's weights (not constants folded away).
#: Batch norms' are left out: a fresh one's ones and zeros, equal in two layers, may
#: be merged into one initializer by an exporter that dedupes equal values.
WEIGHT_READERS = frozenset({"Conv", "Gemm", "MatMul"})


class Converter:
    """State of one conversion: the values by name, the opset, the layer names used."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.graph = model.graph
        self.opset = default_opset(model)
        self.values: dict[str, Any] = {"": None}
        for tensor in self.graph.initializer:
            self.values[tensor.name] = numpy_helper.to_array(tensor)
        # Each value's readers' operators, one entry per read.
        self.consumer_ops: dict[str, list[str]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumer_ops.setdefault(name, []).append(node.op_type)
        self.layer_names: set[str] = set()
        self.bias_of_matmul: dict[int, nn.Dense] = {}  # id(tensor) -> its Dense
        self.export_batch: int | None = None

    # --- the whole graph ---------------------------------------------------------------
    def convert(self) -> nn.Model:
        x = self._input()
        for node in self.graph.node:
            handler = handler_for(node, self.opset)
            inputs = [self._value(node, name) for name in node.input]
            outputs = handler(self, node, inputs, attributes(node))
            for name, value in zip(node.output, outputs, strict=False):
                if name:
                    self.values[name] = value
        self._warn_of_shared_weights()
        return self._model(x)

    def _warn_of_shared_weights(self) -> None:
        """Warn when layers' weights are read by several nodes (one PyTorch module applied
        twice): each node becomes a layer with a copy of them, no longer tied in training."""
        shared = [
            t.name
            for t in self.graph.initializer
            if sum(op in WEIGHT_READERS for op in self.consumer_ops.get(t.name, [])) > 1
            and np.unique(self.values[t.name]).size > 1  # (equal values: merged, maybe)
        ]
        if shared:
            warnings.warn(
                f"weights that several nodes read ({names_list(shared)}) are copied into "
                "each node's layer: npcnn layers share no weights, so training the model "
                "no longer keeps the copies equal",
                stacklevel=3,
            )

    def _input(self) -> nn.SymbolicTensor:
        inputs = [v for v in self.graph.input if v.name not in self.values]
        if len(inputs) != 1:
            raise UnsupportedOnnx(
                f"a graph of {len(inputs)} inputs ({', '.join(v.name for v in inputs)}): "
                "npcnn models take one"
            )
        (value,) = inputs
        dims = value.type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if len(shape) < 2 or any(n is None or n <= 0 for n in shape[1:]):
            raise UnsupportedOnnx(
                f"input {value.name!r} of shape {shape}: npcnn needs (batch, fixed sizes...)"
            )
        self.export_batch = shape[0]
        if channels_last_input(self, value.name, shape):  # (Keras through tf2onnx)
            _, h, w, c = shape
            x = nn.Input((c, h, w))
            self.values[value.name] = Batch(x, (None, h, w, c), perm=CHANNELS_LAST)
            return x
        x = nn.Input(tuple(shape[1:]))
        self.values[value.name] = Batch.of(x)
        return x

    def _model(self, x: nn.SymbolicTensor) -> nn.Model:
        if len(self.graph.output) != 1:
            raise UnsupportedOnnx(
                f"a graph of {len(self.graph.output)} outputs: npcnn models give one"
            )
        out = self.values.get(self.graph.output[0].name)
        if not isinstance(out, Batch) or out.tensor is x or any(out.pad):
            raise UnsupportedOnnx(
                "a graph whose output does not depend on its input through layers"
            )
        return nn.Model(x, out.tensor)

    def _value(self, node: Any, name: str) -> Any:
        if name not in self.values:
            raise UnsupportedOnnx(
                f"{label(node)}: it reads {name!r}, an output npcnn does not compute "
                "(a Dropout mask, pooling indices, ...)"
            )
        return self.values[name]

    # --- helpers for the handlers ------------------------------------------------------
    def call(
        self,
        layer: nn.Layer,
        node: Any,
        x: Batch | list[Batch],
        onnx_shape: tuple[int | None, ...] | None = None,
        suffix: str = "",
    ) -> Batch:
        """`layer` called on `x` in the model being built, named after `node` (and
        `suffix`, for a layer that comes before the node's own)."""
        tensors = [b.tensor for b in x] if isinstance(x, list) else x.tensor
        try:
            y = layer(tensors, name=self.layer_name(node, suffix))
        except (ValueError, TypeError) as err:  # shapes npcnn's layer refuses
            raise UnsupportedOnnx(f"{label(node)}: {err}") from None
        return Batch(y, onnx_shape or tuple(y.shape))

    def layer_name(self, node: Any, suffix: str = "") -> str:
        """A unique child name from the node's name (dots and slashes become '_')."""
        base = re.sub(r"[^0-9A-Za-z_]+", "_", node.name or "").strip("_")
        base = (base or f"{node.op_type.lower()}") + suffix
        if base[0].isdigit():
            base = f"{node.op_type.lower()}_{base}"
        return unique_name(base, self.layer_names)
