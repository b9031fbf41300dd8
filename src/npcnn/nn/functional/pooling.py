"""Max and average pooling over (N, C, H, W), with im2col: one row per window and channel.

Shapes: x (N, C, H, W) -> y (N, C, Ho, Wo), Ho = (H + 2*ph - kh) // sh + 1
(likewise Wo); the stride defaults to the kernel size. PyTorch's semantics:

    max:  y[n, c, a, b] = max_{i, j} xp[n, c, a*sh + i, b*sw + j]     xp padded with -inf
    avg:  y[n, c, a, b] = sum_{i, j} xp[n, c, a*sh + i, b*sw + j] / (kh*kw)
                                               xp padded with zeros, which count

im2col (see conv.py) gives cols (N*Ho*Wo, C*kh*kw) with the kh*kw values of
each channel's window side by side, so cols.reshape(-1, kh*kw) holds one
window per row, rows in (n, a, b, c) order. Pooling is a reduction along
each row; backward builds each row's gradient and hands the rows to col2im,
which adds the shares of overlapping windows into the same pixel:

    max: a window's dy goes to its FIRST maximum in row-major order (np.argmax
         returns the first); its other kh*kw - 1 values get 0
    avg: each of the kh*kw values of a window gets dy / (kh*kw)
"""

from __future__ import annotations

import numpy as np

from npcnn.nn.functional.conv import col2im, im2col
from npcnn.shapes import Pair, as_pair, check_shape, output_size


def _geometry(
    x_shape: tuple[int, ...], kernel_size: Pair, stride: Pair | None, padding: Pair
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(kh, kw), (sh, sw), (ph, pw) and (Ho, Wo); the stride defaults to the kernel size."""
    if len(x_shape) != 4:
        raise ValueError(f"pooling expects x of shape (N, C, H, W), got shape {x_shape}")
    kh, kw = as_pair(kernel_size, "kernel_size")
    sh, sw = as_pair(kernel_size if stride is None else stride, "stride")
    ph, pw = as_pair(padding, "padding")
    ho, wo = output_size(x_shape[2], kh, sh, ph), output_size(x_shape[3], kw, sw, pw)
    return (kh, kw), (sh, sw), (ph, pw), (ho, wo)


def max_pool2d_forward(
    x: np.ndarray,
    kernel_size: Pair,
    stride: Pair | None = None,
    padding: Pair = 0,
    *,
    need_cache: bool = True,
) -> tuple[np.ndarray, tuple | None]:
    """y = max of each window of x padded with -inf: x (N, C, H, W) -> y (N, C, Ho, Wo).

    Returns (y, cache); the cache holds where each window's first maximum is
    (None with need_cache=False).
    """
    (kh, kw), stride, padding, (ho, wo) = _geometry(x.shape, kernel_size, stride, padding)
    n, c, _, _ = x.shape
    windows = im2col(x, kh, kw, stride, padding, -np.inf).reshape(-1, kh * kw)
    argmax = windows.argmax(axis=1)  # (N*Ho*Wo*C,): the first maximum of each window
    y = windows[np.arange(len(windows)), argmax]
    y = np.ascontiguousarray(y.reshape(n, ho, wo, c).transpose(0, 3, 1, 2))
    return y, ((x.shape, y.shape, argmax, (kh, kw), stride, padding) if need_cache else None)


def max_pool2d_backward(dy: np.ndarray, cache: tuple) -> np.ndarray:
    """dy (N, C, Ho, Wo) -> dx (N, C, H, W): each window's dy added to its first maximum."""
    x_shape, y_shape, argmax, (kh, kw), stride, padding = cache
    check_shape(dy, y_shape, "max_pool2d_backward: dy")
    dy_rows = dy.transpose(0, 2, 3, 1).ravel()  # (N*Ho*Wo*C,), in the windows' order
    dwindows = np.zeros((len(dy_rows), kh * kw), dtype=dy.dtype)
    dwindows[np.arange(len(dy_rows)), argmax] = dy_rows
    dcols = dwindows.reshape(-1, x_shape[1] * kh * kw)  # (N*Ho*Wo, C*kh*kw)
    return col2im(dcols, x_shape, kh, kw, stride, padding)


def avg_pool2d_forward(
    x: np.ndarray, kernel_size: Pair, stride: Pair | None = None, padding: Pair = 0
) -> tuple[np.ndarray, tuple]:
    """y = sum of each zero-padded window / (kh*kw): x (N, C, H, W) -> y (N, C, Ho, Wo).

    Returns (y, cache).
    """
    (kh, kw), stride, padding, (ho, wo) = _geometry(x.shape, kernel_size, stride, padding)
    n, c, _, _ = x.shape
    windows = im2col(x, kh, kw, stride, padding).reshape(-1, kh * kw)  # (N*Ho*Wo*C, kh*kw)
    y = windows.sum(axis=1) / (kh * kw)
    y = np.ascontiguousarray(y.reshape(n, ho, wo, c).transpose(0, 3, 1, 2))
    return y, (x.shape, y.shape, (kh, kw), stride, padding)


def avg_pool2d_backward(dy: np.ndarray, cache: tuple) -> np.ndarray:
    """dy (N, C, Ho, Wo) -> dx (N, C, H, W): every value of a window gets dy / (kh*kw)."""
    x_shape, y_shape, (kh, kw), stride, padding = cache
    check_shape(dy, y_shape, "avg_pool2d_backward: dy")
    dy_rows = dy.transpose(0, 2, 3, 1).reshape(-1, 1)  # (N*Ho*Wo*C, 1), in the windows' order
    dwindows = np.repeat(dy_rows / (kh * kw), kh * kw, axis=1)  # (N*Ho*Wo*C, kh*kw)
    dcols = dwindows.reshape(-1, x_shape[1] * kh * kw)  # (N*Ho*Wo, C*kh*kw)
    return col2im(dcols, x_shape, kh, kw, stride, padding)


def global_avg_pool2d_forward(x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """y[n, c] = mean over (h, w) of x[n, c, h, w]: x (N, C, H, W) -> y (N, C).

    Keras' GlobalAveragePooling2D; PyTorch's AdaptiveAvgPool2d(1) followed by
    flatten. Returns (y, cache: x's shape). Raises ValueError unless x is
    (N, C, H, W) with H, W >= 1.
    """
    if x.ndim != 4 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"global_avg_pool2d expects x (N, C, H, W), got shape {x.shape}")
    return x.mean(axis=(2, 3)), x.shape


def global_avg_pool2d_backward(dy: np.ndarray, cache: tuple[int, ...]) -> np.ndarray:
    """dy (N, C) -> dx (N, C, H, W) with dx[n, c, h, w] = dy[n, c] / (H*W)."""
    n, c, h, w = cache
    check_shape(dy, (n, c), "global_avg_pool2d_backward: dy")
    dx = np.empty(cache, dtype=dy.dtype)
    dx[...] = (dy / (h * w))[:, :, None, None]
    return dx
