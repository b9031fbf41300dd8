"""Data of the batch laid out otherwise than npcnn's tensor: Keras models through tf2onnx.

tf2onnx writes a Keras CNN as an NCHW graph between two layout changes:
the channels-last input (N, H, W, C) is transposed to NCHW (a Reshape when
C is 1), and before `Flatten` the data is transposed back to NHWC, so the
Dense weights read the columns in (H, W, C) order. npcnn models take NCHW:
the input transpose is folded away (the imported model takes (N, C, H, W)
images, as every npcnn model), and a flatten of transposed data becomes
npcnn's Flatten with the next Dense's weight columns reordered to fit.

`values.Batch.perm` holds a pending transpose (ONNX's value = npcnn's tensor
transposed by it) and `values.Batch.columns` a flatten's column order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from npcnn.onnx.constants import HANDLERS_CONSTANTS
from npcnn.onnx.nodes import fail
from npcnn.onnx.values import Batch

if TYPE_CHECKING:
    from npcnn.onnx.convert import Converter

CHANNELS_LAST = (0, 2, 3, 1)  # ONNX's (N, H, W, C) value of npcnn's (N, C, H, W) tensor


def transposed(x: Batch, perm: tuple[int, ...]) -> Batch:
    """`x` transposed by ONNX's `perm` (output axis i is input axis perm[i])."""
    current = x.perm or tuple(range(x.rank))
    composed = tuple(current[axis] for axis in perm)
    shape = tuple(x.onnx_shape[axis] for axis in perm)
    if composed == tuple(range(len(composed))):
        return Batch(x.tensor, shape, x.pad)
    return Batch(x.tensor, shape, x.pad, perm=composed)


def same_memory_order(x: Batch) -> bool:
    """Whether the transpose pending on `x` moves only axes of size 1 (then ONNX's
    value, read in C order, is npcnn's tensor: a Reshape can undo it)."""
    shape = x.tensor.shape
    moved = [axis for axis in (x.perm or ()) if axis == 0 or shape[axis] != 1]
    return moved == sorted(moved)


def flatten_columns(x: Batch) -> np.ndarray | None:
    """For ONNX's flatten of `x`: the npcnn column (of npcnn's C-order Flatten) that
    each ONNX column is; None when they are the same."""
    if x.perm is None or same_memory_order(x):
        return None
    npcnn_order = np.arange(int(np.prod(x.tensor.shape[1:]))).reshape(x.tensor.shape[1:])
    return np.transpose(npcnn_order, [axis - 1 for axis in x.perm[1:]]).ravel()


def transpose(cv: Converter, node: Any, ins: list[Any], at: dict[str, Any]) -> list[Any]:
    """A transpose of the batch's data is recorded on the value (`transposed`); one of
    constants or shapes is folded."""
    x = ins[0]
    if not isinstance(x, Batch):
        return HANDLERS_CONSTANTS["Transpose"](cv, node, ins, at)
    if x.columns is not None or any(x.pad):
        raise fail(node, "a transpose of flattened or padded data is not supported")
    perm = tuple(int(a) for a in at.get("perm", range(x.rank)[::-1]))
    if perm[0] != 0:
        raise fail(node, f"perm {list(perm)} moves the batch axis")
    return [transposed(x, perm)]


def channels_last_input(cv: Converter, name: str, shape: list[int | None]) -> bool:
    """Whether the graph's input `name` of `shape` is (N, H, W, C) data that the graph
    first turns to NCHW: every reader is a Transpose with perm (0, 3, 1, 2), or (C = 1)
    a Reshape to (-1, 1, H, W)."""
    if len(shape) != 4:
        return False
    readers = [n for n in cv.graph.node if name in n.input]
    _, h, w, c = shape

    def to_nchw(node: Any) -> bool:
        if node.op_type == "Transpose":
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            return perm == [0, 3, 1, 2]
        if node.op_type == "Reshape" and c == 1 and len(node.input) > 1:
            target = cv.values.get(node.input[1])
            return isinstance(target, np.ndarray) and np.ravel(target).tolist()[1:] == [1, h, w]
        return False

    return bool(readers) and all(to_nchw(node) for node in readers)


HANDLERS_LAYOUT = {"Transpose": transpose}
