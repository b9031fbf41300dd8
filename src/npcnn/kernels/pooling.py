"""Fast max and average pooling: the maths of `npcnn.nn.functional.pooling`, another way.

Output size as in PyTorch (floor mode): Ho = (H + 2*ph - kh) // sh + 1. Max
pooling pads with -inf, average pooling with zeros that count in the average.

Both loop over the kh*kw offsets of the window, never over pixels: offset
(i, j) of every window at once is the strided view xp[:, i::sh, j::sw] of
channels-last memory (see `layout.py`), and for the common 2x2 max pooling at
stride 2 a faster loop compares neighbours along whole image rows.

Max pooling remembers, per window, the index of its first maximum in
row-major order (the winning offset, one byte per window), as PyTorch does:
ties are everywhere in real data (blank background is 0 after ReLU), and
sending the gradient to every tied maximum would multiply it.

`max_pool2d_relu_forward` is relu(max_pool(x)), which also equals
max_pool(relu(x)): the two commute, gradients included (both send dy to the
window's first maximum when it is positive, and nowhere otherwise). The ReLU
then costs one pass over the pooled values, inside the pool's own loop, and
windows whose maximum is <= 0 get the winning offset kh*kw, which no offset
matches, so that backward sends them no gradient with no mask of its own.
"""

from __future__ import annotations

import numpy as np

from npcnn.kernels.layout import from_channels_last, to_channels_last
from npcnn.runtime import memory
from npcnn.runtime.threads import chunk_ranges, parallel_map, with_single_threaded_blas
from npcnn.shapes import Pair, as_pair, check_shape, output_size


def geometry(
    x_shape: tuple[int, ...], kernel_size: Pair, stride: Pair | None, padding: Pair
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(kh, kw), (sh, sw), (ph, pw) and (Ho, Wo) of a pooling over an NCHW `x_shape`;
    the stride defaults to the kernel size."""
    kh, kw = as_pair(kernel_size, "kernel_size")
    sh, sw = as_pair(kernel_size if stride is None else stride, "stride")
    ph, pw = as_pair(padding, "padding")
    ho, wo = output_size(x_shape[2], kh, sh, ph), output_size(x_shape[3], kw, sw, pw)
    return (kh, kw), (sh, sw), (ph, pw), (ho, wo)


def offsets(kernel_size: tuple[int, int]) -> list[tuple[int, int]]:
    """The window's offsets (i, j) in row-major order: offset k is the k-th of them."""
    kh, kw = kernel_size
    return [(i, j) for i in range(kh) for j in range(kw)]


def window(xp: np.ndarray, i: int, j: int, ho: int, wo: int, stride: tuple[int, int]) -> np.ndarray:
    """Offset (i, j) of every window: a strided (B, ho, wo, C) view of padded `xp`."""
    sh, sw = stride
    return xp[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]


def pad(x_cl: np.ndarray, padding: tuple[int, int], fill: float) -> np.ndarray:
    """Channels-last `x_cl` padded by `padding` with `fill` (x_cl itself without padding)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x_cl
    n, h, w, c = x_cl.shape
    xp = np.full((n, h + 2 * ph, w + 2 * pw, c), fill, dtype=x_cl.dtype)
    xp[:, ph : ph + h, pw : pw + w] = x_cl
    return xp


def winner_dtype(kernel_size: tuple[int, int]) -> type:
    """The dtype of the winning offsets: one byte per window, unless the window has 255
    offsets or more (plus the folded ReLU's code for "no winner")."""
    return np.uint8 if len(offsets(kernel_size)) < 255 else np.uint16


def _max_pool_2x2(x: np.ndarray, y: np.ndarray, argmax: np.ndarray | None) -> None:
    """2x2 windows at stride 2 over channels-last `x` (B, 2*Ho, 2*Wo, C), into y (B, Ho, Wo, C).

    The same result as the general loop over window offsets, computed another
    way: the offsets' strided views move only C values per step, while
    comparing each pixel with its right-hand neighbour (the value C places
    further on) runs along whole image rows at once. `argmax` gets the first
    maximum in row-major order (0 1 / 2 3), as the general loop.
    """
    b, h, w, c = x.shape
    rows = x.reshape(b, h // 2, 2, w * c)  # pairs of image rows: (top, bottom)
    left, right = rows[..., :-c], rows[..., c:]
    # Maxima of (pixel, right neighbour) for every pixel; the even pixels are the windows'.
    pair_max = memory.scratch("pair_max", rows.shape, x.dtype)
    np.maximum(left, right, out=pair_max[..., :-c])
    window_rows = pair_max.reshape(b, h // 2, 2, w // 2, 2 * c)[..., :c]  # (B, Ho, 2, Wo, C)
    top, bottom = window_rows[:, :, 0], window_rows[:, :, 1]
    np.maximum(top, bottom, out=y)
    if argmax is None:
        return
    # Strictly greater: on a tie the earlier position (left, then top) wins.
    right_wins = memory.scratch("right_wins", rows.shape, np.bool_)
    np.greater(right, left, out=right_wins[..., :-c])
    # The codes of every pixel's (pixel, right neighbour) pair, computed along whole
    # rows like the maxima; the even pixels' codes are the windows'.
    in_top, in_bottom = right_wins[:, :, 0].view(np.uint8), right_wins[:, :, 1].view(np.uint8)
    bottom_wins = memory.scratch("bottom_wins", in_top.shape, np.bool_)
    np.greater(pair_max[:, :, 1], pair_max[:, :, 0], out=bottom_wins)
    # code = in_top, or 2 + in_bottom where the bottom row wins; as uint8 arithmetic
    # (in_top + bottom_wins * (2 + in_bottom - in_top)) rather than a masked copy.
    codes = memory.scratch("codes", in_top.shape, np.uint8)
    np.subtract(in_bottom, in_top, out=codes)
    codes += 2
    codes *= bottom_wins.view(np.uint8)
    codes += in_top
    argmax[...] = codes.reshape(b, h // 2, w // 2, 2 * c)[..., :c]


def _max_by_offsets(
    xb: np.ndarray,
    yb: np.ndarray,
    argmax: np.ndarray | None,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
) -> None:
    """Any window: the maximum over its offsets' strided views, one offset at a time."""
    _, ho, wo, _ = yb.shape
    window_offsets = offsets(kernel_size)
    yb[...] = window(xb, *window_offsets[0], ho, wo, stride)
    best = np.zeros(yb.shape, dtype=argmax.dtype) if argmax is not None else None
    for k, (i, j) in enumerate(window_offsets[1:], start=1):
        v = window(xb, i, j, ho, wo, stride)
        if best is not None:
            # Strictly greater: an equal later value never displaces the first maximum.
            best = np.where(v > yb, best.dtype.type(k), best)
        np.maximum(yb, v, out=yb)
    if argmax is not None:
        argmax[...] = best


def window_maxima(
    xb: np.ndarray,
    yb: np.ndarray,
    argmax: np.ndarray | None,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
) -> None:
    """Window maxima of padded channels-last `xb` (B, Hp, Wp, C) into `yb` (B, Ho, Wo, C),
    and into `argmax` (if given) the index of each window's first maximum, in the
    calling thread."""
    _, ho, wo, _ = yb.shape
    if kernel_size == stride == (2, 2) and xb.shape[1:3] == (2 * ho, 2 * wo):
        _max_pool_2x2(xb, yb, argmax)
    else:
        _max_by_offsets(xb, yb, argmax, kernel_size, stride)


def route_to_winners(
    dxb: np.ndarray,
    dyb: np.ndarray,
    argmax: np.ndarray,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    add: bool,
) -> None:
    """Send each window's gradient in `dyb` (B, Ho, Wo, C) to its winner in padded `dxb`
    (B, Hp, Wp, C), in the calling thread. With add=False the positions the windows
    cover are overwritten (no window overlaps another); with add=True the gradients
    are added to dxb."""
    _, ho, wo, _ = dyb.shape
    for k, (i, j) in enumerate(offsets(kernel_size)):
        view = window(dxb, i, j, ho, wo, stride)
        if add:
            view += dyb * (argmax == k)
        else:
            np.multiply(dyb, argmax == k, out=view)


def _max_pool(
    x: np.ndarray,
    kernel_size: Pair,
    stride: Pair | None,
    padding: Pair,
    relu: bool,
    need_cache: bool,
) -> tuple[np.ndarray, tuple | None]:
    """max_pool2d_forward, or its relu(...) with `relu`; see the module docstring."""
    kernel, stride, padding, (ho, wo) = geometry(x.shape, kernel_size, stride, padding)
    xp = pad(to_channels_last(x), padding, -np.inf)
    n, c = xp.shape[0], xp.shape[3]
    y = memory.empty((n, ho, wo, c), dtype=xp.dtype)
    # Index of the winning offset within the window (row-major), for backward.
    no_winner = len(offsets(kernel))  # the code of a window the ReLU blocks
    argmax = memory.empty((n, ho, wo, c), dtype=winner_dtype(kernel)) if need_cache else None

    def run(rows: range) -> None:
        sl = slice(rows.start, rows.stop)
        yb = y[sl]
        window_maxima(xp[sl], yb, None if argmax is None else argmax[sl], kernel, stride)
        if relu:
            if argmax is not None:
                np.putmask(argmax[sl], yb <= 0, no_winner)
            np.maximum(yb, 0, out=yb)

    parallel_map(run, chunk_ranges(n, xp[:1].nbytes + y[:1].nbytes))
    cache = (argmax, xp.shape, kernel, stride, padding) if need_cache else None
    return from_channels_last(y), cache


@with_single_threaded_blas
def max_pool2d_forward(
    x: np.ndarray,
    kernel_size: Pair,
    stride: Pair | None = None,
    padding: Pair = 0,
    *,
    need_cache: bool = True,
) -> tuple[np.ndarray, tuple | None]:
    """y = max of each window of x padded with -inf: x (N, C, H, W) -> y (N, C, Ho, Wo).

    Returns (y, cache); the cache (None with need_cache=False: no winners are
    recorded) holds each window's winning offset.
    """
    return _max_pool(x, kernel_size, stride, padding, relu=False, need_cache=need_cache)


@with_single_threaded_blas
def max_pool2d_relu_forward(
    x: np.ndarray,
    kernel_size: Pair,
    stride: Pair | None = None,
    padding: Pair = 0,
    *,
    need_cache: bool = True,
) -> tuple[np.ndarray, tuple | None]:
    """y = relu(max_pool2d(x)) = max_pool2d(relu(x)), in one pass; backward is
    `max_pool2d_relu_backward` (= `max_pool2d_backward`)."""
    return _max_pool(x, kernel_size, stride, padding, relu=True, need_cache=need_cache)


@with_single_threaded_blas
def max_pool2d_backward(dy: np.ndarray, cache: tuple) -> np.ndarray:
    """dy (N, C, Ho, Wo) -> dx (N, C, H, W): each window's dy added to its first maximum."""
    argmax, padded_shape, (kh, kw), (sh, sw), (ph, pw) = cache
    n, ho, wo, c = argmax.shape
    check_shape(dy, (n, c, ho, wo), "max_pool2d_backward: dy")
    dy_cl = to_channels_last(dy)
    overlapping = sh < kh or sw < kw
    # Windows that tile the input exactly write every element: no zeroing needed.
    tiled = (sh, sw) == (kh, kw) and padded_shape[1:3] == (ho * kh, wo * kw)
    dxp = (memory.empty if tiled else memory.zeros)(padded_shape, dtype=dy_cl.dtype)

    def run(rows: range) -> None:
        sl = slice(rows.start, rows.stop)
        route_to_winners(dxp[sl], dy_cl[sl], argmax[sl], (kh, kw), (sh, sw), add=overlapping)

    parallel_map(run, chunk_ranges(n, dxp[:1].nbytes + dy_cl[:1].nbytes))
    h, w = padded_shape[1] - 2 * ph, padded_shape[2] - 2 * pw
    return from_channels_last(dxp[:, ph : ph + h, pw : pw + w])


max_pool2d_relu_backward = max_pool2d_backward


@with_single_threaded_blas
def avg_pool2d_forward(
    x: np.ndarray, kernel_size: Pair, stride: Pair | None = None, padding: Pair = 0
) -> tuple[np.ndarray, tuple]:
    """y = sum of each zero-padded window / (kh*kw): x (N, C, H, W) -> y (N, C, Ho, Wo).

    Returns (y, cache).
    """
    kernel, stride, padding, (ho, wo) = geometry(x.shape, kernel_size, stride, padding)
    xp = pad(to_channels_last(x), padding, 0.0)
    y = memory.zeros((xp.shape[0], ho, wo, xp.shape[3]), dtype=xp.dtype)
    for i, j in offsets(kernel):
        y += window(xp, i, j, ho, wo, stride)
    y *= 1.0 / (kernel[0] * kernel[1])
    return from_channels_last(y), (xp.shape, (ho, wo), kernel, stride, padding)


@with_single_threaded_blas
def avg_pool2d_backward(dy: np.ndarray, cache: tuple) -> np.ndarray:
    """dy (N, C, Ho, Wo) -> dx (N, C, H, W): every value of a window gets dy / (kh*kw)."""
    padded_shape, (ho, wo), (kh, kw), stride, (ph, pw) = cache
    n, _, _, c = padded_shape
    check_shape(dy, (n, c, ho, wo), "avg_pool2d_backward: dy")
    dy_cl = to_channels_last(dy) * (1.0 / (kh * kw))
    dxp = memory.zeros(padded_shape, dtype=dy_cl.dtype)
    for i, j in offsets((kh, kw)):
        window(dxp, i, j, ho, wo, stride)[...] += dy_cl
    h, w = padded_shape[1] - 2 * ph, padded_shape[2] - 2 * pw
    return from_channels_last(dxp[:, ph : ph + h, pw : pw + w])


def global_avg_pool2d_forward(x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """y[n, c] = mean over (h, w) of x[n, c, h, w]: x (N, C, H, W) -> y (N, C).

    The mean runs over contiguous channel vectors of channels-last memory.
    Returns (y, cache: x's shape). ValueError unless x is (N, C, H, W), H, W >= 1.
    """
    if x.ndim != 4 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"global_avg_pool2d expects x (N, C, H, W), got shape {x.shape}")
    n, c, h, w = x.shape
    return to_channels_last(x).reshape(n, h * w, c).mean(axis=1), x.shape


def global_avg_pool2d_backward(dy: np.ndarray, cache: tuple[int, ...]) -> np.ndarray:
    """dy (N, C) -> dx (N, C, H, W) = dy[n, c] / (H*W) everywhere, an NCHW view of
    channels-last memory (what the fast conv and batch-norm kernels take for free)."""
    n, c, h, w = cache
    check_shape(dy, (n, c), "global_avg_pool2d_backward: dy")
    dx = memory.empty((n, h, w, c), dtype=dy.dtype)
    dx[...] = (dy / (h * w))[:, None, None, :]
    return from_channels_last(dx)
