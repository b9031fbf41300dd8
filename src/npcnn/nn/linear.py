"""Fully connected layer and the flattening that usually precedes it.

The kernels compute them: `npcnn.nn.functional.linear` as each class's
docstring writes it, `npcnn.kernels.linear` fast (see `npcnn.nn.backend`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from npcnn.nn import init
from npcnn.nn.backend import active_kernels
from npcnn.nn.kernel_layer import KernelLayer
from npcnn.nn.module import (
    DEFAULT_DTYPE,
    Layer,
    NoForwardError,
    Parameter,
    check_input,
    keeps_cache,
    parameter_dtype,
)


class Dense(Layer):
    """y = x @ weight.T + bias: x (N, in), weight (out, in) as PyTorch's Linear, y (N, out).

    Backward: dx = dy @ weight,  dweight = dy.T @ x,  dbias = sum over N of dy.

    Args:
        in_features, out_features: sizes of x's and y's second axis.
        bias: learn an additive bias.
        rng: seed or Generator for the He-normal initial weights.
        dtype: float32 (default) or float64.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        rng: np.random.Generator | int | None = None,
        dtype: np.typing.DTypeLike = DEFAULT_DTYPE,
    ) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        if self.in_features < 1 or self.out_features < 1:
            raise ValueError(
                f"Dense needs in_features and out_features >= 1, "
                f"got {in_features} and {out_features}"
            )
        dtype = parameter_dtype(dtype)
        self.weight = Parameter(np.zeros((out_features, in_features), dtype=dtype))
        self.bias = Parameter(np.zeros(out_features, dtype=dtype)) if bias else None
        self._cache: tuple | None = None  # (kernel set, kernel cache) of a training forward
        self.reset_parameters(rng)

    def reset_parameters(self, rng: np.random.Generator | int | None = None) -> None:
        rng = np.random.default_rng(rng)
        init.kaiming_normal_(self.weight, rng)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """x (N, in_features) floats -> y (N, out_features) in the weight's dtype."""
        check_input(x, 2, self, self.in_features)
        kernels = active_kernels()
        bias = self.bias.data if self.bias is not None else None
        x = x.astype(self.weight.data.dtype, copy=False)
        y, cache = kernels.dense_forward(x, self.weight.data, bias)
        # An inference forward drops a training forward's cache: it holds big arrays.
        self._cache = (kernels, cache) if keeps_cache(training) else None
        return y

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """dy (N, out) -> dx (N, in), or None with `need_input_grad=False`; adds into
        weight.grad and bias.grad."""
        if self._cache is None:
            raise NoForwardError(self)
        kernels, cache = self._cache
        dy = dy.astype(self.weight.data.dtype, copy=False)
        dx, dweight, dbias = kernels.dense_backward(dy, cache, need_input_grad=need_input_grad)
        self.weight.grad += dweight
        if self.bias is not None:
            self.bias.grad += dbias
        return dx

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias is not None,
        }

    @classmethod
    def state_shapes(cls, config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        out_features, in_features = int(config["out_features"]), int(config["in_features"])
        shapes = {"weight": (out_features, in_features)}
        if config.get("bias", True):
            shapes["bias"] = (out_features,)
        return shapes


class Flatten(KernelLayer):
    """(N, d1, d2, ...) -> (N, d1*d2*...) in C order: (N, C, H, W) flattens as C, H, W (PyTorch).

    Backward reshapes dy back to the input's shape.
    """

    op = "flatten"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, int]:
        """(N, d1*d2*...) for an input of shape (N, d1, d2, ...); ValueError for fewer axes."""
        if len(input_shape) < 2:
            raise ValueError(f"Flatten expects input of shape (N, ...), got shape {input_shape}")
        return input_shape[0], math.prod(input_shape[1:])

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """x (N, d1, d2, ...) -> (N, d1*d2*...)."""
        self.output_shape(x.shape)
        return self.kernel_forward(x, training)

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """dy (N, d1*d2*...) -> dx (N, d1, d2, ...)."""
        if self._cache is None:
            raise NoForwardError(self)
        check_input(dy, 2, self)
        return super().backward(dy, need_input_grad)
