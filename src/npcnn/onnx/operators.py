"""Every ONNX operator npcnn imports, by name: the layer handlers of `ops` and the folded
ones of `constants`."""

from __future__ import annotations

from typing import Any

from npcnn.onnx.constants import HANDLERS_CONSTANTS
from npcnn.onnx.nodes import DEFAULT_DOMAINS, fail
from npcnn.onnx.ops import HANDLERS_LAYERS, Handler

HANDLERS: dict[str, Handler] = {**HANDLERS_LAYERS, **HANDLERS_CONSTANTS}


def handler_for(node: Any, opset: int) -> Handler:
    """The handler of `node`'s operator, or UnsupportedOnnx naming it."""
    if node.domain not in DEFAULT_DOMAINS:
        raise fail(node, f"operator domain {node.domain!r} is not supported")
    handler = HANDLERS.get(node.op_type)
    if handler is None:
        raise fail(node, f"operator {node.op_type} (opset {opset}) is not supported")
    return handler
