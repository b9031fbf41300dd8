"""Symbolic tensors: what `nn.Input` returns and calling a layer on one records.

Keras' functional API: `x = nn.Input((1, 28, 28))` is a placeholder for a
batch of images (the batch axis left out); `y = layer(x)` (or
`layer([a, b])` for a layer that takes several inputs) runs nothing on data:
it records a `Node` (the layer and the tensors it was called on) and returns
a new `SymbolicTensor` whose shape is inferred by running the layer on a
batch of 0 images (every layer takes empty batches). `nn.Model(x, y)` then
turns the recorded nodes between x and y into a layer.

A layer instance may be called in one node only: shared weights (one layer
in two places of a graph) are not supported, and a second call is refused.

This module imports nothing of npcnn but the leaf `npcnn.shapes`, so that
`Layer.__call__` (`npcnn.nn.module`) can record nodes.
"""

from __future__ import annotations

import itertools
import re
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from npcnn.shapes import name_batch_axis

_node_ids = itertools.count()
#: The label of the node each layer was called in (a layer is in one node at most).
#: Labels, not nodes: a node holds its layer, which would then never be freed.
_node_of_layer: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


@dataclass(eq=False)
class Node:
    """One call of `layer` on symbolic tensors: `inputs` (a list when the layer was called
    on a list), the child name it asked for (None: the Model picks a default), and
    `index`, the order of creation (a topological order: inputs exist before)."""

    layer: Any
    inputs: list[SymbolicTensor]
    merge: bool
    name: str | None
    index: int = field(default_factory=lambda: next(_node_ids))
    output: SymbolicTensor | None = None


@dataclass(eq=False)
class SymbolicTensor:
    """A placeholder for a batch: `shape` is (None, ...), the batch axis unknown; `node`
    is the node that produces it (None for an `Input`, which has a `name`)."""

    shape: tuple[int | None, ...]
    node: Node | None = None
    name: str | None = None
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))

    def describe(self) -> str:
        """ "Conv2D 'conv1' (None, 16, 28, 28)": who makes it and its shape, for messages."""
        who = f"Input {self.name!r}" if self.node is None else node_label(self.node)
        return f"{who} {self.shape}"

    def __repr__(self) -> str:
        return f"SymbolicTensor({self.describe()})"


def Input(shape: tuple[int, ...], name: str = "input") -> SymbolicTensor:
    """A symbolic batch of samples of `shape` (batch axis left out), e.g. (1, 28, 28).

    Raises:
        TypeError: a shape that is not a tuple (or list).
        ValueError: a dimension that is not a positive integer, or an empty name.
    """
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"Input shape must be a tuple such as (1, 28, 28), got {shape!r}")
    dims = tuple(shape)
    if not all(isinstance(n, (int, np.integer)) and n > 0 for n in dims):
        raise ValueError(f"Input shape must be positive integers, got {dims!r}")
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"Input name must be a non-empty string without '.', got {name!r}")
    return SymbolicTensor((None, *(int(n) for n in dims)), name=name)


def is_symbolic(x: object) -> bool:
    """Whether `x` is a symbolic tensor or a non-empty list/tuple of them."""
    if isinstance(x, SymbolicTensor):
        return True
    return (
        isinstance(x, (list, tuple)) and bool(x) and all(isinstance(t, SymbolicTensor) for t in x)
    )


def default_name(layer: Any) -> str:
    """'conv2d' for Conv2D, 'batch_norm2d' for BatchNorm2D, 'relu' for ReLU: the type in snake
    case, a word beginning at each capital followed by a small letter."""
    name = type(layer).__name__
    return re.sub(r"(?<=[a-z])(?=[A-Z][a-z])", "_", name).lower()


def node_label(node: Node) -> str:
    """The node's layer type and, if given, its name: "Conv2D 'conv1'"."""
    kind = type(node.layer).__name__
    return f"{kind} {node.name!r}" if node.name else kind


def call_symbolic(
    layer: Any, x: SymbolicTensor | list[SymbolicTensor], name: str | None
) -> SymbolicTensor:
    """Record `layer(x)` as a node and return its output, with the shape `layer.forward`
    gives a batch of 0 samples.

    Raises:
        ValueError: the layer is already in a node, or does not take inputs of these
            shapes (the message names the layer and the shapes).
    """
    if name is not None and (not isinstance(name, str) or not name or "." in name):
        raise ValueError(f"a layer's name must be a non-empty string without '.', got {name!r}")
    merge = not isinstance(x, SymbolicTensor)
    inputs = list(x) if merge else [x]
    label = f"{type(layer).__name__} {name!r}" if name else type(layer).__name__
    several = getattr(layer, "takes_several_inputs", False)
    if merge != several:
        shapes = ", ".join(t.describe() for t in inputs)
        takes = "a list of at least 2 inputs" if several else "one input, not a list"
        raise ValueError(f"cannot call {label} on {shapes}: {type(layer).__name__} takes {takes}")
    previous = _node_of_layer.get(layer)
    if previous is not None:
        raise ValueError(
            f"this {type(layer).__name__} is already called in a graph (as "
            f"{previous}): a layer instance may be called once (shared weights "
            "are not supported); create another layer"
        )
    empty = [np.zeros((0, *t.shape[1:]), dtype=t.dtype) for t in inputs]
    try:
        y = layer.forward(empty if merge else empty[0], training=False)
    except (ValueError, TypeError) as err:
        shapes = ", ".join(t.describe() for t in inputs)
        message = str(err)
        for e in empty:  # the batch of 0 is the symbolic batch axis
            message = name_batch_axis(message, e.shape)
        raise ValueError(f"cannot call {label} on {shapes}: {message}") from None
    node = Node(layer, inputs, merge, name)
    node.output = SymbolicTensor((None, *y.shape[1:]), node=node, dtype=y.dtype)
    _node_of_layer[layer] = node_label(node)
    return node.output
