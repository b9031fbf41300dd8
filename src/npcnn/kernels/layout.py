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

from npcnn.runtime import memory


def to_channels_last(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W, C), contiguous (a free view for our kernels' outputs)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def from_channels_last(x: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> an (N, C, H, W) view of the same memory."""
    return x.transpose(0, 3, 1, 2)


def is_channels_last(x: np.ndarray) -> bool:
    """True when the NCHW-shaped `x` has channels-last memory."""
    return x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous


def pad_into(x: np.ndarray, out: np.ndarray, ph: int, pw: int) -> None:
    """Copy channels-last `x` (N, H, W, C) into `out`, zero-padded by (ph, pw) in H and W."""
    _, h, w, _ = x.shape
    out.fill(0)
    out[:, ph : ph + h, pw : pw + w] = x


def padded(x_cl: np.ndarray, ph: int, pw: int) -> np.ndarray:
    """A few channels-last images zero-padded, in the thread's scratch buffer "padded"
    (x_cl itself when there is no padding)."""
    b, h, w, c = x_cl.shape
    if ph == 0 and pw == 0:
        return x_cl
    xp = memory.scratch("padded", (b, h + 2 * ph, w + 2 * pw, c), x_cl.dtype)
    pad_into(x_cl, xp, ph, pw)
    return xp


def spread_by_stride(
    dy_cl: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    size: tuple[int, int],
) -> np.ndarray:
    """A conv's output gradient (B, Ho, Wo, O), channels-last, spread out by the stride
    and padded, in a per-thread scratch buffer, so that a plain stride-1 correlation
    of it with the flipped kernel gives dL/dx of the (H, W) = `size` input (rows
    beyond the last window stay 0). Valid until the thread's next "spread" request.
    """
    (kh, kw), (sh, sw), (ph, pw), (h, w) = kernel, stride, padding, size
    b, ho, wo, o = dy_cl.shape
    hd = max(kh - 1 + sh * (ho - 1) + 1, ph + h + kh - 1)
    wd = max(kw - 1 + sw * (wo - 1) + 1, pw + w + kw - 1)
    spread = memory.scratch("spread", (b, hd, wd, o), dy_cl.dtype)
    spread.fill(0)
    spread[
        :, kh - 1 : kh - 1 + sh * (ho - 1) + 1 : sh, kw - 1 : kw - 1 + sw * (wo - 1) + 1 : sw
    ] = dy_cl
    return spread
