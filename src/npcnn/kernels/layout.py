"""Channels-last memory behind an NCHW interface: the fast kernels' convention, and theirs alone.

Every kernel takes and returns (N, C, H, W)-shaped arrays, as the reference
kernels and PyTorch do. The fast spatial kernels keep their data in
(N, H, W, C) memory inside and hand out an NCHW-shaped *view* of it
(`from_channels_last`). The view is free, elementwise NumPy operations
(batch norm, ReLU) preserve that memory order, and the next conv or pooling
kernel gets its channels-last array back for free with `to_channels_last`.
Any other memory order is accepted too, at the cost of one copy.

Why: with channels innermost, the im2col copies move runs of C contiguous
values, and a pooling window's reduction runs over whole contiguous channel
vectors instead of over a few scattered pixels.
"""

from __future__ import annotations

import numpy as np


def to_channels_last(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W, C), contiguous (a free view for our kernels' outputs)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def from_channels_last(x: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> an (N, C, H, W) view of the same memory."""
    return x.transpose(0, 3, 1, 2)


def is_channels_last(x: np.ndarray) -> bool:
    """True when the NCHW-shaped `x` has channels-last memory."""
    return x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous
