"""2-D convolution, written as the textbook writes it: im2col, one matrix product, a reshape.

Shapes: x (N, C, H, W), weight (O, C/G, kh, kw), bias (O,) or None,
y (N, O, Ho, Wo) with Ho = (H + 2*ph - kh) // sh + 1 (likewise Wo), where G is
the number of groups.

Forward (cross-correlation, as every deep-learning library computes it),
with xp = x zero-padded by (ph, pw):

    y[n, o, a, b] = bias[o]
                    + sum_{c, i, j} weight[o, c, i, j] * xp[n, g*C/G + c, a*sh + i, b*sw + j]

where g = o // (O/G) is the group of output channel o: each group of O/G
output channels sees only its own C/G input channels. G = 1 is the ordinary
convolution; G = C (with O a multiple of C) is the depthwise one.

im2col copies every receptive field into one row of a matrix, so that the sum
above becomes a matrix product:

    cols  = im2col(x)                      (N*Ho*Wo, C*kh*kw), row (n, a, b), column (c, i, j)
    W     = weight.reshape(O, C/G*kh*kw)   row o, column (c, i, j)
    Y     = cols @ W.T + bias              (N*Ho*Wo, O)
    y     = Y reshaped to (N, Ho, Wo, O), then moved to (N, O, Ho, Wo)

With G groups the product is taken group by group: group g's O/G rows of W
times the C/G*kh*kw columns of cols that hold group g's channels.

Backward, given dY = dL/dy moved and reshaped like Y (one group shown):

    dbias = sum over the rows of dY                    (O,)
    dW    = dY.T @ cols                                (O, C*kh*kw)
    dcols = dY @ W                                     (N*Ho*Wo, C*kh*kw)
    dx    = col2im(dcols)   each row's values added back to the pixels they came from
"""

from __future__ import annotations

import numpy as np

from npcnn.shapes import Pair, as_pair, check_shape, output_size


def im2col(
    x: np.ndarray, kh: int, kw: int, stride: Pair = 1, padding: Pair = 0, pad_value: float = 0.0
) -> np.ndarray:
    """Every (kh, kw) window of x (N, C, H, W) as a row: cols (N*Ho*Wo, C*kh*kw).

    cols[(n, a, b), (c, i, j)] = xp[n, c, a*sh + i, b*sw + j], xp being x padded
    with `pad_value` (0 for convolution, -inf for max pooling). One loop
    step per kernel offset (i, j) copies that offset of every window at once.
    """
    (sh, sw), (ph, pw) = as_pair(stride, "stride"), as_pair(padding, "padding")
    n, c, h, w = x.shape
    ho, wo = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=pad_value)
    cols = np.empty((n, c, kh, kw, ho, wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i : i + sh * ho : sh, j : j + sw * wo : sw]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(n * ho * wo, c * kh * kw)


def col2im(
    cols: np.ndarray,
    x_shape: tuple[int, int, int, int],
    kh: int,
    kw: int,
    stride: Pair = 1,
    padding: Pair = 0,
) -> np.ndarray:
    """The adjoint of im2col: cols (N*Ho*Wo, C*kh*kw) -> dx of shape x_shape (N, C, H, W).

    dxp[n, c, a*sh + i, b*sw + j] += cols[(n, a, b), (c, i, j)] for every window
    (a, b): a pixel shared by overlapping windows receives the sum of their
    values. The padding's share is dropped at the end.
    """
    (sh, sw), (ph, pw) = as_pair(stride, "stride"), as_pair(padding, "padding")
    n, c, h, w = x_shape
    ho, wo = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
    cols = cols.reshape(n, ho, wo, c, kh, kw).transpose(0, 3, 4, 5, 1, 2)
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i : i + sh * ho : sh, j : j + sw * wo : sw] += cols[:, :, i, j]
    return dxp[:, :, ph : ph + h, pw : pw + w]


def _group_slices(
    groups: int, cols_per_group: int, outs_per_group: int
) -> list[tuple[slice, slice]]:
    """(columns of cols, rows of W) of each group: group g owns the g-th block of each.

    cols's columns run over (c, i, j) with c outermost, so a group's C/G
    channels are one block of C/G*kh*kw consecutive columns.
    """
    return [
        (
            slice(g * cols_per_group, (g + 1) * cols_per_group),
            slice(g * outs_per_group, (g + 1) * outs_per_group),
        )
        for g in range(groups)
    ]


def conv2d_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: Pair = (1, 1),
    padding: Pair = (0, 0),
    groups: int = 1,
) -> tuple[np.ndarray, tuple]:
    """y = conv2d(x) as in the module docstring: x (N, C, H, W) -> y (N, O, Ho, Wo).

    Returns (y, cache); the cache (x's and y's shapes, cols, weight, stride,
    padding, groups, whether there is a bias) is what `conv2d_backward` needs.
    Raises ValueError when the channels do not split into `groups` or the
    kernel does not fit the padded input.
    """
    _check_conv_shapes(x, weight, bias, groups)
    n, _, h, w = x.shape
    o, c_g, kh, kw = weight.shape
    (sh, sw), (ph, pw) = as_pair(stride, "stride"), as_pair(padding, "padding")
    ho, wo = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
    cols = im2col(x, kh, kw, stride, padding)  # (N*Ho*Wo, C*kh*kw)
    w_mat = weight.reshape(o, c_g * kh * kw)  # (O, C/G*kh*kw)
    y_mat = np.empty((n * ho * wo, o), dtype=np.result_type(x, weight))
    # One pass per group; with groups=1, a single Y = cols @ W.T.
    for in_g, out_g in _group_slices(groups, c_g * kh * kw, o // groups):
        y_mat[:, out_g] = cols[:, in_g] @ w_mat[out_g].T  # (N*Ho*Wo, O/G)
    if bias is not None:
        y_mat += bias
    y = np.ascontiguousarray(y_mat.reshape(n, ho, wo, o).transpose(0, 3, 1, 2))
    return y, (x.shape, y.shape, cols, weight, stride, padding, groups, bias is not None)


def conv2d_backward(
    dy: np.ndarray, cache: tuple, need_input_grad: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """dy (N, O, Ho, Wo) -> (dx (N, C, H, W), dweight (O, C/G, kh, kw), dbias (O,) or None).

    dY = dy as (N*Ho*Wo, O); per group dW = dY.T @ cols and dcols = dY @ W;
    dx = col2im(dcols); dbias = dY summed over its rows (None without a bias).
    With need_input_grad=False, dx is None (a network's input needs no gradient).
    """
    x_shape, y_shape, cols, weight, stride, padding, groups, has_bias = cache
    check_shape(dy, y_shape, "conv2d_backward: dy")
    o, c_g, kh, kw = weight.shape
    dy_mat = dy.transpose(0, 2, 3, 1).reshape(-1, o)  # (N*Ho*Wo, O)
    w_mat = weight.reshape(o, c_g * kh * kw)
    dw_mat = np.empty_like(w_mat)
    dcols = np.empty_like(cols)
    for in_g, out_g in _group_slices(groups, c_g * kh * kw, o // groups):
        dw_mat[out_g] = dy_mat[:, out_g].T @ cols[:, in_g]  # (O/G, C/G*kh*kw)
        dcols[:, in_g] = dy_mat[:, out_g] @ w_mat[out_g]  # (N*Ho*Wo, C/G*kh*kw)
    dx = col2im(dcols, x_shape, kh, kw, stride, padding) if need_input_grad else None
    dbias = dy_mat.sum(axis=0) if has_bias else None
    return dx, dw_mat.reshape(weight.shape), dbias


def _check_conv_shapes(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, groups: int
) -> None:
    """Raise ValueError unless x is (N, C, H, W), weight (O, C/groups, kh, kw) with
    both C and O multiples of groups, and bias None or (O,)."""
    if x.ndim != 4 or weight.ndim != 4:
        raise ValueError(
            f"conv2d expects x (N, C, H, W) and weight (O, C/groups, kh, kw), "
            f"got shapes {x.shape} and {weight.shape}"
        )
    if groups < 1 or x.shape[1] % groups or weight.shape[0] % groups:
        raise ValueError(
            f"conv2d groups={groups} must divide the {x.shape[1]} input and "
            f"{weight.shape[0]} output channels"
        )
    if weight.shape[1] * groups != x.shape[1]:
        raise ValueError(
            f"conv2d weight of shape {weight.shape} with groups={groups} expects "
            f"{weight.shape[1] * groups} input channels, got x of shape {x.shape}"
        )
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"conv2d bias must have shape ({weight.shape[0]},), got {bias.shape}")
