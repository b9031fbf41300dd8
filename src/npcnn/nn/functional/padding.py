"""Zero padding of the two spatial axes, each side by its own amount.

Forward, for x (N, C, H, W) and padding (left, right, top, bottom):

    y = zeros (N, C, top + H + bottom, left + W + right)
    y[:, :, top : top + H, left : left + W] = x

Backward: each input value went to one output position, so
    dx = dy[:, :, top : top + H, left : left + W]
"""

from __future__ import annotations

import numpy as np


def zero_pad2d_forward(
    x: np.ndarray, padding: tuple[int, int, int, int]
) -> tuple[np.ndarray, tuple]:
    """x (N, C, H, W) -> (y (N, C, top+H+bottom, left+W+right), cache), x's dtype."""
    left, right, top, bottom = padding
    n, c, h, w = x.shape
    y = np.zeros((n, c, top + h + bottom, left + w + right), dtype=x.dtype)
    y[:, :, top : top + h, left : left + w] = x
    return y, (x.shape, padding)


def zero_pad2d_backward(dy: np.ndarray, cache: tuple) -> np.ndarray:
    """dy of the padded shape -> dx (N, C, H, W): the inner window of dy."""
    (_, _, h, w), (left, _, top, _) = cache
    return np.ascontiguousarray(dy[:, :, top : top + h, left : left + w])
