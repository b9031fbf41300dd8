"""Zero padding as a layer of its own, each side by its own amount (PyTorch's ZeroPad2d,
Keras' ZeroPadding2D).

Convolutions and pools pad both sides alike; some networks pad one side more
(TensorFlow's "SAME" padding with a stride, as tf2onnx writes it). Maths in
`npcnn.nn.functional.padding`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from npcnn.nn.kernel_layer import KernelLayer
from npcnn.nn.module import check_input


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


class ZeroPad2D(KernelLayer):
    """(N, C, H, W) -> (N, C, top + H + bottom, left + W + right), zeros around x.

    ``padding``: one int for every side, or (left, right, top, bottom) as
    PyTorch's ``nn.ZeroPad2d``. Backward: dx is dy without the padded border.
    """

    op = "zero_pad2d"

    def __init__(self, padding: int | tuple[int, int, int, int]) -> None:
        super().__init__()
        self.padding = as_padding(padding)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """x (N, C, H, W) floats -> y (N, C, top+H+bottom, left+W+right)."""
        check_input(x, 4, self)
        return self.kernel_forward(x, training, self.padding)

    def config(self) -> dict[str, Any]:
        return {"padding": list(self.padding)}
