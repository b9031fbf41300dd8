"""2-D convolution (cross-correlation, as in every deep-learning library).

Shapes: input x (N, C, H, W), weight (O, C, kh, kw), bias (O,), output
y (N, O, Ho, Wo) with Ho = (H + 2*ph - kh) // sh + 1 (likewise Wo).

Forward:  y[n, o, a, b] = bias[o] + sum_{c,i,j} w[o, c, i, j] * xp[n, c, a*sh + i, b*sw + j]
where xp is x zero-padded by (ph, pw).

Backward, given dy = dL/dy:
- dL/dbias[o] = sum over n, a, b of dy[n, o, a, b]
- dL/dW = cols^T @ dy, with cols the receptive fields as rows (im2col)
- dL/dx = col2im(dy @ W^T): each row's values added back to the pixels they came from

The kernels compute it: `npcnn.nn.functional.conv` line by line as written
above, `npcnn.kernels.conv` fast (see `npcnn.nn.backend`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from npcnn.nn import init
from npcnn.nn.backend import active_kernels
from npcnn.nn.module import (
    DEFAULT_DTYPE,
    Layer,
    NoForwardError,
    Parameter,
    check_input,
    keeps_cache,
    parameter_dtype,
)
from npcnn.shapes import as_pair


class Conv2D(Layer):
    """2-D convolution over (N, C, H, W) input; weight (out, in/groups, kh, kw) as in PyTorch.

    Args:
        in_channels, out_channels: C and O.
        kernel_size, stride, padding: an int or an (h, w) pair; zero padding.
        bias: learn an additive bias per output channel.
        groups: G, dividing both C and O: output channels o of group
            g = o // (O/G) see only input channels g*C/G ... (g+1)*C/G - 1
            (PyTorch's semantics). G = C is a depthwise convolution.
        rng: seed or Generator for the He-normal initial weights
            (fan_in = C/G * kh * kw, as PyTorch).
        dtype: float32 (default) or float64.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
        groups: int = 1,
        *,
        rng: np.random.Generator | int | None = None,
        dtype: np.typing.DTypeLike = DEFAULT_DTYPE,
    ) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        if self.in_channels < 1 or self.out_channels < 1:
            raise ValueError(
                f"Conv2D needs in_channels and out_channels >= 1, "
                f"got {in_channels} and {out_channels}"
            )
        self.groups = _checked_groups(groups, self.in_channels, self.out_channels)
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.stride = as_pair(stride, "stride")
        self.padding = as_pair(padding, "padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(
                f"Conv2D needs kernel_size >= 1, stride >= 1, padding >= 0; got "
                f"{self.kernel_size}, {self.stride}, {self.padding}"
            )
        dtype = parameter_dtype(dtype)
        kh, kw = self.kernel_size
        self.weight = Parameter(
            np.zeros((out_channels, in_channels // self.groups, kh, kw), dtype=dtype)
        )
        self.bias = Parameter(np.zeros(out_channels, dtype=dtype)) if bias else None
        self._cache: tuple | None = None  # (kernel set, kernel cache) of a training forward
        self.reset_parameters(rng)

    def reset_parameters(self, rng: np.random.Generator | int | None = None) -> None:
        rng = np.random.default_rng(rng)
        init.kaiming_normal_(self.weight, rng)
        if self.bias is not None:
            init.zeros_(self.bias)

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """(Ho, Wo) for an (H, W) input; ValueError when the kernel does not fit."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ValueError(
                f"Conv2D input of size {h}x{w} (padded to {h + 2 * ph}x{w + 2 * pw}) "
                f"is smaller than the {kh}x{kw} kernel"
            )
        return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """x (N, C, H, W) floats -> y (N, O, Ho, Wo) in the weight's dtype.

        Raises:
            TypeError: x is not a floating-point array.
            ValueError: x is not (N, in_channels, H, W), or smaller than the kernel.
        """
        check_input(x, 4, self, self.in_channels)
        self.output_size(x.shape[2], x.shape[3])
        kernels = active_kernels()
        bias = self.bias.data if self.bias is not None else None
        x = x.astype(self.weight.data.dtype, copy=False)
        y, cache = kernels.conv2d_forward(
            x, self.weight.data, bias, self.stride, self.padding, self.groups
        )
        # An inference forward drops a training forward's cache: it holds big arrays.
        self._cache = (kernels, cache) if keeps_cache(training) else None
        return y

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """dy (N, O, Ho, Wo) -> dx (N, C, H, W); adds into weight.grad and bias.grad.

        With `need_input_grad=False` (the first layer of a network) dx is skipped
        and None is returned.
        """
        if self._cache is None:
            raise NoForwardError(self)
        kernels, cache = self._cache
        dy = dy.astype(self.weight.data.dtype, copy=False)
        dx, dweight, dbias = kernels.conv2d_backward(dy, cache, need_input_grad=need_input_grad)
        self.weight.grad += dweight
        if self.bias is not None:
            self.bias.grad += dbias
        return dx

    def config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "bias": self.bias is not None,
            "groups": self.groups,
        }

    @classmethod
    def state_shapes(cls, config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        out_channels, in_channels = int(config["out_channels"]), int(config["in_channels"])
        kh, kw = as_pair(config["kernel_size"], "kernel_size")
        groups = _checked_groups(config.get("groups", 1), in_channels, out_channels)
        shapes = {"weight": (out_channels, in_channels // groups, kh, kw)}
        if config.get("bias", True):
            shapes["bias"] = (out_channels,)
        return shapes


def _checked_groups(groups: Any, in_channels: int, out_channels: int) -> int:
    """`groups` as an int; ValueError unless it is >= 1 and divides both channel counts."""
    g = int(groups)
    if g < 1 or in_channels % g or out_channels % g:
        raise ValueError(
            f"Conv2D groups={groups} must be >= 1 and divide in_channels={in_channels} "
            f"and out_channels={out_channels}"
        )
    return g
