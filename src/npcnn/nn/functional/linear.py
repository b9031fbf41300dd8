"""The fully connected layer, and the flattening that usually precedes it.

Dense, with weight (out, in) as PyTorch's Linear:
    y = x @ weight.T + bias                  x (N, in) -> y (N, out)
    dx = dy @ weight     dweight = dy.T @ x     dbias = sum over N of dy

Flatten: (N, d1, d2, ...) -> (N, d1*d2*...) in C order, so (N, C, H, W)
flattens as C, H, W; backward reshapes dy back.
"""

from __future__ import annotations

import math

import numpy as np


def dense_forward(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None
) -> tuple[np.ndarray, tuple]:
    """y = x @ weight.T + bias: x (N, in), weight (out, in), bias (out,) or None -> y (N, out).

    Returns (y, cache). Raises ValueError when x's features do not match the weight.
    """
    if x.ndim != 2 or weight.ndim != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"dense expects x (N, in) and weight (out, in), got shapes {x.shape} and {weight.shape}"
        )
    y = x @ weight.T
    if bias is not None:
        y = y + bias
    return y, (x, weight, bias is not None)


def dense_backward(
    dy: np.ndarray, cache: tuple, need_input_grad: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """dy (N, out) -> (dx (N, in), dweight (out, in), dbias (out,) or None without a bias);
    dx is None with need_input_grad=False."""
    x, weight, has_bias = cache
    dx = dy @ weight if need_input_grad else None
    dweight = dy.T @ x
    dbias = dy.sum(axis=0) if has_bias else None
    return dx, dweight, dbias


def flatten_forward(x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """(N, d1, d2, ...) -> (N, d1*d2*...), C order. Returns (y, cache: x's shape)."""
    if x.ndim < 2:
        raise ValueError(f"flatten expects x of shape (N, ...), got shape {x.shape}")
    # The feature count is spelled out: reshape cannot infer a -1 from a batch of 0.
    return x.reshape(x.shape[0], math.prod(x.shape[1:])), x.shape


def flatten_backward(dy: np.ndarray, cache: tuple[int, ...]) -> np.ndarray:
    """dy (N, d1*d2*...) -> dx (N, d1, d2, ...), the forward's input shape."""
    return dy.reshape(cache)
