"""Elementwise activations. Each keeps, from a training forward, the least its backward needs.

The kernels compute them (`npcnn.nn.functional.activations`; ReLU has a fast
one in `npcnn.kernels.activations`, see `npcnn.nn.backend`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from npcnn.nn.backend import active_kernels
from npcnn.nn.kernel_layer import KernelLayer
from npcnn.nn.module import Layer, NoForwardError, keeps_cache


class Identity(Layer):
    """y = x, the same array (no copy), as PyTorch's nn.Identity. Backward: dx = dy.

    A placeholder where a network needs a layer that does nothing: the
    identity shortcut of a residual block, a branch left as it is.
    """

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """x of any shape -> x itself."""
        return x

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """dy -> dy itself (None with need_input_grad=False)."""
        return dy if need_input_grad else None


class ReLU(Layer):
    """y = max(x, 0). Backward: dx = dy where x > 0, else 0."""

    def __init__(self) -> None:
        super().__init__()
        self._cache: tuple | None = None  # (kernel set, mask x > 0) of a training forward

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """x of any shape -> y of x's shape (and memory order)."""
        keep = keeps_cache(training)
        if keep:  # (an inference forward leaves a training forward's cache in place)
            self._cache = None  # let the previous step's memory serve this one
        kernels = active_kernels()
        y, mask = kernels.relu_forward(x, need_cache=keep)
        if keep:
            self._cache = (kernels, mask)
        return y

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """dy of the input's shape -> dx (None with need_input_grad=False)."""
        if self._cache is None:
            raise NoForwardError(self)
        kernels, mask = self._cache
        return kernels.relu_backward(dy, mask) if need_input_grad else None


class LeakyReLU(KernelLayer):
    """y = x if x > 0 else negative_slope * x. Backward: dx = dy * (1 or negative_slope)."""

    op = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """x of any shape -> y of x's shape."""
        return self.kernel_forward(x, training, self.negative_slope)

    def config(self) -> dict[str, Any]:
        return {"negative_slope": self.negative_slope}


class Sigmoid(KernelLayer):
    """y = 1 / (1 + exp(-x)). Backward: dx = dy * y * (1 - y).

    Written as exp(min(x, 0)) / (1 + exp(-|x|)) so that exp never overflows.
    """

    op = "sigmoid"

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """x of any shape -> y of x's shape."""
        return self.kernel_forward(x, training)


class Tanh(KernelLayer):
    """y = tanh(x). Backward: dx = dy * (1 - y^2)."""

    op = "tanh"

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """x of any shape -> y of x's shape."""
        return self.kernel_forward(x, training)
