"""Elementwise activations. Each keeps, from a training forward, the least its backward needs."""

from __future__ import annotations

from typing import Any

import numpy as np

from npcnn.nn.module import Layer, NoForwardError, keeps_cache
from npcnn.runtime import memory
from npcnn.runtime.threads import elementwise


def _relu_and_mask(x: np.ndarray, zeros: np.ndarray, mask: np.ndarray, out: np.ndarray) -> None:
    """out = max(x, 0) and mask = x > 0, in one pass over a chunk."""
    np.greater(x, 0, out=mask)
    np.maximum(x, zeros, out=out)


_zero_arrays: dict[tuple, np.ndarray] = {}


def _zeros_like(x: np.ndarray) -> np.ndarray:
    """A read-only array of zeros with x's shape and memory order, reused across calls.

    np.maximum(x, 0) runs about twice as slow as np.maximum(x, zeros): NumPy's
    vectorised loops want two arrays. The zeros are never written, so the
    operating system backs them with its shared zero page: they take no memory.
    """
    key = (x.shape, x.strides, x.dtype.str)
    zeros = _zero_arrays.get(key)
    if zeros is None:
        if len(_zero_arrays) >= 16:
            _zero_arrays.clear()
        zeros = _zero_arrays[key] = np.zeros_like(x)
        zeros.flags.writeable = False
    return zeros


class ReLU(Layer):
    """y = max(x, 0). Backward: dx = dy where x > 0, else 0."""

    def __init__(self) -> None:
        super().__init__()
        self._mask: np.ndarray | None = None

    # max(x, 0), x > 0 and dy * mask, computed on all cores (`elementwise`);
    # empty_like keeps the channels-last memory of the layers around (layout.py).
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        zeros = _zeros_like(x)
        if not keeps_cache(training):
            return elementwise(np.maximum, memory.empty_like(x), x, zeros)
        self._mask = None  # let the previous step's memory serve this one (memory.py)
        self._mask = memory.empty_like(x, dtype=bool)
        return elementwise(_relu_and_mask, memory.empty_like(x), x, zeros, self._mask)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._mask is None:
            raise NoForwardError(self)
        return elementwise(np.multiply, memory.empty_like(dy), dy, self._mask)


class LeakyReLU(Layer):
    """y = x if x > 0 else negative_slope * x. Backward: dx = dy * (1 or negative_slope)."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        positive = x > 0
        if keeps_cache(training):
            self._mask = positive
        return np.where(positive, x, x * x.dtype.type(self.negative_slope))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._mask is None:
            raise NoForwardError(self)
        return np.where(self._mask, dy, dy * dy.dtype.type(self.negative_slope))

    def config(self) -> dict[str, Any]:
        return {"negative_slope": self.negative_slope}


class Sigmoid(Layer):
    """y = 1 / (1 + exp(-x)). Backward: dx = dy * y * (1 - y).

    Written as exp(min(x, 0)) / (1 + exp(-|x|)) so that exp never overflows.
    """

    def __init__(self) -> None:
        super().__init__()
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        e = np.exp(-np.abs(x))
        y = np.where(x >= 0, 1.0, e) / (1.0 + e)
        y = y.astype(x.dtype, copy=False)
        if keeps_cache(training):
            self._y = y
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._y is None:
            raise NoForwardError(self)
        return dy * self._y * (1 - self._y)


class Tanh(Layer):
    """y = tanh(x). Backward: dx = dy * (1 - y^2)."""

    def __init__(self) -> None:
        super().__init__()
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        y = np.tanh(x)
        if keeps_cache(training):
            self._y = y
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._y is None:
            raise NoForwardError(self)
        return dy * (1 - self._y * self._y)
