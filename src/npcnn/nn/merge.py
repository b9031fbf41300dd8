"""Layers with several inputs: `MergeLayer`, `Add`, `Concatenate`.

The contract of a merge layer, beside `Layer`'s: `forward(xs, training)` takes
a list of at least two arrays (batch axis first, the same batch size) and
returns one array; `backward(dy, need_input_grad=True)` returns the list of
the inputs' gradients, in the order of `xs` (None with need_input_grad=False).
In a graph (`nn.Model`) a merge layer is called on a list of symbolic
tensors: `nn.Add()([y, shortcut])`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from npcnn.nn.module import Layer, NoForwardError, check_float, keeps_cache


class MergeLayer(Layer):
    """Base class of the layers that take a list of inputs and return one output."""

    takes_several_inputs = True

    def check_inputs(self, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """`xs` as a list of at least two floating-point arrays of one rank and batch size.

        Raises:
            TypeError: not a list of arrays, or integer arrays.
            ValueError: fewer than two inputs, or ranks or batch sizes that differ.
        """
        kind = type(self).__name__
        if not isinstance(xs, (list, tuple)):
            raise TypeError(f"{kind} takes a list of numpy arrays, got {type(xs).__name__}")
        others = sorted({type(x).__name__ for x in xs if not isinstance(x, np.ndarray)})
        if others:
            raise TypeError(
                f"{kind} takes a list of numpy arrays (or of symbolic tensors), got a "
                f"{type(xs).__name__} holding {' and '.join(others)}"
            )
        if len(xs) < 2:
            raise ValueError(f"{kind} takes at least 2 inputs, got {len(xs)}")
        for x in xs:
            check_float(x, kind)
        if len({(x.ndim, x.shape[0]) for x in xs}) > 1:
            raise ValueError(f"{kind} inputs differ in rank or batch size: {_shapes(xs)}")
        return list(xs)

    def forward(self, xs: Sequence[np.ndarray], training: bool = False) -> np.ndarray:  # type: ignore[override]
        raise NotImplementedError

    def backward(  # type: ignore[override]
        self, dy: np.ndarray, need_input_grad: bool = True
    ) -> list[np.ndarray] | None:
        raise NotImplementedError


def _shapes(xs: Sequence[np.ndarray]) -> str:
    """The inputs' shapes per sample (batch axis as N): "(N, 16, 8, 8) and (N, 8, 8, 8)"."""
    shapes = [str(("N", *x.shape[1:])).replace("'N'", "N") for x in xs]
    return ", ".join(shapes[:-1]) + " and " + shapes[-1]


class Add(MergeLayer):
    """y = x_1 + x_2 + ... + x_k, inputs of one shape (a residual connection).

    Backward: dx_i = dy for every input. Inputs of float32 and float64 give float64.
    """

    def __init__(self) -> None:
        super().__init__()
        self._count: int | None = None  # inputs of the kept forward

    def forward(self, xs: Sequence[np.ndarray], training: bool = False) -> np.ndarray:  # type: ignore[override]
        """k arrays of one shape (N, ...) -> their sum (N, ...).

        Raises:
            ValueError: shapes that differ (named), fewer than two inputs.
        """
        xs = self.check_inputs(xs)
        if len({x.shape for x in xs}) > 1:
            raise ValueError(f"Add needs inputs of one shape, got {_shapes(xs)}")
        # In the widest dtype of all the inputs (float64 if any is), whatever their order.
        y = np.add(xs[0], xs[1], dtype=np.result_type(*xs))
        for x in xs[2:]:
            y += x  # (y is a new array)
        self._count = len(xs) if keeps_cache(training) else None
        return y

    def backward(  # type: ignore[override]
        self, dy: np.ndarray, need_input_grad: bool = True
    ) -> list[np.ndarray] | None:
        if self._count is None:
            raise NoForwardError(self)
        return [dy] * self._count if need_input_grad else None


class Concatenate(MergeLayer):
    """y = the inputs joined along axis 1 (channels, or features), as torch.cat(xs, dim=1).

    Inputs (N, C_i, ...) agreeing on every axis but 1 -> (N, sum C_i, ...).
    Backward: dx_i = the slice of dy along axis 1 that x_i filled.
    """

    def __init__(self) -> None:
        super().__init__()
        self._sizes: list[int] | None = None  # the inputs' sizes along axis 1, kept forward

    def forward(self, xs: Sequence[np.ndarray], training: bool = False) -> np.ndarray:  # type: ignore[override]
        """Raises ValueError when the inputs differ on an axis other than 1 (named), or
        are of rank 1."""
        xs = self.check_inputs(xs)
        if xs[0].ndim < 2 or len({x.shape[:1] + x.shape[2:] for x in xs}) > 1:
            raise ValueError(
                f"Concatenate joins along axis 1 inputs that agree on every other axis, "
                f"got {_shapes(xs)}"
            )
        y = np.concatenate(xs, axis=1)
        self._sizes = [x.shape[1] for x in xs] if keeps_cache(training) else None
        return y

    def backward(  # type: ignore[override]
        self, dy: np.ndarray, need_input_grad: bool = True
    ) -> list[np.ndarray] | None:
        if self._sizes is None:
            raise NoForwardError(self)
        if not need_input_grad:
            return None
        return np.split(dy, np.cumsum(self._sizes)[:-1], axis=1)

    def config(self) -> dict[str, Any]:
        return {}
