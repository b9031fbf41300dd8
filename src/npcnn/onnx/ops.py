"""The ONNX operators npcnn imports: one handler per (domain, operator).

A handler gets the converter, the node, its input values (`values.Batch`,
NumPy constants, `values.ShapeVector`, None for an empty optional input) and
its attributes, and returns its output values. Signatures that changed
between opsets are read by the model's opset (`Converter.opset`): Unsqueeze
and Squeeze take their axes as an input from 13 on, Shape its start/end
from 15, BatchNormalization its training_mode from 14, Reshape allowzero
from 14, ReduceMean its axes from 18, Pad its pads and value from 11.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from npcnn import nn
from npcnn.onnx.constants import HANDLERS_CONSTANTS
from npcnn.onnx.layout import flatten_columns, same_memory_order
from npcnn.onnx.nodes import Handler, as_shape_vector, fail
from npcnn.onnx.values import Batch, ShapeVector

if TYPE_CHECKING:
    from npcnn.onnx.convert import Converter


def batch_input(
    node: Any, value: Any, rank: int | None = None, padded: bool = False, laid_out: bool = False
) -> Batch:
    """`value` as data of the batch (of `rank` axes), or UnsupportedOnnx. Data a Pad
    node padded is taken only where `padded` (a conv or an average pool); data laid
    out otherwise than npcnn's (`layout`) only where `laid_out`."""
    if not isinstance(value, Batch):
        raise fail(node, "npcnn computes this operator on the input's data only")
    if not (laid_out or value.laid_out_as_npcnn):
        raise fail(node, "data transposed away from NCHW (npcnn computes in NCHW)")
    if rank is not None and value.rank != rank:
        raise fail(node, f"expects {rank}-D data, got shape {value.onnx_shape}")
    if any(value.pad) and not padded:
        raise fail(node, "a zero Pad before it (npcnn folds one into a Conv or AveragePool)")
    return value


def unpadded(x: Batch) -> tuple[Batch, tuple[int, int]]:
    """`x` as npcnn holds it (without a Pad node's zeros), and those zeros (rows, cols)."""
    (n, c, h, w), (ph, pw) = x.onnx_shape, x.pad
    return Batch(x.tensor, (n, c, h - 2 * ph, w - 2 * pw)), x.pad


def constant_input(node: Any, value: Any, what: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise fail(node, f"{what} must be a constant (an initializer)")
    return value


def explicit_pads(node: Any, at: dict[str, Any], rank: int = 2) -> list[int]:
    """ONNX's pads (begins, then ends), checked: explicit (no auto_pad), no dilation."""
    auto_pad = at.get("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID"):
        raise fail(node, f"auto_pad {auto_pad} is not supported (give explicit pads)")
    pads = list(at.get("pads", [0] * 2 * rank)) if auto_pad == "NOTSET" else [0] * 2 * rank
    if any(d != 1 for d in at.get("dilations", [1] * rank)):
        raise fail(node, f"dilations {at['dilations']} are not supported")
    return pads


def symmetric_pads(node: Any, at: dict[str, Any], rank: int = 2) -> tuple[int, ...]:
    """(ph, pw) from ONNX's pads (begins then ends), or UnsupportedOnnx if they differ."""
    pads = explicit_pads(node, at, rank)
    if pads[:rank] != pads[rank:]:
        raise fail(node, f"asymmetric pads {pads} (npcnn pads both sides alike)")
    return tuple(pads[:rank])


def with_pad(pads: tuple[int, ...], extra: tuple[int, int]) -> tuple[int, ...]:
    """A layer's (ph, pw) plus the zeros of Pad nodes before it."""
    return tuple(p + e for p, e in zip(pads, extra, strict=True))


# --- layers ----------------------------------------------------------------------------


def conv(cv: Converter, node: Any, ins: list[Any], at: dict[str, Any]) -> list[Any]:
    """Conv; pads larger on one side (TensorFlow's "SAME" with a stride) become a
    ZeroPad2D of the difference before a conv that pads both sides alike."""
    x = batch_input(node, ins[0], 4, padded=True)
    (top, left, bottom, right) = explicit_pads(node, at)
    if (top, left) != (bottom, right):
        ph, pw = min(top, bottom), min(left, right)
        sides = (left - pw, right - pw, top - ph, bottom - ph)
        x = zero_pad(cv, node, x, sides, suffix="_pad")
        at = {**at, "pads": [ph, pw, ph, pw]}
    x, extra = unpadded(x)
    weight = constant_input(node, ins[1], "the weight")
    bias = ins[2] if len(ins) > 2 else None
    if bias is not None:
        bias = constant_input(node, bias, "the bias")
    groups = int(at.get("group", 1))
    if weight.ndim != 4 or weight.shape[1] * groups != x.onnx_shape[1]:
        raise fail(node, f"weight {weight.shape} does not fit input {x.onnx_shape}")
    if list(at.get("kernel_shape", weight.shape[2:])) != list(weight.shape[2:]):
        raise fail(node, f"kernel_shape {at['kernel_shape']} differs from the weight's")
    layer = nn.Conv2D(
        x.onnx_shape[1],
        weight.shape[0],
        weight.shape[2:],
        stride=tuple(at.get("strides", (1, 1))),
        padding=with_pad(symmetric_pads(node, at), extra),
        bias=bias is not None,
        groups=groups,
    )
    layer.weight.data[...] = weight
    if bias is not None:
        layer.bias.data[...] = bias
    return [cv.call(layer, node, x)]


def batch_norm(cv: Converter, node: Any, ins: list[Any], at: dict[str, Any]) -> list[Any]:
    if at.get("training_mode", 0) or any(node.output[1:]):
        raise fail(node, "training-mode batch norm (its extra outputs) is not supported")
    x = batch_input(node, ins[0])
    scale, bias, mean, var = (constant_input(node, v, "a statistic") for v in ins[1:5])
    kinds = {4: nn.BatchNorm2D, 2: nn.BatchNorm1D}
    if x.rank not in kinds:
        raise fail(node, f"batch norm of {x.rank}-D data is not supported")
    layer = kinds[x.rank](
        x.onnx_shape[1], eps=float(at.get("epsilon", 1e-5)), momentum=1 - at.get("momentum", 0.9)
    )
    layer.weight.data[...], layer.bias.data[...] = scale, bias
    layer.running_mean[...], layer.running_var[...] = mean, var
    return [cv.call(layer, node, x)]


def activation(make: Callable[[dict[str, Any]], nn.Layer]) -> Handler:
    def handle(cv: Converter, node: Any, ins: list[Any], at: dict[str, Any]) -> list[Any]:
        x = batch_input(node, ins[0])
        return [cv.call(make(at), node, x, x.onnx_shape)]

    return handle


def passthrough(cv: Converter, node: Any, ins: list[Any], at: dict[str, Any]) -> list[Any]:
    """Identity, and Dropout at inference (its mask output is not computed)."""
    if node.op_type == "Dropout" and len(ins) > 2 and ins[2] is not None and bool(ins[2]):
        raise fail(node, "training-mode dropout is not supported")
    return [ins[0]]


def pool(kind: type) -> Handler:
    def handle(cv: Converter, node: Any, ins: list[Any], at: dict[str, Any]) -> list[Any]:
        # A Pad's zeros join an average pool's padding (both count); a max pool's
        # padding is never picked, so zeros before it are refused.
        x, extra = unpadded(batch_input(node, ins[0], 4, padded=kind is nn.AvgPool2D))
        if any(node.output[1:]):
            raise fail(node, "pooling indices are not supported")
        kernel = tuple(at["kernel_shape"])
        stride = tuple(at.get("strides", (1, 1)))
        pads = symmetric_pads(node, at)
        if any(extra):
            if any(pads) and not at.get("count_include_pad", 0):
                raise fail(node, "a Pad before a pool that does not count its own padding")
            at = {**at, "count_include_pad": 1}
            pads = with_pad(pads, extra)
        if kind is nn.AvgPool2D and any(pads) and not at.get("count_include_pad", 0):
            raise fail(node, "count_include_pad=0 with padding (npcnn counts the zeros)")
        ceil = bool(at.get("ceil_mode", 0))
        if kind is nn.MaxPool2D:
            return [cv.call(kind(kernel, stride, pads, ceil_mode=ceil), node, x)]
        if ceil:
            for size, k, s, p in zip(x.onnx_shape[2:], kernel, stride, pads, strict=True):
                if (size + 2 * p - k) % s:
                    raise fail(node, "ceil_mode=1 here adds a partial average window")
        return [cv.call(kind(kernel, stride, pads), node, x)]

    return handle


def pad(cv: Converter, node: Any, ins: list[Any], at: dict[str, Any]) -> list[Any]:
    """Zero padding of H and W. The same on both sides and read only by convs or average
    pools: kept on the value for them to take into their own padding
    (`values.Batch.pad`); otherwise a ZeroPad2D layer. Pads, the constant and (opset
    18) the axes are inputs from opset 11, attributes before."""
    if cv.opset >= 11:
        pads = np.ravel(constant_input(node, ins[1], "pads")).tolist()
        value = ins[2] if len(ins) > 2 and ins[2] is not None else np.zeros(())
        if len(ins) > 3 and ins[3] is not None:
            raise fail(node, "pads over chosen axes are not supported")
    else:
        pads, value = list(at.get("pads", [])), np.array(at.get("value", 0.0))
    if at.get("mode", "constant") != "constant" or np.any(constant_input(node, value, "value")):
        raise fail(node, "only zero padding is supported")
    if isinstance(ins[0], np.ndarray):
        if len(pads) != 2 * ins[0].ndim:
            raise fail(node, f"pads {pads} do not fit a {ins[0].ndim}-D constant")
        half = len(pads) // 2
        return [np.pad(ins[0], list(zip(pads[:half], pads[half:], strict=True)))]
    x = batch_input(node, ins[0], 4, padded=True)  # (Pads in a row add up)
    if len(pads) != 8:
        raise fail(node, f"pads {pads} do not fit 4-D data")
    (n0, c0, h0, w0), (n1, c1, h1, w1) = pads[:4], pads[4:]
    if n0 or c0 or n1 or c1 or min(h0, w0, h1, w1) < 0:
        raise fail(node, f"pads {pads}: npcnn pads H and W only, by amounts >= 0")
    readers = cv.consumer_ops.get(node.output[0], [])
    if (h0, w0) == (h1, w1) and readers and set(readers) <= {"Conv", "AveragePool"}:
        n, c, h, w = x.onnx_shape
        return [Batch(x.tensor, (n, c, h + 2 * h0, w + 2 * w0), (x.pad[0] + h0, x.pad[1] + w0))]
    return [zero_pad(cv, node, x, (w0, w1, h0, h1))]


def zero_pad(
    cv: Converter, node: Any, x: Batch, padding: tuple[int, int, int, int], suffix: str = ""
) -> Batch:
    """A ZeroPad2D layer (left, right, top, bottom) on `x` and any Pad zeros it carries."""
    x, (ph, pw) = unpadded(x)
    left, right, top, bottom = padding
    layer = nn.ZeroPad2D((left + pw, right + pw, top + ph, bottom + ph))
    return cv.call(layer, node, x, suffix=suffix)


def global_average_pool(cv: Converter, node: Any, ins: list[Any], at: dict[str, Any]) -> list[Any]:
    x = batch_input(node, ins[0], 4)
    return [cv.call(nn.GlobalAvgPool2D(), node, x, (None, x.onnx_shape[1], 1, 1))]


def reduce_mean(cv: Converter, node: Any, ins: list[Any], at: dict[str, Any]) -> list[Any]:
    """ReduceMean over the two spatial axes (PyTorch's adaptive_avg_pool2d(x, 1) or
    x.mean((2, 3)) by the new exporter): a global average pool."""
    x = batch_input(node, ins[0], 4)
    if cv.opset >= 18:  # the axes became an input
        axes = np.ravel(ins[1]).tolist() if len(ins) > 1 and ins[1] is not None else None
    else:
        axes = at.get("axes")
    if axes is None or sorted(int(a) % 4 for a in axes) != [2, 3]:
        raise fail(node, f"a mean over axes {axes} (npcnn averages over H and W only)")
    keep = at.get("keepdims", 1)
    shape = (None, x.onnx_shape[1], 1, 1) if keep else (None, x.onnx_shape[1])
    return [cv.call(nn.GlobalAvgPool2D(), node, x, shape)]


def flatten_batch(cv: Converter, node: Any, x: Batch) -> Batch:
    """(N, d1, d2, ...) -> (N, d1*d2*...): a Flatten layer, or nothing when npcnn's
    tensor is already flat (after GlobalAvgPool2D). Transposed data flattens in
    npcnn's order, its ONNX column order kept in `columns` for the Dense after it."""
    if x.columns is not None:
        raise fail(node, "a flatten of data already flattened in another order")
    features = int(np.prod(x.onnx_shape[1:]))
    columns = flatten_columns(x)
    if len(x.tensor.shape) == 2:
        return Batch(x.tensor, (None, features))
    y = cv.call(nn.Flatten(), node, Batch(x.tensor, tuple(x.tensor.shape)), (None, features))
    return Batch(y.tensor, y.onnx_shape, columns=columns)


def flatten(cv: Converter, node: Any, ins: list[Any], at: dict[str, Any]) -> list[Any]:
    if isinstance(ins[0], np.ndarray):
        axis = at.get("axis", 1) % max(ins[0].ndim, 1)
        return [ins[0].reshape(int(np.prod(ins[0].shape[:axis])), -1)]
    x = batch_input(node, ins[0], laid_out=True)
    if at.get("axis", 1) % x.rank != 1:
        raise fail(node, f"axis {at['axis']}: npcnn flattens all but the batch axis")
    return [flatten_batch(cv, node, x)]


def squeeze(cv: Converter, node: Any, ins: list[Any], at: dict[str, Any]) -> list[Any]:
    """Squeeze of axes of size 1 of the batch's data (the (N, C, 1, 1) of a global
    pool): a new ONNX shape over the same npcnn tensor, or a Flatten."""
    x = ins[0]
    if not isinstance(x, Batch):
        return HANDLERS_CONSTANTS["Squeeze"](cv, node, ins, at)
    if cv.opset >= 13:
        axes = np.ravel(ins[1]).tolist() if len(ins) > 1 and ins[1] is not None else None
    else:
        axes = at.get("axes")
    if axes is None:
        axes = [i for i, d in enumerate(x.onnx_shape) if d == 1]
    axes = sorted(int(a) % x.rank for a in axes)
    if 0 in axes or any(x.onnx_shape[a] != 1 for a in axes) or not x.laid_out_as_npcnn:
        raise fail(node, f"squeeze of axes {axes} of data of shape {x.onnx_shape}")
    shape = tuple(d for i, d in enumerate(x.onnx_shape) if i not in axes)
    if shape == tuple(x.tensor.shape) or (len(shape) == 2 and len(x.tensor.shape) == 2):
        return [Batch(x.tensor, shape)]
    if len(shape) == 2:
        return [flatten_batch(cv, node, x)]
    raise fail(node, f"squeeze of {x.onnx_shape} to {shape} changes npcnn's layout")


def reshape(cv: Converter, node: Any, ins: list[Any], at: dict[str, Any]) -> list[Any]:
    target = as_shape_vector(ins[1])
    if target is None:
        raise fail(node, "the target shape must be a constant or computed from shapes")
    allow_zero = bool(at.get("allowzero", 0))
    if isinstance(ins[0], np.ndarray):
        if None in target.values:
            raise fail(node, "a constant reshaped by the batch size")
        return [ins[0].reshape(target.values)]
    x = batch_input(node, ins[0], laid_out=True)
    dims = list(target.values)
    if not allow_zero:
        dims = [x.onnx_shape[i] if d == 0 and i < x.rank else d for i, d in enumerate(dims)]
    features = int(np.prod(x.onnx_shape[1:]))
    first_is_batch = dims[0] in (None, -1) or dims[0] == cv.export_batch
    if len(dims) == 2 and first_is_batch and dims[1] in (features, -1):
        return [flatten_batch(cv, node, x)]
    if len(dims) == x.rank and first_is_batch and tuple(dims[1:]) == x.onnx_shape[1:]:
        return [x]
    npcnn_shape = tuple(x.tensor.shape[1:])
    if first_is_batch and tuple(dims[1:]) == npcnn_shape and x.columns is None:
        if same_memory_order(x):  # (the channels-last input as tf2onnx reshapes it)
            return [Batch(x.tensor, (None, *npcnn_shape))]
    raise fail(node, f"reshape of {x.onnx_shape} to {target.values} changes a sample's layout")


def gemm(cv: Converter, node: Any, ins: list[Any], at: dict[str, Any]) -> list[Any]:
    x = batch_input(node, ins[0], 2, laid_out=True)
    if at.get("transA", 0):
        raise fail(node, "transA=1 (the data transposed) is not supported")
    b = constant_input(node, ins[1], "B")
    weight = (b if at.get("transB", 0) else b.T) * at.get("alpha", 1.0)
    bias = ins[2] if len(ins) > 2 else None
    if bias is not None:
        bias = constant_input(node, bias, "C") * at.get("beta", 1.0)
        if bias.size not in (1, weight.shape[0]) or bias.ndim > 2:
            raise fail(node, f"C of shape {bias.shape} is not a bias of {weight.shape[0]}")
    return [dense(cv, node, x, weight, bias)]


def dense(cv: Converter, node: Any, x: Batch, weight: np.ndarray, bias: Any) -> Batch:
    """A Dense layer with `weight` (out, in) over ONNX's columns of `x`: reordered to
    npcnn's columns when `x` was flattened from transposed data."""
    if weight.ndim != 2 or weight.shape[1] != x.onnx_shape[1]:
        raise fail(node, f"weight {weight.shape} does not fit input {x.onnx_shape}")
    if x.columns is not None:
        reordered = np.empty_like(weight)
        reordered[:, x.columns] = weight
        weight, x = reordered, Batch(x.tensor, x.onnx_shape)
    layer = nn.Dense(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight.data[...] = weight
    if bias is not None:
        layer.bias.data[...] = np.broadcast_to(np.reshape(bias, -1), layer.bias.shape)
    return cv.call(layer, node, x)


def matmul(cv: Converter, node: Any, ins: list[Any], at: dict[str, Any]) -> list[Any]:
    if isinstance(ins[0], np.ndarray) and isinstance(ins[1], np.ndarray):
        return [ins[0] @ ins[1]]
    x = batch_input(node, ins[0], 2, laid_out=True)
    weight = constant_input(node, ins[1], "the second operand").T
    y = dense(cv, node, x, weight, np.zeros(weight.shape[0], weight.dtype))
    if len(cv.consumer_ops.get(node.output[0], ())) == 1:  # an Add after it: its bias?
        cv.bias_of_matmul[id(y.tensor)] = y.tensor.node.layer
    return [y]


def add(cv: Converter, node: Any, ins: list[Any], at: dict[str, Any]) -> list[Any]:
    if all(isinstance(v, np.ndarray) for v in ins):
        return [ins[0] + ins[1]]
    batches = [batch_input(node, v) for v in ins if isinstance(v, Batch)]
    constants = [v for v in ins if isinstance(v, np.ndarray)]
    if constants:
        return [add_constant(cv, node, batches[0], constants[0])]
    if len({b.onnx_shape for b in batches}) > 1:
        raise fail(node, f"broadcasting {[b.onnx_shape for b in batches]} is not supported")
    return [cv.call(nn.Add(), node, batches, batches[0].onnx_shape)]


def add_constant(cv: Converter, node: Any, x: Batch, constant: np.ndarray) -> Batch:
    """x + constant: the bias of the MatMul before it, or nothing when it is all zeros."""
    if not constant.any():
        return x
    layer = cv.bias_of_matmul.pop(id(x.tensor), None)
    if layer is None or constant.size != layer.out_features:
        raise fail(node, "adding a constant to the data is supported only as a MatMul's bias")
    layer.bias.data[...] += constant.reshape(-1)
    return x


def concat(cv: Converter, node: Any, ins: list[Any], at: dict[str, Any]) -> list[Any]:
    if not any(isinstance(v, Batch) for v in ins):
        vectors = [as_shape_vector(v) for v in ins]
        if all(isinstance(v, np.ndarray) for v in ins):
            return [np.concatenate(ins, axis=at.get("axis", 0))]
        if None in vectors:
            raise fail(node, "concatenation of shapes with non-integer constants")
        return [ShapeVector(tuple(d for v in vectors for d in v.values))]
    batches = [batch_input(node, v) for v in ins]
    if at.get("axis", 1) % batches[0].rank != 1:
        raise fail(node, f"axis {at.get('axis')}: npcnn concatenates channels (axis 1)")
    shape = list(batches[0].onnx_shape)
    shape[1] = sum(b.onnx_shape[1] for b in batches)
    return [cv.call(nn.Concatenate(), node, batches, tuple(shape))]


def softmax(cv: Converter, node: Any, ins: list[Any], at: dict[str, Any]) -> list[Any]:
    """A Softmax over the classes that gives the graph's output is dropped: npcnn models
    output logits, and evaluate/predict (and the loss) apply the softmax themselves."""
    x = batch_input(node, ins[0], 2)
    outputs = {o.name for o in cv.graph.output}
    if node.output[0] not in outputs or at.get("axis", -1) % 2 != 1:
        raise fail(node, "a Softmax inside the network (npcnn models output logits)")
    return [x]


HANDLERS_LAYERS: dict[str, Handler] = {
    "Conv": conv,
    "BatchNormalization": batch_norm,
    "Relu": activation(lambda at: nn.ReLU()),
    "LeakyRelu": activation(lambda at: nn.LeakyReLU(at.get("alpha", 0.01))),
    "Sigmoid": activation(lambda at: nn.Sigmoid()),
    "Tanh": activation(lambda at: nn.Tanh()),
    "Identity": passthrough,
    "Dropout": passthrough,
    "MaxPool": pool(nn.MaxPool2D),
    "AveragePool": pool(nn.AvgPool2D),
    "Pad": pad,
    "GlobalAveragePool": global_average_pool,
    "ReduceMean": reduce_mean,
    "Flatten": flatten,
    "Reshape": reshape,
    "Squeeze": squeeze,
    "Gemm": gemm,
    "MatMul": matmul,
    "Add": add,
    "Sum": add,
    "Concat": concat,
    "Softmax": softmax,
}
