"""Elementwise activations: y = f(x) and dx = dy * f'(x), each a forward/backward pair.

    relu:        y = max(x, 0)                     dx = dy * [x > 0]
    leaky_relu:  y = x if x > 0 else slope * x     dx = dy * (1 if x > 0 else slope)
    sigmoid:     y = 1 / (1 + exp(-x))             dx = dy * y * (1 - y)
    tanh:        y = tanh(x)                       dx = dy * (1 - y^2)

The derivative at the kink x = 0 of relu and leaky_relu is taken as the
left one (0 and slope), as PyTorch does. Shapes: any; dx has dy's shape.
"""

from __future__ import annotations

import numpy as np


def relu_forward(x: np.ndarray, *, need_cache: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """y = max(x, 0). Returns (y, cache: the mask x > 0; None with need_cache=False)."""
    return np.maximum(x, 0), (x > 0 if need_cache else None)


def relu_backward(dy: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """dx = dy where x > 0, else 0."""
    return dy * cache


def leaky_relu_forward(
    x: np.ndarray, negative_slope: float = 0.01
) -> tuple[np.ndarray, tuple[np.ndarray, float]]:
    """y = x where x > 0, else negative_slope * x. Returns (y, cache: (x > 0, slope))."""
    positive = x > 0
    return np.where(positive, x, negative_slope * x), (positive, negative_slope)


def leaky_relu_backward(dy: np.ndarray, cache: tuple[np.ndarray, float]) -> np.ndarray:
    """dx = dy where x > 0, else negative_slope * dy."""
    positive, negative_slope = cache
    return np.where(positive, dy, negative_slope * dy)


def sigmoid_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y = 1 / (1 + exp(-x)). Returns (y, cache: y).

    Computed as 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0, with
    e = exp(-|x|) <= 1: the same function, and exp never overflows.
    """
    e = np.exp(-np.abs(x))
    y = np.where(x >= 0, 1, e) / (1 + e)
    return y, y


def sigmoid_backward(dy: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """dx = dy * y * (1 - y)."""
    y = cache
    return dy * y * (1 - y)


def tanh_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y = tanh(x). Returns (y, cache: y)."""
    y = np.tanh(x)
    return y, y


def tanh_backward(dy: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """dx = dy * (1 - y^2)."""
    y = cache
    return dy * (1 - y * y)
