"""Operators folded while converting: constants, and shapes with a symbolic batch size.

They compute nothing in the npcnn model: Constant and ConstantOfShape give
arrays; Shape of
the data gives a `ShapeVector` (None for the batch size); Gather, Unsqueeze,
Squeeze, Cast, Slice and Transpose apply to constants and shape vectors, so
that `x.view(x.size(0), -1)`'s chain reaches Reshape as (None, -1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from npcnn.onnx.nodes import Handler, as_shape_vector, fail
from npcnn.onnx.values import Batch, ShapeVector

if TYPE_CHECKING:
    from npcnn.onnx.convert import Converter


def constant(cv: Converter, node: Any, ins: list[Any], at: dict[str, Any]) -> list[Any]:
    from onnx import numpy_helper

    if "value" in at:
        return [numpy_helper.to_array(at["value"])]
    for name, dtype in (("value_float", np.float32), ("value_floats", np.float32)):
        if name in at:
            return [np.array(at[name], dtype=dtype)]
    for name in ("value_int", "value_ints"):
        if name in at:
            return [np.array(at[name], dtype=np.int64)]
    raise fail(node, f"a Constant given as {', '.join(at) or 'nothing'} is not supported")


def constant_of_shape(cv: Converter, node: Any, ins: list[Any], at: dict[str, Any]) -> list[Any]:
    from onnx import numpy_helper

    if not isinstance(ins[0], np.ndarray):
        raise fail(node, "a shape that depends on the data")
    value = numpy_helper.to_array(at["value"]) if "value" in at else np.zeros(1, np.float32)
    return [np.full(tuple(int(d) for d in np.ravel(ins[0])), value.reshape(-1)[0], value.dtype)]


def shape(cv: Converter, node: Any, ins: list[Any], at: dict[str, Any]) -> list[Any]:
    x = ins[0]
    dims = x.onnx_shape if isinstance(x, Batch) else tuple(np.shape(x))
    start, end = at.get("start", 0), at.get("end", len(dims))  # (opset 15)
    return [ShapeVector(tuple(dims[start:end]))]


def vector_op(fn: Any) -> Handler:
    """A handler applying `fn(array, node, ins, at, cv)` to a constant or a shape vector
    (as an object array, None the batch size); data of the batch is refused."""

    def handle(cv: Converter, node: Any, ins: list[Any], at: dict[str, Any]) -> list[Any]:
        value = ins[0]
        if isinstance(value, Batch):
            raise fail(node, "npcnn applies this operator to constants and shapes only")
        vector = as_shape_vector(value) if isinstance(value, ShapeVector) else None
        array = np.array(vector.values, dtype=object) if vector else value
        result = fn(array, node, ins, at, cv)
        if vector is not None:
            return [ShapeVector(tuple(None if v is None else int(v) for v in np.ravel(result)))]
        return [np.asarray(result)]

    return handle


def _axes(node: Any, ins: list[Any], at: dict[str, Any], cv: Converter, since: int) -> Any:
    """Axes from the attribute (before opset `since`) or the second input (from it)."""
    if cv.opset >= since:
        return None if len(ins) < 2 or ins[1] is None else tuple(np.ravel(ins[1]).tolist())
    return tuple(at["axes"]) if "axes" in at else None


def _gather(a: Any, node: Any, ins: list[Any], at: dict[str, Any], cv: Converter) -> Any:
    indices = ins[1]
    if not isinstance(indices, np.ndarray):
        raise fail(node, "gather indices must be constants")
    return np.take(a, indices, axis=at.get("axis", 0))


def _unsqueeze(a: Any, node: Any, ins: list[Any], at: dict[str, Any], cv: Converter) -> Any:
    axes = _axes(node, ins, at, cv, since=13) or ()
    for axis in sorted(int(x) % (np.ndim(a) + len(axes)) for x in axes):
        a = np.expand_dims(a, axis)
    return a


def _squeeze(a: Any, node: Any, ins: list[Any], at: dict[str, Any], cv: Converter) -> Any:
    axes = _axes(node, ins, at, cv, since=13)
    return np.squeeze(a, axis=axes)


def _cast(a: Any, node: Any, ins: list[Any], at: dict[str, Any], cv: Converter) -> Any:
    from onnx import helper

    if a.dtype == object:  # a shape stays integers
        return a
    return a.astype(helper.tensor_dtype_to_np_dtype(at["to"]))


def _transpose(a: Any, node: Any, ins: list[Any], at: dict[str, Any], cv: Converter) -> Any:
    return np.transpose(a, at.get("perm"))


def _slice(a: Any, node: Any, ins: list[Any], at: dict[str, Any], cv: Converter) -> Any:
    if cv.opset < 10:
        starts, ends, axes = at["starts"], at["ends"], at.get("axes")
        steps = None
    else:
        starts, ends = np.ravel(ins[1]), np.ravel(ins[2])
        axes = np.ravel(ins[3]) if len(ins) > 3 and ins[3] is not None else None
        steps = np.ravel(ins[4]) if len(ins) > 4 and ins[4] is not None else None
    index = [slice(None)] * np.ndim(a)
    for k, (start, end) in enumerate(zip(starts, ends, strict=True)):
        axis = int(axes[k]) if axes is not None else k
        step = int(steps[k]) if steps is not None else 1
        index[axis] = slice(int(start), int(min(end, np.iinfo(np.int64).max)), step)
    return a[tuple(index)]


HANDLERS_CONSTANTS: dict[str, Handler] = {
    "Constant": constant,
    "ConstantOfShape": constant_of_shape,
    "Shape": shape,
    "Gather": vector_op(_gather),
    "Unsqueeze": vector_op(_unsqueeze),
    "Squeeze": vector_op(_squeeze),
    "Cast": vector_op(_cast),
    "Transpose": vector_op(_transpose),
    "Slice": vector_op(_slice),
}
