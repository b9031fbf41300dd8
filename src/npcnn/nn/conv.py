"""2-D convolution (cross-correlation, as in every deep-learning library).

Shapes: input x (N, C, H, W), weight (O, C, kh, kw), bias (O,), output
y (N, O, Ho, Wo) with Ho = (H + 2*ph - kh) // sh + 1 (likewise Wo).

Forward:  y[n, o, a, b] = bias[o] + sum_{c,i,j} w[o, c, i, j] * xp[n, c, a*sh + i, b*sw + j]
where xp is x zero-padded by (ph, pw).

How it is computed (im2col + GEMM): copy every receptive field into a row of
a matrix `cols` of shape (N*Ho*Wo, kh*kw*C); then y = cols @ W with W the
weight reshaped to (kh*kw*C, O). One matrix product does all the
multiply-adds, at BLAS speed.

Backward, given dy = dL/dy:
- dL/dbias[o] = sum over n, a, b of dy[n, o, a, b]
- dL/dW = cols^T @ dy  (the same matrix as the forward, transposed)
- dL/dx is itself a convolution: spread dy out by the stride (zeros between
  rows), pad it by kh-1, and correlate it with the kernel flipped in both
  spatial axes and with in/out channels swapped. Every input pixel then
  gathers the contributions of all the outputs it fed, in one more GEMM
  (dcols @ flipped weight), instead of scattering them with kh*kw strided
  additions.
- When dx is computed, dcols also gives dL/dW: its row for input pixel
  (p, q) holds the dy values that pixel fed, so x^T @ dcols is dL/dW of the
  flipped kernel, and the input needs no second im2col.

Performance: the work is done in chunks of images small enough for `cols`
to stay in cache (GEMMs with 10-100 output channels run far below peak
otherwise) and the chunks are spread over the cores. Data is kept
channels-last inside (see `layout.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from npcnn.nn import init
from npcnn.nn.layout import from_channels_last, to_channels_last
from npcnn.nn.module import (
    DEFAULT_DTYPE,
    Layer,
    NoForwardError,
    Parameter,
    as_pair,
    check_input,
    keeps_cache,
    parameter_dtype,
)
from npcnn.runtime import memory
from npcnn.runtime.memory import scratch
from npcnn.runtime.threads import chunk_ranges, parallel_map

# Below this many input channels, im2col copies whole image rows per channel instead.
_FEW_CHANNELS = 4
# Chunks of at most this many images: 8 images of a conv already make GEMMs of
# thousands of rows, and small chunks share the work out evenly (a thread that
# wakes late, or finishes last, costs at most one small chunk). Measured at
# batch 128: 17.4 ms a step against 17.6 with chunks sized by cache alone.
_MAX_IMAGES_PER_CHUNK = 8


def _pad_into(x: np.ndarray, out: np.ndarray, ph: int, pw: int) -> None:
    """Copy channels-last `x` (N, H, W, C) into `out`, zero-padded by (ph, pw) in H and W."""
    _, h, w, _ = x.shape
    out.fill(0)
    out[:, ph : ph + h, pw : pw + w] = x


def _im2col(
    xp: np.ndarray,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ho: int,
    wo: int,
    top: int = 0,
    left: int = 0,
    name: str = "cols",
) -> np.ndarray:
    """Receptive fields of channels-last `xp` (B, Hp, Wp, C) as a (B*ho*wo, kh*kw*C) matrix.

    Row (b, a, c) holds xp[b, top + a*sh + i, left + c*sw + j, :] for every (i, j),
    in (i, j, channel) order. Every receptive field is already in `xp`'s
    memory: a strided view (no copy) reaches it, and im2col is one copy of
    that view. In channels-last memory the kw pixels of a kernel row are kw*C
    consecutive values, so the copy moves runs of kw*C values. The matrix
    lives in the thread's scratch buffer `name`: use it before the next call.

    With few channels (a grayscale input) those runs would be one or two
    values long; the matrix is then built transposed, (i, j, channel) by
    (b, a, c), so that the copy runs along whole image rows, and returned as
    a transposed view (BLAS takes either orientation without copying).

    One NumPy call rather than one per kernel row matters when threads share
    the work: each call takes Python's lock again, and a hand-over between
    threads costs as much as a small copy.
    """
    xp = np.ascontiguousarray(xp)
    b, _, _, c = xp.shape
    s_img, s_row, s_pix, s_val = xp.strides
    if c < _FEW_CHANNELS:
        shape = (kh, kw, c, b, ho, wo)
        strides = (s_row, s_pix, s_val, s_img, sh * s_row, sw * s_pix)
    else:  # runs of kw*C values: s_val steps through a kernel row's pixels too
        shape = (b, ho, wo, kh, kw * c)
        strides = (s_img, sh * s_row, sw * s_pix, s_row, s_val)
    # A view of xp's memory from the corner (top, left), made by the ndarray
    # constructor: as_strided does the same in Python, several times as slow.
    corner = top * s_row + left * s_pix
    fields = np.ndarray(shape, xp.dtype, buffer=xp, offset=corner, strides=strides)
    cols = scratch(name, shape, xp.dtype)
    np.copyto(cols, fields)
    if c < _FEW_CHANNELS:
        return cols.reshape(kh * kw * c, b * ho * wo).T
    return cols.reshape(b * ho * wo, kh * kw * c)


class Conv2D(Layer):
    """2-D convolution over (N, C, H, W) input; weight (out, in, kh, kw) as in PyTorch.

    Args:
        in_channels, out_channels: C and O.
        kernel_size, stride, padding: an int or an (h, w) pair; zero padding.
        bias: learn an additive bias per output channel.
        rng: seed or Generator for the He-normal initial weights.
        dtype: float32 (default) or float64.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
        *,
        rng: np.random.Generator | int | None = None,
        dtype: np.typing.DTypeLike = DEFAULT_DTYPE,
    ) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        if self.in_channels < 1 or self.out_channels < 1:
            raise ValueError(
                f"Conv2D needs in_channels and out_channels >= 1, "
                f"got {in_channels} and {out_channels}"
            )
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.stride = as_pair(stride, "stride")
        self.padding = as_pair(padding, "padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(
                f"Conv2D needs kernel_size >= 1, stride >= 1, padding >= 0; got "
                f"{self.kernel_size}, {self.stride}, {self.padding}"
            )
        dtype = parameter_dtype(dtype)
        kh, kw = self.kernel_size
        self.weight = Parameter(np.zeros((out_channels, in_channels, kh, kw), dtype=dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype=dtype)) if bias else None
        self._x: np.ndarray | None = None  # the channels-last input, for backward
        self.reset_parameters(rng)

    def reset_parameters(self, rng: np.random.Generator | int | None = None) -> None:
        rng = np.random.default_rng(rng)
        init.kaiming_normal_(self.weight, rng)
        if self.bias is not None:
            init.zeros_(self.bias)

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """(Ho, Wo) for an (H, W) input; ValueError when the kernel does not fit."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ValueError(
                f"Conv2D input of size {h}x{w} (padded to {h + 2 * ph}x{w + 2 * pw}) "
                f"is smaller than the {kh}x{kw} kernel"
            )
        return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        check_input(x, 4, self, self.in_channels)
        ho, wo = self.output_size(x.shape[2], x.shape[3])
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        dtype = self.weight.data.dtype
        x_cl = to_channels_last(x.astype(dtype, copy=False))
        n, o = x_cl.shape[0], self.out_channels
        # (O, C, kh, kw) -> (kh*kw*C, O), matching the (i, j, channel) order of cols.
        w_mat = self.weight.data.transpose(2, 3, 1, 0).reshape(-1, o)
        y = memory.empty((n, ho, wo, o), dtype=dtype)
        bias = self.bias.data if self.bias is not None else None

        def run(rows: range) -> None:
            cols = _im2col(self._padded(x_cl[rows.start : rows.stop]), kh, kw, sh, sw, ho, wo)
            out = y[rows.start : rows.stop].reshape(-1, o)
            np.matmul(cols, w_mat, out=out)
            if bias is not None:
                out += bias

        per_image = ho * wo * w_mat.shape[0] * y.itemsize  # the cols matrix
        parallel_map(run, chunk_ranges(n, per_image, max_items=_MAX_IMAGES_PER_CHUNK))
        self._x = x_cl if keeps_cache(training) else None
        return from_channels_last(y)

    def _padded(self, x_cl: np.ndarray) -> np.ndarray:
        """A few channels-last images zero-padded, in the thread's scratch buffer."""
        (ph, pw), (b, h, w, c) = self.padding, x_cl.shape
        if ph == 0 and pw == 0:
            return x_cl
        xp = scratch("padded", (b, h + 2 * ph, w + 2 * pw, c), x_cl.dtype)
        _pad_into(x_cl, xp, ph, pw)
        return xp

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """dy (N, O, Ho, Wo) -> dx (N, C, H, W); adds into weight.grad and bias.grad.

        With `need_input_grad=False` (the first layer of a network) dx is skipped
        and None is returned.
        """
        if self._x is None:
            raise NoForwardError(self)
        x_cl = self._x
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        (n, h, w, c), o = x_cl.shape, self.out_channels
        ho, wo = self.output_size(h, w)
        if dy.shape != (n, o, ho, wo):
            raise ValueError(
                f"Conv2D.backward expects dy of shape {(n, o, ho, wo)}, got {dy.shape}"
            )
        dtype = self.weight.data.dtype
        dy_cl = to_channels_last(dy.astype(dtype, copy=False))
        dx = memory.empty((n, h, w, c), dtype=dtype) if need_input_grad else None
        # Flipped kernel with in/out swapped: (O, C, kh, kw) -> (kh*kw*O, C).
        w_flip = self.weight.data[:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(-1, c)
        # dy spread by the stride and padded so that a plain stride-1 correlation
        # with the flipped kernel yields dL/dx (rows beyond the last window stay 0).
        hd = max(kh - 1 + sh * (ho - 1) + 1, ph + h + kh - 1)
        wd = max(kw - 1 + sw * (wo - 1) + 1, pw + w + kw - 1)

        def weight_grad(rows: range) -> np.ndarray:
            """This chunk's dL/dW as (O, kh*kw*C), from the forward's cols matrix."""
            sl = slice(rows.start, rows.stop)
            cols = _im2col(self._padded(x_cl[sl]), kh, kw, sh, sw, ho, wo)
            dy_2d = dy_cl[sl].reshape(-1, o)
            # The same product either way; BLAS runs it twice as fast in this
            # orientation when cols is the transposed few-channel matrix. np.dot,
            # not @: matmul keeps the GIL for products of under 512 values (a
            # 16x9 weight gradient), which would run the chunks one at a time.
            if cols.flags.f_contiguous:
                return np.dot(cols.T, dy_2d).T
            return np.dot(dy_2d.T, cols)

        def input_and_weight_grad(rows: range) -> np.ndarray:
            """This chunk's dL/dx, and its dL/dW as (C, kh*kw*O) of the flipped kernel."""
            sl = slice(rows.start, rows.stop)
            spread = scratch("spread", (len(rows), hd, wd, o), dtype)
            spread.fill(0)
            spread[
                :,
                kh - 1 : kh - 1 + sh * (ho - 1) + 1 : sh,
                kw - 1 : kw - 1 + sw * (wo - 1) + 1 : sw,
            ] = dy_cl[sl]
            dcols = _im2col(spread, kh, kw, 1, 1, h, w, top=ph, left=pw, name="dcols")
            np.matmul(dcols, w_flip, out=dx[sl].reshape(-1, c))
            # Row (b, p, q) of dcols holds the dy values that input pixel (p, q)
            # fed, at the flipped kernel's offsets, so its product with the input
            # is dL/dW too (no im2col of the input needed):
            #   dW[o, c, kh-1-i, kw-1-j] = sum_{b,p,q} x[b, p, q, c] * dcols[(b, p, q), (i, j, o)]
            return np.dot(x_cl[sl].reshape(-1, c).T, dcols)

        itemsize = np.dtype(dtype).itemsize
        if dx is None:
            per_image = ho * wo * kh * kw * c * itemsize  # cols
            chunks = chunk_ranges(n, per_image, max_items=_MAX_IMAGES_PER_CHUNK)
            dw = sum(parallel_map(weight_grad, chunks), np.zeros((o, kh * kw * c), dtype))
            self.weight.grad += dw.reshape(o, kh, kw, c).transpose(0, 3, 1, 2)
        else:
            per_image = h * w * kh * kw * o * itemsize  # dcols
            chunks = chunk_ranges(n, per_image, max_items=_MAX_IMAGES_PER_CHUNK)
            dw_flip = sum(parallel_map(input_and_weight_grad, chunks), np.zeros_like(w_flip.T))
            self.weight.grad += dw_flip.reshape(c, kh, kw, o)[:, ::-1, ::-1].transpose(3, 0, 1, 2)
        if self.bias is not None:
            dy_rows = dy_cl.reshape(-1, o)
            self.bias.grad += np.ones(len(dy_rows), dtype=dtype) @ dy_rows
        return from_channels_last(dx) if dx is not None else None

    def config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "bias": self.bias is not None,
        }

    @classmethod
    def state_shapes(cls, config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        out_channels, in_channels = int(config["out_channels"]), int(config["in_channels"])
        kh, kw = as_pair(config["kernel_size"], "kernel_size")
        shapes = {"weight": (out_channels, in_channels, kh, kw)}
        if config.get("bias", True):
            shapes["bias"] = (out_channels,)
        return shapes
