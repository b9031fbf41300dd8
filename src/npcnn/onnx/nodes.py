"""What every ONNX operator handler shares: naming a node, its attributes, the error; and
fresh names, for the layers import makes and the values export writes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from npcnn.onnx.values import ShapeVector

if TYPE_CHECKING:
    from npcnn.onnx.convert import Converter

#: An operator's handler: (converter, node, input values, attributes) -> output values.
Handler = Callable[["Converter", Any, list[Any], dict[str, Any]], list[Any]]

DEFAULT_DOMAINS = ("", "ai.onnx")


class UnsupportedOnnx(ValueError):
    """A node (or graph) npcnn cannot represent; the message names it and says what is
    unsupported, worded to follow "cannot import " (see `npcnn.onnx.load`)."""


def default_opset(model: Any) -> int:
    """The version of the default (ai.onnx) operator set a ModelProto imports."""
    return next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), 1)


def label(node: Any) -> str:
    """ "node 'conv1' (Conv)": a node as messages name it."""
    return f"node {node.name or '(unnamed)'!r} ({node.op_type})"


def fail(node: Any, what: str) -> UnsupportedOnnx:
    """The error for `node`: its label, then `what` is unsupported."""
    return UnsupportedOnnx(f"{label(node)}: {what}")


def attributes(node: Any) -> dict[str, Any]:
    """A node's attributes as Python values (bytes decoded to str)."""
    from onnx import helper

    result = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        result[attribute.name] = value.decode() if isinstance(value, bytes) else value
    return result


def as_shape_vector(value: Any) -> ShapeVector | None:
    """`value` as a ShapeVector (constants of integers too), or None."""
    if isinstance(value, ShapeVector):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "iu" and value.ndim <= 1:
        return ShapeVector(tuple(int(v) for v in value.reshape(-1)))
    return None


def unique_name(base: str, taken: set[str]) -> str:
    """`base`, or `base_2`, `base_3`, ... the first not in `taken`, which it joins."""
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name
