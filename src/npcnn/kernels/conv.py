"""Fast 2-D convolution: the maths of `npcnn.nn.functional.conv`, computed another way.

Shapes and forward as in the reference: x (N, C, H, W), weight (O, C, kh, kw),
y (N, O, Ho, Wo), y = cols @ W + bias with cols the receptive fields (im2col).

Forward: im2col of channels-last memory (one copy of a strided view per
chunk of images, see `im2col`), then one GEMM per chunk.

Backward, given dy = dL/dy:
- dL/dbias[o] = sum over n, a, b of dy[n, o, a, b]
- dL/dx is itself a convolution: spread dy out by the stride (zeros between
  rows), pad it by kh-1, and correlate it with the kernel flipped in both
  spatial axes and with in/out channels swapped. Every input pixel then
  gathers the contributions of all the outputs it fed, in one more GEMM
  (dcols @ flipped weight), instead of the kh*kw strided additions of col2im.
- dL/dW: when dx is computed, dcols gives it too: its row for input pixel
  (p, q) holds the dy values that pixel fed, so x^T @ dcols is dL/dW of the
  flipped kernel, and the input needs no second im2col. Without dx (a
  network's first layer) it is the textbook cols^T @ dy.
- With a stride above 1, the spread dy is mostly zeros (3 in 4 at stride 2)
  that those products would multiply. Strided convs take the textbook way
  instead: dL/dW = cols^T @ dy, and dL/dx = col2im(dy @ W^T), each receptive
  field's gradient row added back onto the pixels it came from (kh*kw
  strided additions per chunk).

The work is done in chunks of at most `MAX_IMAGES_PER_CHUNK` images, spread
over the cores; each chunk's matrices live in its thread's scratch memory.
Grouped and depthwise convolutions (groups > 1) go to `npcnn.kernels.grouped_conv`.
"""

from __future__ import annotations

import numpy as np

from npcnn.kernels.grouped_conv import grouped_backward, grouped_forward
from npcnn.kernels.layout import from_channels_last, padded, spread_by_stride, to_channels_last
from npcnn.runtime import memory
from npcnn.runtime.threads import chunk_ranges, parallel_map, with_single_threaded_blas
from npcnn.shapes import Pair, as_pair, check_shape, output_size

# Below this many input channels, im2col copies whole image rows per channel instead.
FEW_CHANNELS = 4
# Chunks of at most this many images: 8 images of a conv already make GEMMs of
# thousands of rows, and small chunks share the work out evenly (a thread that
# wakes late, or finishes last, costs at most one small chunk).
MAX_IMAGES_PER_CHUNK = 8


def im2col(
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
    the work: each call takes Python's lock again.
    """
    xp = np.ascontiguousarray(xp)
    b, _, _, c = xp.shape
    s_img, s_row, s_pix, s_val = xp.strides
    if c < FEW_CHANNELS:
        shape = (kh, kw, c, b, ho, wo)
        strides = (s_row, s_pix, s_val, s_img, sh * s_row, sw * s_pix)
    else:  # runs of kw*C values: s_val steps through a kernel row's pixels too
        shape = (b, ho, wo, kh, kw * c)
        strides = (s_img, sh * s_row, sw * s_pix, s_row, s_val)
    # A view of xp's memory from the corner (top, left), made by the ndarray
    # constructor rather than as_strided, which does the same in Python.
    corner = top * s_row + left * s_pix
    fields = np.ndarray(shape, xp.dtype, buffer=xp, offset=corner, strides=strides)
    cols = memory.scratch(name, shape, xp.dtype)
    np.copyto(cols, fields)
    if c < FEW_CHANNELS:
        return cols.reshape(kh * kw * c, b * ho * wo).T
    return cols.reshape(b * ho * wo, kh * kw * c)


def _check_groups(x: np.ndarray, weight: np.ndarray, groups: int) -> None:
    """ValueError unless C and O split into `groups` and weight is (O, C/groups, kh, kw)."""
    c, (o, cg) = x.shape[1], weight.shape[:2]
    if groups < 1 or c % groups or o % groups or cg * groups != c:
        raise ValueError(
            f"conv2d groups={groups} does not fit x of shape {x.shape} "
            f"and weight of shape {weight.shape} (O, C/groups, kh, kw)"
        )


@with_single_threaded_blas
def conv2d_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: Pair = (1, 1),
    padding: Pair = (0, 0),
    groups: int = 1,
) -> tuple[np.ndarray, tuple]:
    """y = conv2d(x): x (N, C, H, W), weight (O, C/G, kh, kw), bias (O,) or None -> (N, O, Ho, Wo).

    x and weight share one float dtype; G = groups. Returns (y, cache), y an
    NCHW view of channels-last memory. Raises ValueError when the kernel does
    not fit the padded input, or the channels do not split into `groups`.
    """
    _check_groups(x, weight, groups)
    (sh, sw), (ph, pw) = as_pair(stride, "stride"), as_pair(padding, "padding")
    o, _, kh, kw = weight.shape
    ho, wo = output_size(x.shape[2], kh, sh, ph), output_size(x.shape[3], kw, sw, pw)
    x_cl = to_channels_last(x)
    cache = (x_cl, weight, bias is not None, (sh, sw), (ph, pw), groups)
    if groups != 1:
        y = grouped_forward(x_cl, weight, bias, ((sh, sw), (ph, pw)), groups)
        return from_channels_last(y), cache
    n = x_cl.shape[0]
    # (O, C, kh, kw) -> (kh*kw*C, O), matching the (i, j, channel) order of cols.
    w_mat = weight.transpose(2, 3, 1, 0).reshape(-1, o)
    y = memory.empty((n, ho, wo, o), dtype=weight.dtype)

    def run(rows: range) -> None:
        cols = im2col(padded(x_cl[rows.start : rows.stop], ph, pw), kh, kw, sh, sw, ho, wo)
        out = y[rows.start : rows.stop].reshape(-1, o)
        np.matmul(cols, w_mat, out=out)
        if bias is not None:
            out += bias

    per_image = ho * wo * w_mat.shape[0] * y.itemsize  # the cols matrix
    parallel_map(run, chunk_ranges(n, per_image, max_items=MAX_IMAGES_PER_CHUNK))
    return from_channels_last(y), cache


@with_single_threaded_blas
def conv2d_backward(
    dy: np.ndarray, cache: tuple, need_input_grad: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """dy (N, O, Ho, Wo) -> (dx (N, C, H, W), dweight (O, C/G, kh, kw), dbias (O,) or None).

    dy in the weight's dtype. With need_input_grad=False, dx is not computed
    and None stands in its place. Raises ValueError when dy is not (N, O, Ho, Wo).
    """
    x_cl, weight, has_bias, (sh, sw), (ph, pw), groups = cache
    (n, h, w, _), (o, _, kh, kw) = x_cl.shape, weight.shape
    ho, wo = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
    check_shape(dy, (n, o, ho, wo), "conv2d_backward: dy")
    dy_cl = to_channels_last(dy)
    if groups != 1:
        geometry = ((sh, sw), (ph, pw))
        dx, dweight = grouped_backward(x_cl, dy_cl, weight, geometry, groups, need_input_grad)
    elif need_input_grad and (sh, sw) != (1, 1):
        dx, dweight = _strided_input_and_weight_grads(x_cl, dy_cl, weight, (sh, sw), (ph, pw))
    elif need_input_grad:
        dx, dweight = _input_and_weight_grads(x_cl, dy_cl, weight, (sh, sw), (ph, pw))
    else:
        dx, dweight = None, _weight_grad(x_cl, dy_cl, weight, (sh, sw), (ph, pw))
    dbias = None
    if has_bias:
        dy_rows = dy_cl.reshape(-1, o)
        dbias = np.ones(len(dy_rows), dtype=dy_rows.dtype) @ dy_rows
    return dx, dweight, dbias


def _chunk_weight_grad(
    x_chunk: np.ndarray,
    dy_chunk: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """(dL/dW of a chunk of images as (O, kh*kw*C) = cols^T @ dy, dy as (rows, O)),
    from the forward's cols matrix of channels-last `x_chunk` (B, H, W, C) and
    `dy_chunk` (B, Ho, Wo, O)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    _, ho, wo, o = dy_chunk.shape
    cols = im2col(padded(x_chunk, ph, pw), kh, kw, sh, sw, ho, wo)
    dy_2d = dy_chunk.reshape(-1, o)
    # The same product either way; BLAS runs the first orientation faster when
    # cols is the transposed few-channel matrix (benchmarks/README.md). np.dot,
    # not @: matmul keeps the GIL for products of under 512 values (a 16x9
    # weight gradient), which would run the chunks one at a time.
    if cols.flags.f_contiguous:
        return np.dot(cols.T, dy_2d).T, dy_2d
    return np.dot(dy_2d.T, cols), dy_2d


def _weight_grad(
    x_cl: np.ndarray,
    dy_cl: np.ndarray,
    weight: np.ndarray,
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> np.ndarray:
    """dL/dW (O, C, kh, kw) = cols^T @ dy, summed over chunks of images."""
    (n, _, _, c), (o, _, kh, kw) = x_cl.shape, weight.shape
    _, ho, wo, _ = dy_cl.shape

    def chunk(rows: range) -> np.ndarray:
        sl = slice(rows.start, rows.stop)
        return _chunk_weight_grad(x_cl[sl], dy_cl[sl], (kh, kw), stride, padding)[0]

    per_image = ho * wo * kh * kw * c * x_cl.itemsize  # cols
    chunks = chunk_ranges(n, per_image, max_items=MAX_IMAGES_PER_CHUNK)
    dw = sum(parallel_map(chunk, chunks), np.zeros((o, kh * kw * c), x_cl.dtype))
    return dw.reshape(o, kh, kw, c).transpose(0, 3, 1, 2)


def _input_and_weight_grads(
    x_cl: np.ndarray,
    dy_cl: np.ndarray,
    weight: np.ndarray,
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """dL/dx (an NCHW view of channels-last memory) and dL/dW (O, C, kh, kw), both from
    the column matrix of the spread output gradient (see the module docstring)."""
    ph, pw = padding
    (n, h, w, c), (o, _, kh, kw) = x_cl.shape, weight.shape
    dtype = x_cl.dtype
    dx = memory.empty((n, h, w, c), dtype=dtype)
    # Flipped kernel with in/out swapped: (O, C, kh, kw) -> (kh*kw*O, C).
    w_flip = weight[:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(-1, c)

    def chunk(rows: range) -> np.ndarray:
        """This chunk's dL/dx, and its dL/dW as (C, kh*kw*O) of the flipped kernel."""
        sl = slice(rows.start, rows.stop)
        spread = spread_by_stride(dy_cl[sl], (kh, kw), stride, padding, (h, w))
        dcols = im2col(spread, kh, kw, 1, 1, h, w, top=ph, left=pw, name="dcols")
        np.matmul(dcols, w_flip, out=dx[sl].reshape(-1, c))
        # Row (b, p, q) of dcols holds the dy values that input pixel (p, q)
        # fed, at the flipped kernel's offsets, so its product with the input
        # is dL/dW too (no im2col of the input needed):
        #   dW[o, c, kh-1-i, kw-1-j] = sum_{b,p,q} x[b, p, q, c] * dcols[(b, p, q), (i, j, o)]
        return np.dot(x_cl[sl].reshape(-1, c).T, dcols)

    per_image = h * w * kh * kw * o * np.dtype(dtype).itemsize  # dcols
    chunks = chunk_ranges(n, per_image, max_items=MAX_IMAGES_PER_CHUNK)
    dw_flip = sum(parallel_map(chunk, chunks), np.zeros_like(w_flip.T))
    dweight = dw_flip.reshape(c, kh, kw, o)[:, ::-1, ::-1].transpose(3, 0, 1, 2)
    return from_channels_last(dx), dweight


def _strided_input_and_weight_grads(
    x_cl: np.ndarray,
    dy_cl: np.ndarray,
    weight: np.ndarray,
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """dL/dx (an NCHW view of channels-last memory) and dL/dW (O, C, kh, kw) of a strided
    conv: cols^T @ dy, and col2im of dcols = dy @ W^T (see the module docstring)."""
    (sh, sw), (ph, pw) = stride, padding
    (n, h, w, c), (o, _, kh, kw) = x_cl.shape, weight.shape
    _, ho, wo, _ = dy_cl.shape
    dx = memory.empty((n, h, w, c), dtype=x_cl.dtype)
    # (O, C, kh, kw) -> (O, kh*kw*C): a row of dy times it is a receptive field's gradient.
    w_rows = weight.transpose(0, 2, 3, 1).reshape(o, -1)

    def chunk(rows: range) -> np.ndarray:
        """This chunk's dL/dx, and its dL/dW as (O, kh*kw*C)."""
        sl = slice(rows.start, rows.stop)
        dw, dy_2d = _chunk_weight_grad(x_cl[sl], dy_cl[sl], (kh, kw), stride, padding)
        b = rows.stop - rows.start
        dcols = memory.scratch("dcols", (b * ho * wo, kh * kw * c), x_cl.dtype)
        np.dot(dy_2d, w_rows, out=dcols)
        fields = dcols.reshape(b, ho, wo, kh, kw, c)
        dxp = memory.scratch("dx_padded", (b, h + 2 * ph, w + 2 * pw, c), x_cl.dtype)
        dxp.fill(0)
        for i in range(kh):
            for j in range(kw):
                dxp[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw] += fields[
                    :, :, :, i, j
                ]
        dx[sl] = dxp[:, ph : ph + h, pw : pw + w]
        return dw

    per_image = ho * wo * kh * kw * c * x_cl.itemsize * 2  # cols and dcols
    chunks = chunk_ranges(n, per_image, max_items=MAX_IMAGES_PER_CHUNK)
    dw = sum(parallel_map(chunk, chunks), np.zeros((o, kh * kw * c), x_cl.dtype))
    return from_channels_last(dx), dw.reshape(o, kh, kw, c).transpose(0, 3, 1, 2)
