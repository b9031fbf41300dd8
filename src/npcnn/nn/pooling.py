"""Max and average pooling over (N, C, H, W) input.

Output size, as in PyTorch (floor mode): Ho = (H + 2*ph - kh) // sh + 1.
Windows may overlap (kernel 3, stride 2) and may be padded (max pooling pads
with -inf, average pooling with zeros that count in the average, PyTorch's
`count_include_pad=True`).

Both layers loop over the kh*kw offsets of the window, never over pixels:
offset (i, j) of every window at once is the strided view
xp[:, i::sh, j::sw] (channels-last inside, see `layout.py`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from npcnn.nn.layout import from_channels_last, to_channels_last
from npcnn.nn.module import Layer, NoForwardError, as_pair, check_input, keeps_cache
from npcnn.runtime import memory
from npcnn.runtime.memory import scratch
from npcnn.runtime.threads import chunk_ranges, parallel_map


class _Pool2D(Layer):
    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.stride = as_pair(stride if stride is not None else kernel_size, "stride")
        self.padding = as_pair(padding, "padding")
        kh, kw = self.kernel_size
        ph, pw = self.padding
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"{type(self).__name__}: kernel_size and stride must be >= 1")
        if 2 * ph > kh or 2 * pw > kw:
            raise ValueError(
                f"{type(self).__name__}: padding {self.padding} must be at most half "
                f"the kernel size {self.kernel_size}"
            )
        self._shape: tuple[int, ...] | None = None

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ValueError(
                f"{type(self).__name__} input of size {h}x{w} is smaller than the {kh}x{kw} window"
            )
        return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1

    def _offsets(self) -> list[tuple[int, int]]:
        kh, kw = self.kernel_size
        return [(i, j) for i in range(kh) for j in range(kw)]

    def _window(self, xp: np.ndarray, i: int, j: int, ho: int, wo: int) -> np.ndarray:
        """Offset (i, j) of every window: a strided (B, ho, wo, C) view of padded `xp`."""
        sh, sw = self.stride
        return xp[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]

    def _pad(self, x_cl: np.ndarray, fill: float) -> np.ndarray:
        ph, pw = self.padding
        if ph == 0 and pw == 0:
            return x_cl
        n, h, w, c = x_cl.shape
        xp = np.full((n, h + 2 * ph, w + 2 * pw, c), fill, dtype=x_cl.dtype)
        xp[:, ph : ph + h, pw : pw + w] = x_cl
        return xp

    def _unpad(self, dxp: np.ndarray) -> np.ndarray:
        ph, pw = self.padding
        h, w = self._shape[1] - 2 * ph, self._shape[2] - 2 * pw
        return dxp[:, ph : ph + h, pw : pw + w]

    def config(self) -> dict[str, Any]:
        return {
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
        }


def _max_pool_2x2(x: np.ndarray, y: np.ndarray, argmax: np.ndarray | None) -> None:
    """2x2 windows at stride 2 over channels-last `x` (B, 2*Ho, 2*Wo, C), into y (B, Ho, Wo, C).

    The same result as the general loop over window offsets, faster for the
    most common pooling: the offsets' strided views move only C values per
    step, while comparing each pixel with its right-hand neighbour (the value
    C places further on) runs along whole image rows at once. `argmax` gets
    the first maximum in row-major order (0 1 / 2 3), as the general loop.
    """
    b, h, w, c = x.shape
    rows = x.reshape(b, h // 2, 2, w * c)  # pairs of image rows: (top, bottom)
    left, right = rows[..., :-c], rows[..., c:]
    # Maxima of (pixel, right neighbour) for every pixel; the even pixels are the windows'.
    pair_max = scratch("pair_max", rows.shape, x.dtype)
    np.maximum(left, right, out=pair_max[..., :-c])
    window_rows = pair_max.reshape(b, h // 2, 2, w // 2, 2 * c)[..., :c]  # (B, Ho, 2, Wo, C)
    top, bottom = window_rows[:, :, 0], window_rows[:, :, 1]
    np.maximum(top, bottom, out=y)
    if argmax is None:
        return
    # Strictly greater: on a tie the earlier position (left, then top) wins.
    right_wins = scratch("right_wins", rows.shape, np.bool_)
    np.greater(right, left, out=right_wins[..., :-c])
    # The codes of every pixel's (pixel, right neighbour) pair, computed along whole
    # rows like the maxima; the even pixels' codes are the windows'.
    in_top, in_bottom = right_wins[:, :, 0].view(np.uint8), right_wins[:, :, 1].view(np.uint8)
    bottom_wins = scratch("bottom_wins", in_top.shape, np.bool_)
    np.greater(pair_max[:, :, 1], pair_max[:, :, 0], out=bottom_wins)
    # code = in_top, or 2 + in_bottom where the bottom row wins; as uint8 arithmetic
    # (in_top + bottom_wins * (2 + in_bottom - in_top)), which is faster than a masked copy.
    codes = scratch("codes", in_top.shape, np.uint8)
    np.subtract(in_bottom, in_top, out=codes)
    codes += 2
    codes *= bottom_wins.view(np.uint8)
    codes += in_top
    argmax[...] = codes.reshape(b, h // 2, w // 2, 2 * c)[..., :c]


class MaxPool2D(_Pool2D):
    """y[n, c, a, b] = max over the window of xp[n, c, a*sh + i, b*sw + j].

    Backward: each window's gradient goes to one input, the FIRST maximum in
    row-major order, as PyTorch does. Ties are everywhere in real data
    (blank background is 0 after ReLU); sending the gradient to every tied
    maximum would multiply it. Overlapping windows add their gradients.
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__(kernel_size, stride, padding)
        self._argmax: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return self.forward_then_relu(x, training, relu=False)

    def forward_then_relu(self, x: np.ndarray, training: bool, relu: bool = True) -> np.ndarray:
        """relu(forward(x)), for `Sequential`, which folds a ReLU next to this layer in here.

        max(pool, 0) costs one pass over the pooled chunk while it is in cache,
        and backward needs no ReLU mask: windows whose maximum is <= 0 get the
        winning offset len(offsets), which no offset matches, so their
        gradient is 0, as the ReLU's mask would make it.
        """
        check_input(x, 4, self)
        ho, wo = self.output_size(x.shape[2], x.shape[3])
        xp = self._pad(to_channels_last(x), -np.inf)
        n, c = xp.shape[0], xp.shape[3]
        y = memory.empty((n, ho, wo, c), dtype=xp.dtype)
        # Index of the winning offset within the window (row-major), for backward.
        if keeps_cache(training):
            self._argmax = None  # let the previous step's memory serve this one (memory.py)
        offsets = self._offsets()
        # One byte per window, unless the window has 255 offsets or more (plus the ReLU's code).
        code = np.uint8 if len(offsets) < 255 else np.uint16
        argmax = memory.empty((n, ho, wo, c), dtype=code) if keeps_cache(training) else None

        def run(rows: range) -> None:
            sl = slice(rows.start, rows.stop)
            yb = y[sl]
            self._max_chunk(xp[sl], yb, None if argmax is None else argmax[sl])
            if relu:
                if argmax is not None:
                    np.putmask(argmax[sl], yb <= 0, len(offsets))
                np.maximum(yb, 0, out=yb)

        parallel_map(run, chunk_ranges(n, xp[:1].nbytes + y[:1].nbytes))
        if keeps_cache(training):
            self._argmax, self._shape = argmax, xp.shape
        return from_channels_last(y)

    def _max_chunk(self, xb: np.ndarray, yb: np.ndarray, argmax: np.ndarray | None) -> None:
        """Window maxima of padded channels-last `xb` (B, Hp, Wp, C) into `yb` (B, Ho, Wo, C),
        and into `argmax` (if given) the index of each window's first maximum."""
        _, ho, wo, _ = yb.shape
        if self.kernel_size == self.stride == (2, 2) and xb.shape[1:3] == (2 * ho, 2 * wo):
            _max_pool_2x2(xb, yb, argmax)
        else:
            self._max_by_offsets(xb, yb, argmax, ho, wo)

    def _max_by_offsets(
        self, xb: np.ndarray, yb: np.ndarray, argmax: np.ndarray | None, ho: int, wo: int
    ) -> None:
        """Any window: the maximum over its offsets' strided views, one offset at a time."""
        offsets = self._offsets()
        yb[...] = self._window(xb, *offsets[0], ho, wo)
        best = np.zeros(yb.shape, dtype=argmax.dtype) if argmax is not None else None
        for k, (i, j) in enumerate(offsets[1:], start=1):
            v = self._window(xb, i, j, ho, wo)
            if best is not None:
                # Strictly greater: an equal later value never displaces the first maximum.
                best = np.where(v > yb, best.dtype.type(k), best)
            np.maximum(yb, v, out=yb)
        if argmax is not None:
            argmax[...] = best

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy (N, C, Ho, Wo) -> dx (N, C, H, W)."""
        if self._argmax is None:
            raise NoForwardError(self)
        dy_cl = to_channels_last(dy)
        if dy_cl.shape != self._argmax.shape:
            raise ValueError(f"MaxPool2D.backward: dy has shape {dy.shape}, expected the output's")
        n, ho, wo, _ = dy_cl.shape
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        overlapping = sh < kh or sw < kw
        # Windows that tile the input exactly write every element: no zeroing needed.
        tiled = (sh, sw) == (kh, kw) and self._shape[1:3] == (ho * kh, wo * kw)
        dxp = (memory.empty if tiled else memory.zeros)(self._shape, dtype=dy_cl.dtype)

        def run(rows: range) -> None:
            sl = slice(rows.start, rows.stop)
            self._route_chunk(dxp[sl], dy_cl[sl], self._argmax[sl], add=overlapping)

        parallel_map(run, chunk_ranges(n, dxp[:1].nbytes + dy_cl[:1].nbytes))
        return from_channels_last(self._unpad(dxp))

    def _route_chunk(self, dxb: np.ndarray, dyb: np.ndarray, argmax: np.ndarray, add: bool) -> None:
        """Send each window's gradient in `dyb` (B, Ho, Wo, C) to its winner in padded `dxb`
        (B, Hp, Wp, C). With add=False the positions the windows cover are overwritten
        (no window overlaps another); with add=True the gradients are added to dxb."""
        _, ho, wo, _ = dyb.shape
        for k, (i, j) in enumerate(self._offsets()):
            view = self._window(dxb, i, j, ho, wo)
            if add:
                view += dyb * (argmax == k)
            else:
                np.multiply(dyb, argmax == k, out=view)


class AvgPool2D(_Pool2D):
    """y[n, c, a, b] = mean over the kh*kw window of xp (zero padding counts).

    Backward: every input of a window receives dy / (kh*kw) from it.
    """

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        check_input(x, 4, self)
        ho, wo = self.output_size(x.shape[2], x.shape[3])
        xp = self._pad(to_channels_last(x), 0.0)
        y = memory.zeros((xp.shape[0], ho, wo, xp.shape[3]), dtype=xp.dtype)
        for i, j in self._offsets():
            y += self._window(xp, i, j, ho, wo)
        y *= 1.0 / (self.kernel_size[0] * self.kernel_size[1])
        if keeps_cache(training):
            self._shape = xp.shape
        return from_channels_last(y)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy (N, C, Ho, Wo) -> dx (N, C, H, W)."""
        if self._shape is None:
            raise NoForwardError(self)
        dy_cl = to_channels_last(dy) * (1.0 / (self.kernel_size[0] * self.kernel_size[1]))
        _, ho, wo, _ = dy_cl.shape
        dxp = memory.zeros(self._shape, dtype=dy_cl.dtype)
        for i, j in self._offsets():
            self._window(dxp, i, j, ho, wo)[...] += dy_cl
        return from_channels_last(self._unpad(dxp))
