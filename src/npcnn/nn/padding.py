"""Zero padding as a layer of its own, each side by its own amount (PyTorch's ZeroPad2d,
Keras' ZeroPadding2D).

Convolutions and pools pad both sides alike; some networks pad one side more
(TensorFlow's "SAME" padding with a stride, as tf2onnx writes it). Maths in
`npcnn.nn.functional.padding`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from npcnn.nn.backend import active_kernels
from npcnn.nn.module import Layer, NoForwardError, check_input, keeps_cache


def as_padding(padding: int | tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) from one int or four, each >= 0; ValueError otherwise."""
    values = (padding,) * 4 if isinstance(padding, int | np.integer) else tuple(padding)
    if len(values) != 4 or any(
        isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0 for v in values
    ):
        raise ValueError(
            f"padding must be an int >= 0 or four of them (left, right, top, bottom), "
            f"got {padding!r}"
        )
    return tuple(int(v) for v in values)  # type: ignore[return-value]


class ZeroPad2D(Layer):
    """(N, C, H, W) -> (N, C, top + H + bottom, left + W + right), zeros around x.

    ``padding``: one int for every side, or (left, right, top, bottom) as
    PyTorch's ``nn.ZeroPad2d``. Backward: dx is dy without the padded border.
    """

    def __init__(self, padding: int | tuple[int, int, int, int]) -> None:
        super().__init__()
        self.padding = as_padding(padding)
        self._cache: tuple | None = None  # (kernel set, kernel cache) of a training forward

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """x (N, C, H, W) floats -> y (N, C, top+H+bottom, left+W+right)."""
        check_input(x, 4, self)
        kernels = active_kernels()
        y, cache = kernels.zero_pad2d_forward(x, self.padding)
        if keeps_cache(training):  # (an inference forward leaves a training forward's cache)
            self._cache = (kernels, cache)
        return y

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """dy of the padded shape -> dx (N, C, H, W) (None with need_input_grad=False)."""
        if self._cache is None:
            raise NoForwardError(self)
        kernels, cache = self._cache
        return kernels.zero_pad2d_backward(dy, cache) if need_input_grad else None

    def config(self) -> dict[str, Any]:
        return {"padding": list(self.padding)}
