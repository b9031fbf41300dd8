"""Every ONNX operator npcnn imports, by name: the layer handlers of `ops`, the folded
ones of `constants`, and `layout`'s transposes and squeezes of the batch's data."""

from __future__ import annotations

from typing import Any

from npcnn.onnx.constants import HANDLERS_CONSTANTS
from npcnn.onnx.layout import HANDLERS_LAYOUT
from npcnn.onnx.nodes import DEFAULT_DOMAINS, Handler, fail
from npcnn.onnx.ops import HANDLERS_LAYERS

# (the layer handlers' Squeeze hands constants on to the constants' one)
HANDLERS: dict[str, Handler] = {**HANDLERS_CONSTANTS, **HANDLERS_LAYERS, **HANDLERS_LAYOUT}


def handler_for(node: Any, opset: int) -> Handler:
    """The handler of `node`'s operator, or UnsupportedOnnx naming it."""
    if node.domain not in DEFAULT_DOMAINS:
        raise fail(node, f"operator domain {node.domain!r} is not supported")
    handler = HANDLERS.get(node.op_type)
    if handler is None:
        raise fail(node, f"operator {node.op_type} (opset {opset}) is not supported")
    return handler
