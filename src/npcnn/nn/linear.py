"""Fully connected layer and the flattening that usually precedes it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from npcnn.nn import init
from npcnn.nn.layout import from_channels_last, is_channels_last, to_channels_last
from npcnn.nn.module import (
    DEFAULT_DTYPE,
    Layer,
    NoForwardError,
    Parameter,
    check_input,
    keeps_cache,
    parameter_dtype,
)
from npcnn.runtime import memory
from npcnn.runtime.threads import chunk_ranges, elementwise, parallel_map


class Dense(Layer):
    """y = x @ weight.T + bias: x (N, in), weight (out, in) as PyTorch's Linear, y (N, out).

    Backward: dx = dy @ weight,  dweight = dy.T @ x,  dbias = sum over N of dy.
    Both passes split the batch into chunks of rows spread over the cores; the
    chunks' shares of dweight are added up.

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
        self._x: np.ndarray | None = None
        self._w: np.ndarray | None = None  # the weight as forward used it
        self._dw: np.ndarray | None = None  # backward's buffer for dweight
        self._chw: tuple[int, int, int] | None = None  # set when fed channels-last images
        self.reset_parameters(rng)

    def reset_parameters(self, rng: np.random.Generator | int | None = None) -> None:
        rng = np.random.default_rng(rng)
        init.kaiming_normal_(self.weight, rng)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return self._forward(x, training, None)

    def forward_channels_last(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """forward(x.reshape(N, -1)) for an (N, C, H, W) x with channels-last memory
        (see `layout.py`): what `Sequential` runs for a Flatten followed by this layer.

        x's values lie in (H, W, C) order in memory; rather than copying them into
        (C, H, W) order, as Flatten would, the weight's columns are put in
        (H, W, C) order (a copy of the small weight, which backward uses too).
        backward then hands back dL/dx with channels-last memory, as
        Flatten.backward would.
        """
        n, c, h, w = x.shape
        return self._forward(to_channels_last(x).reshape(n, h * w * c), training, (c, h, w))

    @property
    def fed_channels_last(self) -> bool:
        """Whether the last forward was `forward_channels_last`."""
        return self._chw is not None

    def _weight(self) -> np.ndarray:
        """The (out, in) weight, its columns in (H, W, C) order if the input came channels-last."""
        if self._chw is None:
            return self.weight.data
        return (
            self.weight.data.reshape(-1, *self._chw)
            .transpose(0, 2, 3, 1)
            .reshape(self.out_features, -1)
        )

    def _forward(
        self, x: np.ndarray, training: bool, chw: tuple[int, int, int] | None
    ) -> np.ndarray:
        check_input(x, 2, self, self.in_features)
        x = x.astype(self.weight.data.dtype, copy=False)
        self._chw = chw
        w = self._weight()
        y = memory.empty((x.shape[0], self.out_features), dtype=x.dtype)

        def run(rows: range) -> None:
            sl = slice(rows.start, rows.stop)
            np.dot(x[sl], w.T, out=y[sl])  # np.dot: see Conv2D.backward

        parallel_map(run, chunk_ranges(len(x), x[:1].nbytes))
        if self.bias is not None:
            y += self.bias.data
        self._x, self._w = (x, w) if keeps_cache(training) else (None, None)
        return y

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """dy (N, out) -> dx (N, in), or None with `need_input_grad=False`; after
        `forward_channels_last`, dx is (N, C, H, W) with channels-last memory."""
        if self._x is None or self._w is None:
            raise NoForwardError(self)
        x, w = self._x, self._w
        dy = dy.astype(w.dtype, copy=False)
        if dy.shape != (len(x), self.out_features):
            raise ValueError(
                f"Dense.backward expects dy of shape {(len(x), self.out_features)}, got {dy.shape}"
            )
        dx = memory.empty(x.shape, dtype=x.dtype) if need_input_grad else None

        if self._dw is None or self._dw.shape != w.shape or self._dw.dtype != w.dtype:
            self._dw = np.empty_like(w)  # reused: a fresh one would cost page faults each step
        dw = self._dw

        # The cores share the input features (columns of x, w, dx and dweight): each
        # writes its own columns of dx and dweight, with no partial sums to add up.
        def run(cols: range) -> None:
            sl = slice(cols.start, cols.stop)
            if dx is not None:
                np.matmul(dy, w[:, sl], out=dx[:, sl])
            np.matmul(dy.T, x[:, sl], out=dw[:, sl])

        parallel_map(run, chunk_ranges(x.shape[1], 2 * len(x) * x.itemsize))
        if self._chw is None:
            self.weight.grad += dw
        else:  # columns back from (H, W, C) to the weight's (C, H, W) order
            c, h, w_ = self._chw
            grad = self.weight.grad.reshape(-1, c, h, w_)  # a view: the gradient is contiguous
            grad += dw.reshape(-1, h, w_, c).transpose(0, 3, 1, 2)
            if dx is not None:
                dx = from_channels_last(dx.reshape(len(x), h, w_, c))
        if self.bias is not None:
            self.bias.grad += dy.sum(axis=0)
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


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...) in C order: (N, C, H, W) flattens as C, H, W (PyTorch).

    Backward reshapes dy back, keeping the channels-last memory that the
    layers before it work in (see `layout.py`).
    """

    def __init__(self) -> None:
        super().__init__()
        self._shape: tuple[int, ...] | None = None
        self._channels_last = False

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if x.ndim < 2:
            raise ValueError(f"Flatten expects input of shape (N, ...), got shape {x.shape}")
        if keeps_cache(training):
            self._shape = x.shape
            self._channels_last = is_channels_last(x)
        features = math.prod(x.shape[1:])  # (not -1 in reshape: that fails for a batch of 0)
        if x.flags.c_contiguous:
            return x.reshape(x.shape[0], features)
        # Channels-last memory must be reordered into C, H, W order: a copy, on all cores.
        return elementwise(_copy_into, memory.empty((x.shape[0], features), dtype=x.dtype), x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._shape is None:
            raise NoForwardError(self)
        check_input(dy, 2, self)
        dx = dy.reshape(self._shape)
        if self._channels_last:
            dx_cl = dx.transpose(0, 2, 3, 1)
            dx = from_channels_last(
                elementwise(_copy_into, memory.empty(dx_cl.shape, dy.dtype), dx_cl)
            )
        return dx


def _copy_into(source: np.ndarray, out: np.ndarray) -> None:
    """Copy `source` into `out`, a buffer of the same size and possibly another shape."""
    np.copyto(out.reshape(source.shape), source)
