"""Fast grouped and depthwise 2-D convolution: `npcnn.kernels.conv` for groups > 1.

Shapes as in the reference (`npcnn.nn.functional.conv`): x (N, C, H, W),
weight (O, C/G, kh, kw), y (N, O, Ho, Wo); output channel o belongs to group
g = o // (O/G) and sees only input channels g*C/G ... (g+1)*C/G - 1.

Grouped (C/G > 1): the same algorithm as groups=1 (see `npcnn.kernels.conv`),
with every matrix split by group and one batched matmul (G GEMMs in one
NumPy call) in place of each GEMM. The im2col copy puts the group axis
first, (G, rows, kh*kw*C/G), so that each group's matrix is contiguous:

    forward:  Y_g  = cols_g @ W_g                         (rows, O/G)
    dx:       dx_g = dcols_g @ flip(W)_g                  dcols from dy spread by the stride
    dW:       flip(dW)_g = x_g^T @ dcols_g   (or dW_g = dy_g^T @ cols_g without dx)

Depthwise (C/G = 1, O = m*C with m filters per channel): a GEMM per channel
would multiply matrices one column wide. The sum over the kernel is instead
taken directly, one shifted strided slice of the padded input per offset:

    y[n, a, b, c*m + k]   = bias + sum_{i,j} xp[n, a*sh + i, b*sw + j, c] * w[c*m + k, 0, i, j]
    dxp[n, a*sh + i, b*sw + j, c] += sum_k dy[n, a, b, c*m + k] * w[c*m + k, 0, i, j]
    dW[c*m + k, 0, i, j]  = sum_{n,a,b} xp[n, a*sh + i, b*sw + j, c] * dy[n, a, b, c*m + k]

(kh*kw vectorised passes over the batch instead of kh*kw*C tiny products).
With m > 1 the input's channels are first repeated m times, so that every
pass runs over the O output channels, contiguous in channels-last memory.
Both work in chunks of images spread over the cores, channels-last inside.
"""

from __future__ import annotations

import numpy as np

from npcnn.kernels.layout import from_channels_last, padded, spread_by_stride
from npcnn.runtime import memory
from npcnn.runtime.threads import chunk_ranges, parallel_map

# Chunks of at most this many images, as in `npcnn.kernels.conv`.
MAX_IMAGES_PER_CHUNK = 8
# The depthwise passes are elementwise, with no GEMM whose operands must stay
# in cache: bigger chunks (still within chunk_ranges' few MB) mean fewer
# NumPy calls, each of which takes the GIL again.
MAX_DEPTHWISE_IMAGES_PER_CHUNK = 32

Geometry = tuple[tuple[int, int], tuple[int, int]]  # (stride, padding)


def grouped_im2col(
    xp: np.ndarray,
    groups: int,
    kh: int,
    kw: int,
    stride: tuple[int, int],
    out_size: tuple[int, int],
    corner: tuple[int, int] = (0, 0),
    name: str = "gcols",
) -> np.ndarray:
    """Receptive fields of channels-last `xp` (B, Hp, Wp, C) per group: (G, B*ho*wo, kh*kw*C/G).

    Row (b, a, c) of group g holds xp[b, top + a*sh + i, left + c*sw + j, g*C/G:(g+1)*C/G]
    for every (i, j), in (i, j, channel) order; (top, left) = corner. One copy
    of a strided view of xp, into the thread's scratch buffer `name`.
    """
    xp = np.ascontiguousarray(xp)
    b, _, _, c = xp.shape
    (sh, sw), (ho, wo), cg = stride, out_size, c // groups
    s_img, s_row, s_pix, s_val = xp.strides
    shape = (groups, b, ho, wo, kh, kw, cg)
    strides = (cg * s_val, s_img, sh * s_row, sw * s_pix, s_row, s_pix, s_val)
    offset = corner[0] * s_row + corner[1] * s_pix
    fields = np.ndarray(shape, xp.dtype, buffer=xp, offset=offset, strides=strides)
    cols = memory.scratch(name, shape, xp.dtype)
    np.copyto(cols, fields)
    return cols.reshape(groups, b * ho * wo, kh * kw * cg)


def _by_group(a: np.ndarray, groups: int) -> np.ndarray:
    """Channels-last (B, H, W, C) as a (G, B*H*W, C/G) view: group g's channels of every pixel."""
    return a.reshape(-1, groups, a.shape[-1] // groups).transpose(1, 0, 2)


def grouped_forward(
    x_cl: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, geometry: Geometry, groups: int
) -> np.ndarray:
    """y (N, Ho, Wo, O) channels-last from x_cl (N, H, W, C); weight (O, C/G, kh, kw)."""
    (sh, sw), (ph, pw) = geometry
    (n, h, w, _), (o, cg, kh, kw) = x_cl.shape, weight.shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if cg == 1:
        return _depthwise_forward(x_cl, weight, bias, geometry, (ho, wo))
    # (O, C/G, kh, kw) -> (G, kh*kw*C/G, O/G), matching the (i, j, channel) order of cols.
    w_mat = weight.reshape(groups, o // groups, cg, kh, kw).transpose(0, 3, 4, 2, 1)
    w_mat = np.ascontiguousarray(w_mat).reshape(groups, kh * kw * cg, o // groups)
    y = memory.empty((n, ho, wo, o), dtype=weight.dtype)

    def run(rows: range) -> None:
        xp = padded(x_cl[rows.start : rows.stop], ph, pw)
        cols = grouped_im2col(xp, groups, kh, kw, (sh, sw), (ho, wo))
        out = y[rows.start : rows.stop]
        np.matmul(cols, w_mat, out=_by_group(out, groups))
        if bias is not None:
            out += bias

    per_image = ho * wo * kh * kw * cg * groups * y.itemsize  # the cols matrices
    parallel_map(run, chunk_ranges(n, per_image, max_items=MAX_IMAGES_PER_CHUNK))
    return y


def grouped_backward(
    x_cl: np.ndarray,
    dy_cl: np.ndarray,
    weight: np.ndarray,
    geometry: Geometry,
    groups: int,
    need_input_grad: bool,
) -> tuple[np.ndarray | None, np.ndarray]:
    """(dx as an NCHW view of channels-last memory, or None; dweight (O, C/G, kh, kw))."""
    if weight.shape[1] == 1:
        return _depthwise_backward(x_cl, dy_cl, weight, geometry, need_input_grad)
    if need_input_grad:
        return _grouped_input_and_weight_grads(x_cl, dy_cl, weight, geometry, groups)
    return None, _grouped_weight_grad(x_cl, dy_cl, weight, geometry, groups)


def _grouped_weight_grad(
    x_cl: np.ndarray, dy_cl: np.ndarray, weight: np.ndarray, geometry: Geometry, groups: int
) -> np.ndarray:
    """dW_g = dy_g^T @ cols_g, summed over chunks of images."""
    (sh, sw), (ph, pw) = geometry
    (n, _, _, _), (o, cg, kh, kw) = x_cl.shape, weight.shape
    _, ho, wo, _ = dy_cl.shape

    def chunk(rows: range) -> np.ndarray:
        """This chunk's dW as (G, O/G, kh*kw*C/G)."""
        sl = slice(rows.start, rows.stop)
        cols = grouped_im2col(padded(x_cl[sl], ph, pw), groups, kh, kw, (sh, sw), (ho, wo))
        return np.matmul(_by_group(dy_cl[sl], groups).transpose(0, 2, 1), cols)

    per_image = ho * wo * kh * kw * cg * groups * x_cl.itemsize  # cols
    chunks = chunk_ranges(n, per_image, max_items=MAX_IMAGES_PER_CHUNK)
    zero = np.zeros((groups, o // groups, kh * kw * cg), x_cl.dtype)
    dw = sum(parallel_map(chunk, chunks), zero)
    return dw.reshape(o, kh, kw, cg).transpose(0, 3, 1, 2)


def _grouped_input_and_weight_grads(
    x_cl: np.ndarray, dy_cl: np.ndarray, weight: np.ndarray, geometry: Geometry, groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """dx and dW from the grouped column matrix of the spread dy (as `npcnn.kernels.conv`)."""
    (sh, sw), (ph, pw) = geometry
    (n, h, w, c), (o, cg, kh, kw) = x_cl.shape, weight.shape
    og, dtype = o // groups, x_cl.dtype
    dx = memory.empty((n, h, w, c), dtype=dtype)
    # Flipped kernel, in/out swapped per group: (O, C/G, kh, kw) -> (G, kh*kw*O/G, C/G).
    w_flip = weight.reshape(groups, og, cg, kh, kw)[..., ::-1, ::-1].transpose(0, 3, 4, 1, 2)
    w_flip = np.ascontiguousarray(w_flip).reshape(groups, kh * kw * og, cg)

    def chunk(rows: range) -> np.ndarray:
        """This chunk's dx, and its flipped dW as (G, C/G, kh*kw*O/G)."""
        sl = slice(rows.start, rows.stop)
        spread = spread_by_stride(dy_cl[sl], (kh, kw), (sh, sw), (ph, pw), (h, w))
        dcols = grouped_im2col(spread, groups, kh, kw, (1, 1), (h, w), (ph, pw), "dgcols")
        np.matmul(dcols, w_flip, out=_by_group(dx[sl], groups))
        return np.matmul(_by_group(x_cl[sl], groups).transpose(0, 2, 1), dcols)

    per_image = h * w * kh * kw * o * np.dtype(dtype).itemsize  # dcols
    chunks = chunk_ranges(n, per_image, max_items=MAX_IMAGES_PER_CHUNK)
    dw_flip = sum(parallel_map(chunk, chunks), np.zeros((groups, cg, kh * kw * og), dtype))
    dweight = dw_flip.reshape(groups, cg, kh, kw, og)[:, :, ::-1, ::-1]
    dweight = dweight.transpose(0, 4, 1, 2, 3).reshape(o, cg, kh, kw)
    return from_channels_last(dx), dweight


def _windows(xp: np.ndarray, i: int, j: int, stride: tuple[int, int], size: tuple[int, int]):
    """xp[:, i + a*sh, j + b*sw] for every output pixel (a, b): a strided view (B, ho, wo, C)."""
    (sh, sw), (ho, wo) = stride, size
    return xp[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]


def _depthwise_forward(
    x_cl: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    geometry: Geometry,
    size: tuple[int, int],
) -> np.ndarray:
    """y (N, Ho, Wo, O) = the sum over (i, j) of shifted input slices times w[:, 0, i, j]."""
    stride, (ph, pw) = geometry
    (n, _, _, c), (o, _, kh, kw) = x_cl.shape, weight.shape
    w_dw = _depthwise_weight(weight)
    y = memory.empty((n, *size, o), dtype=weight.dtype)

    def run(rows: range) -> None:
        xp = _repeated(padded(x_cl[rows.start : rows.stop], ph, pw), o // c)
        out = y[rows.start : rows.stop]
        term = memory.scratch("dw_term", out.shape, out.dtype)
        for i in range(kh):
            for j in range(kw):
                win = _windows(xp, i, j, stride, size)
                np.multiply(win, w_dw[i, j], out=out if i == j == 0 else term)
                if i or j:
                    out += term
        if bias is not None:
            out += bias

    per_image = size[0] * size[1] * o * y.itemsize  # the product term
    parallel_map(run, chunk_ranges(n, per_image, max_items=MAX_DEPTHWISE_IMAGES_PER_CHUNK))
    return y


def _depthwise_weight(weight: np.ndarray) -> np.ndarray:
    """(O, 1, kh, kw) -> (kh, kw, O): w[i, j] multiplies the O channels of one input slice."""
    return np.ascontiguousarray(weight[:, 0].transpose(1, 2, 0))


def _repeated(xp: np.ndarray, m: int) -> np.ndarray:
    """Channels-last xp (B, H, W, C) with each channel repeated m times: (B, H, W, C*m), channel
    c*m + k holding x's channel c, so that output channel o reads input channel o of it.
    Elementwise passes then run over O contiguous values (m = 1: xp itself)."""
    return xp if m == 1 else np.repeat(xp, m, axis=3)


def _depthwise_backward(
    x_cl: np.ndarray,
    dy_cl: np.ndarray,
    weight: np.ndarray,
    geometry: Geometry,
    need_input_grad: bool,
) -> tuple[np.ndarray | None, np.ndarray]:
    """dx (an NCHW view of channels-last memory, or None) and dweight, slice by slice."""
    stride, (ph, pw) = geometry
    (n, h, w, c), (o, _, kh, kw) = x_cl.shape, weight.shape
    _, ho, wo, _ = dy_cl.shape
    w_dw = _depthwise_weight(weight)
    dx = memory.empty((n, h, w, c), dtype=x_cl.dtype) if need_input_grad else None

    def chunk(rows: range) -> np.ndarray:
        """This chunk's dW as (kh, kw, O); its dx written into dx."""
        sl = slice(rows.start, rows.stop)
        xp = _repeated(padded(x_cl[sl], ph, pw), o // c)
        dy = dy_cl[sl]
        term = memory.scratch("dw_term", dy.shape, dy.dtype)
        ones = np.ones(term.size // o, dy.dtype)  # sums over pixels as one BLAS gemv
        dw = np.empty((kh, kw, o), dy.dtype)
        dxp = memory.scratch("dw_dxp", xp.shape, xp.dtype) if need_input_grad else None
        if dxp is not None:
            dxp.fill(0)
        for i in range(kh):
            for j in range(kw):
                np.multiply(_windows(xp, i, j, stride, (ho, wo)), dy, out=term)
                np.dot(ones, term.reshape(-1, o), out=dw[i, j])
                if dxp is not None:
                    np.multiply(dy, w_dw[i, j], out=term)
                    _windows(dxp, i, j, stride, (ho, wo))[...] += term
        if dx is not None:  # the m copies of each input channel add up
            inner = dxp[:, ph : ph + h, pw : pw + w]
            dx[sl] = inner.reshape(*inner.shape[:3], c, o // c).sum(axis=4)
        return dw

    per_image = ho * wo * o * x_cl.itemsize  # the product term
    chunks = chunk_ranges(n, per_image, max_items=MAX_DEPTHWISE_IMAGES_PER_CHUNK)
    dw = sum(parallel_map(chunk, chunks), np.zeros((kh, kw, o), x_cl.dtype))
    dweight = dw.transpose(2, 0, 1).reshape(o, 1, kh, kw)
    return (None if dx is None else from_channels_last(dx)), dweight
