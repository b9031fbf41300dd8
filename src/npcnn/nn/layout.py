"""Channels-last memory behind an NCHW interface.

Users see (N, C, H, W) arrays, as in PyTorch. Inside, the spatial layers keep
their data in (N, H, W, C) memory and hand out an NCHW-shaped *view* of it
(`from_channels_last`). The view costs nothing, elementwise NumPy operations
(batch norm, ReLU) preserve that memory order, and the next conv or pooling
layer gets its channels-last array back for free with `to_channels_last`.

Why: with channels innermost, the im2col copies move runs of C contiguous
values, and a pooling window's reduction runs over whole contiguous channel
vectors instead of over a few scattered pixels.
"""

from __future__ import annotations

import numpy as np


def to_channels_last(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W, C), contiguous (a free view for our layers' outputs)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def from_channels_last(x: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> an (N, C, H, W) view of the same memory."""
    return x.transpose(0, 3, 1, 2)


def is_channels_last(x: np.ndarray) -> bool:
    """True when the NCHW-shaped `x` has channels-last memory."""
    return x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous
