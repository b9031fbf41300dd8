"""Fast dense layer and flattening: the maths of `npcnn.nn.functional.linear`.

Dense: y = x @ weight.T + bias; dx = dy @ weight, dweight = dy.T @ x,
dbias = sum over N of dy. The forward splits the batch into chunks of rows
spread over the cores; the backward splits the input features (columns of
x, weight, dx and dweight), so that each core writes its own columns of dx
and dweight, with no partial sums to add up.

Flatten: (N, d1, d2, ...) -> (N, d1*d2*...) in C order, so (N, C, H, W)
flattens as C, H, W whatever the memory order. Channels-last images (what
the conv and pooling kernels hand on) are reordered by a copy on all cores,
and the backward hands dx back in channels-last memory, so that the kernel
before gets it for free.
"""

from __future__ import annotations

import math

import numpy as np

from npcnn.kernels.layout import from_channels_last, is_channels_last
from npcnn.runtime import memory
from npcnn.runtime.threads import (
    chunk_ranges,
    elementwise,
    parallel_map,
    with_single_threaded_blas,
)


@with_single_threaded_blas
def dense_forward(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None
) -> tuple[np.ndarray, tuple]:
    """y = x @ weight.T + bias: x (N, in), weight (out, in) of one float dtype, bias (out,)
    or None -> y (N, out). Returns (y, cache)."""
    if x.ndim != 2 or weight.ndim != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"dense expects x (N, in) and weight (out, in), got shapes {x.shape} and {weight.shape}"
        )
    y = memory.empty((x.shape[0], weight.shape[0]), dtype=x.dtype)

    def run(rows: range) -> None:
        sl = slice(rows.start, rows.stop)
        # np.dot, not @: matmul keeps the GIL for results of under 512 values.
        np.dot(x[sl], weight.T, out=y[sl])

    parallel_map(run, chunk_ranges(len(x), x[:1].nbytes))
    if bias is not None:
        y += bias
    return y, (x, weight, bias is not None)


@with_single_threaded_blas
def dense_backward(
    dy: np.ndarray, cache: tuple, need_input_grad: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """dy (N, out) -> (dx (N, in), dweight (out, in), dbias (out,) or None without a bias).

    dy in the weight's dtype. With need_input_grad=False, dx is not computed
    and None stands in its place. Raises ValueError when dy is not (N, out).
    """
    x, w, has_bias = cache
    if dy.shape != (len(x), w.shape[0]):
        raise ValueError(
            f"dense_backward: dy must have shape {(len(x), w.shape[0])}, got {dy.shape}"
        )
    dx = memory.empty(x.shape, dtype=x.dtype) if need_input_grad else None
    dw = memory.empty(w.shape, dtype=w.dtype)

    def run(cols: range) -> None:
        sl = slice(cols.start, cols.stop)
        if dx is not None:
            np.matmul(dy, w[:, sl], out=dx[:, sl])
        np.matmul(dy.T, x[:, sl], out=dw[:, sl])

    parallel_map(run, chunk_ranges(x.shape[1], 2 * len(x) * x.itemsize))
    return dx, dw, dy.sum(axis=0) if has_bias else None


def _copy_into(source: np.ndarray, out: np.ndarray) -> None:
    """Copy `source` into `out`, a buffer of the same size and possibly another shape."""
    np.copyto(out.reshape(source.shape), source)


def flatten_forward(x: np.ndarray) -> tuple[np.ndarray, tuple]:
    """(N, d1, d2, ...) -> (N, d1*d2*...), C order. Returns (y, cache)."""
    if x.ndim < 2:
        raise ValueError(f"flatten expects x of shape (N, ...), got shape {x.shape}")
    features = math.prod(x.shape[1:])  # (not -1 in reshape: that fails for a batch of 0)
    cache = (x.shape, is_channels_last(x))
    if x.flags.c_contiguous:
        return x.reshape(x.shape[0], features), cache
    # Any other memory order must be copied into C order: on all cores.
    return elementwise(_copy_into, memory.empty((x.shape[0], features), dtype=x.dtype), x), cache


def flatten_backward(dy: np.ndarray, cache: tuple) -> np.ndarray:
    """dy (N, d1*d2*...) -> dx (N, d1, d2, ...), in channels-last memory if x was."""
    shape, channels_last = cache
    dx = dy.reshape(shape)
    if channels_last:
        dx_cl = dx.transpose(0, 2, 3, 1)
        dx = from_channels_last(elementwise(_copy_into, memory.empty(dx_cl.shape, dy.dtype), dx_cl))
    return dx
