"""Fused kernels: several layers' maths in one pass, for the planner's table (`npcnn.nn.fusion`).

Each computes exactly the chain of reference kernels it replaces (the tests
hold it to them), with the arguments of its first layer's kernel followed by
the next layer's; the backward returns the gradients of the whole chain.

batch_norm_relu_max_pool2d: relu(max_pool(batch_norm(x))), which also equals
max_pool(relu(batch_norm(x))). This block ends the first stage of most small
CNNs, on its biggest images, and each of its layers is a few cheap
operations per value, so their cost is moving memory. Fused, the full-size
image is read twice forward (statistics, then the windows) and the
full-size gradient is written once backward.

Why it is exact. Per channel, batch norm is an affine map

    z = s * x + t    with s = weight / sqrt(var + eps),  t = bias - s * mean,

and an affine map with s > 0 is increasing, so the window's maximum of z is
z at the window's maximum of x. With s < 0 it is decreasing, and the
maximum of z is at the minimum of x, the maximum of -x. So the pool runs
over sign(s) * x, batch norm and ReLU are applied to each window's winner
only, and the output is the one the layers give one by one, bit for bit
given the same statistics: the winner goes through the same floating-point
operations, and rounding is monotone, so its z is the largest rounded z of
the window. (When training, the statistics' sums are added in chunks of
another size than batch norm's own.) Ties go to the first position in
row-major order, as in max pooling. When training, channels with weight = 0
(s = 0, every z equal) are left to the kernels one by one, where the first
position of the window wins the tie of z; so are an empty batch and a
backward in inference mode. Inference needs no winner for a backward, so it
runs fused whatever the weights (a tie of z may go to any of its positions).

Backward, with dp the gradient at the output: each window's gradient goes
to its winner's z when z > 0 (ReLU) and nowhere else, so batch norm's sums
run over the pooled arrays alone:

    dbias = sum of dp,   dweight = invstd * sum of dp * (winner - mean)

and its input gradient is batch norm's g * dz - shift - slope * (x - mean)
(`batchnorm.subtract_mean_terms`), with dz = dp at each winner and 0 elsewhere.

batch_norm_relu: relu(batch_norm(x)) in one pass over each chunk; backward
takes the ReLU's mask from the output (y > 0) and x - mean from the input,
so forward writes only the output, not also the mask and the centred copy.

flatten_dense: dense(flatten(x)). For channels-last images, the dense
kernel takes them as they lie in memory, (H, W, C) order, and the weight's
columns are put in that order instead (a copy of the small weight), rather
than copying the activations into (C, H, W) order.
"""

from __future__ import annotations

import numpy as np

from npcnn.kernels import batchnorm as bn
from npcnn.kernels.activations import relu_backward, relu_forward
from npcnn.kernels.layout import from_channels_last, is_channels_last, to_channels_last
from npcnn.kernels.linear import dense_backward, dense_forward, flatten_backward, flatten_forward
from npcnn.kernels.pooling import (
    geometry,
    max_pool2d_backward,
    max_pool2d_relu_forward,
    route_to_winners,
    window_maxima,
    winner_dtype,
)
from npcnn.runtime import memory
from npcnn.runtime.threads import (
    STREAM_CHUNK_BYTES,
    chunk_ranges,
    parallel_map,
    with_single_threaded_blas,
)
from npcnn.shapes import Pair

# --- batch norm, ReLU and max pooling ---------------------------------------------------


@with_single_threaded_blas
def batch_norm_relu_max_pool2d_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    training: bool,
    momentum: float | None,
    eps: float,
    num_batches_tracked: int,
    kernel_size: Pair,
    stride: Pair | None = None,
    padding: Pair = 0,
    *,
    need_cache: bool = True,
) -> tuple[np.ndarray, tuple | None, np.ndarray, np.ndarray]:
    """y = relu(max_pool2d(batch_norm(x))): x (N, C, H, W) in weight's dtype -> (N, C, Ho, Wo).

    Arguments as `batch_norm_forward`'s, then `max_pool2d_forward`'s. Returns
    (y, cache, new running_mean, new running_var), as batch_norm_forward.
    """
    n, _, h, w = x.shape
    inference = not need_cache
    if not (n and (inference or (training and weight.all() and n * h * w >= 2))):
        y, norm_cache, *running = bn.batch_norm_forward(
            x, weight, bias, running_mean, running_var, training, momentum, eps,
            num_batches_tracked, need_cache=need_cache,
        )  # fmt: skip
        y, pool_cache = max_pool2d_relu_forward(
            y, kernel_size, stride, padding, need_cache=need_cache
        )
        cache = (False, norm_cache, pool_cache) if need_cache else None
        return y, cache, *running
    pool = geometry(x.shape, kernel_size, stride, padding)
    x_cl = to_channels_last(x)
    winners, codes, sums = _window_winners(x_cl, weight, pool, training, need_cache)
    if training:
        mean, var, m = bn.statistics_from_sums(*sums, n * h * w, weight.dtype)
        running_mean, running_var = bn.updated_running_statistics(
            running_mean, running_var, mean, var, m, momentum, num_batches_tracked
        )
    else:
        mean, var = running_mean, running_var.astype(np.float64)
    invstd = bn.inverse_std(var, eps, weight.dtype)
    y = _normalise_winners(winners, weight, bias, mean, invstd, training)
    cache = (True, x_cl, mean, invstd, winners, codes, y, weight, pool) if need_cache else None
    return from_channels_last(y), cache, running_mean, running_var


def _window_winners(
    x_cl: np.ndarray, weight: np.ndarray, pool: tuple, training: bool, need_cache: bool
) -> tuple[np.ndarray, np.ndarray | None, tuple | None]:
    """Each window's winner of x (the x whose batch-normalised z is the window's maximum),
    the winning offsets (with need_cache), and when training the statistics' rough
    centre and sums of d and d^2, all in one pass over channels-last x."""
    (n, h, w, c), dtype = x_cl.shape, x_cl.dtype
    kernel, stride, (ph, pw), (ho, wo) = pool
    x2 = x_cl.reshape(n, -1)
    # The sign of s is the weight's: the windows can be found before the statistics.
    sign = np.where(weight < 0, -1, 1).astype(dtype)
    flip, padded = bool((sign < 0).any()), ph > 0 or pw > 0
    if training:
        rough, centre = bn.rough_centre(x2, h * w, c)
    winners = memory.empty((n, ho, wo, c), dtype)
    codes = memory.empty((n, ho, wo, c), winner_dtype(kernel)) if need_cache else None

    def run(rows: range) -> tuple[np.ndarray, np.ndarray] | None:
        sl = slice(rows.start, rows.stop)
        sums = bn.chunk_moment_sums(x2[sl], c, centre) if training else None
        xb = x_cl[sl]
        if padded or flip:  # sign * x, padded with -inf, in a per-thread buffer
            signed = memory.scratch("signed", (len(rows), h + 2 * ph, w + 2 * pw, c), dtype)
            if padded:
                signed.fill(-np.inf)
            np.multiply(xb, sign, out=signed[:, ph : ph + h, pw : pw + w])
            xb = signed
        window_maxima(xb, winners[sl], None if codes is None else codes[sl], kernel, stride)
        if flip:
            winners[sl] *= sign
        return sums

    parts = parallel_map(run, chunk_ranges(n, x_cl[:1].nbytes * 2 + winners[:1].nbytes))
    if not training:
        return winners, codes, None
    return winners, codes, (rough, sum(p[0] for p in parts), sum(p[1] for p in parts))


def _normalise_winners(
    winners: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    mean: np.ndarray,
    invstd: np.ndarray,
    training: bool,
) -> np.ndarray:
    """relu(z) at the winners (B, Ho, Wo, C), computed as batch norm computes z."""
    _, ho, wo, _ = winners.shape
    return _affine_relu(winners, mean, weight * invstd, bias, training, (ho, wo, 1))[0]


def _affine_relu(
    x: np.ndarray,
    mean: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
    training: bool,
    reps: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """(relu(z), mean tiled) for z = batch norm of x with per-channel `mean`, `scale`
    (weight * invstd) and `bias`, computed in batch norm's own order of operations,
    so that z is the value the layers one by one give; `reps` tiles the per-channel
    vectors to one row of x (NumPy then runs along whole rows)."""
    mean_t, scale_t = np.tile(mean, reps), np.tile(scale, reps)
    bias_t = np.tile(bias if training else bias - mean * scale, reps)
    zeros = np.zeros_like(mean_t)  # NumPy's loops run faster on two arrays than on z and 0
    y = memory.empty(x.shape, x.dtype)

    def run(rows: range) -> None:
        sl = slice(rows.start, rows.stop)
        yb = y[sl]
        if training:  # (x - mean) * scale + bias
            np.subtract(x[sl], mean_t, out=yb)
            yb *= scale_t
        else:  # x * scale + (bias - mean * scale)
            np.multiply(x[sl], scale_t, out=yb)
        yb += bias_t
        np.maximum(yb, zeros, out=yb)

    parallel_map(run, chunk_ranges(len(y), 2 * y[:1].nbytes, STREAM_CHUNK_BYTES))
    return y, mean_t


@with_single_threaded_blas
def batch_norm_relu_max_pool2d_backward(
    dy: np.ndarray, cache: tuple
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dy (N, C, Ho, Wo) in weight's dtype -> (dx (N, C, H, W), dweight (C,), dbias (C,))."""
    if not cache[0]:  # run as the kernels one by one
        _, norm_cache, pool_cache = cache
        return bn.batch_norm_backward(max_pool2d_backward(dy, pool_cache), norm_cache)
    _, x_cl, mean, invstd, winners, codes, y, weight, pool = cache
    (kernel, stride, (ph, pw), _), (n, h, w, c) = pool, x_cl.shape
    dy_cl = to_channels_last(dy)
    if dy_cl.shape != codes.shape:
        raise ValueError(f"batch_norm_relu_max_pool2d_backward: dy has shape {dy.shape}")
    _, ho, wo, _ = codes.shape
    # The gradient that reaches z: dp where the ReLU let it through (y > 0), else 0.
    dz = memory.empty(dy_cl.shape, dy_cl.dtype)
    mean_row = np.tile(mean, ho * wo)

    def gradient_sums(rows: range) -> tuple[np.ndarray, np.ndarray]:
        sl, b = slice(rows.start, rows.stop), len(rows)
        np.multiply(dy_cl[sl], y[sl] > 0, out=dz[sl])
        return bn.chunk_moment_sums(
            winners[sl].reshape(b, -1), c, centre=mean_row, weights=dz[sl].reshape(b, -1)
        )

    sums = parallel_map(gradient_sums, chunk_ranges(n, 4 * dz[:1].nbytes, 2 << 20))
    dweight, dbias, g, shift, slope = bn.gradient_terms(
        sum(s[0] for s in sums), sum(s[1] for s in sums), invstd, n * h * w, weight
    )
    # Windows that tile the input exactly put every position in one window.
    tiled = stride == kernel and (ph, pw) == (0, 0) and (h, w) == (ho * kernel[0], wo * kernel[1])
    dxp = memory.empty((n, h + 2 * ph, w + 2 * pw, c), x_cl.dtype)
    mean_t, shift_t, slope_t = (np.tile(v, (h, w, 1)) for v in (mean, shift, slope))

    def run(rows: range) -> None:
        sl = slice(rows.start, rows.stop)
        dxb = dxp[sl]
        if not tiled:
            dxb.fill(0)
        # g * dz: g * dp at each winner, 0 elsewhere.
        route_to_winners(dxb, np.multiply(dz[sl], g), codes[sl], kernel, stride, add=not tiled)
        inner = dxb[:, ph : ph + h, pw : pw + w]
        centred = np.subtract(
            x_cl[sl], mean_t, out=memory.scratch("centred", inner.shape, inner.dtype)
        )
        bn.subtract_mean_terms(inner, centred, shift_t, slope_t, overwrite_centred=True)

    parallel_map(run, chunk_ranges(n, 3 * x_cl[:1].nbytes + 2 * dz[:1].nbytes))
    return from_channels_last(dxp[:, ph : ph + h, pw : pw + w]), dweight, dbias


# --- batch norm and ReLU -----------------------------------------------------------------


@with_single_threaded_blas
def batch_norm_relu_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    training: bool,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    num_batches_tracked: int = 0,
    *,
    need_cache: bool = True,
) -> tuple[np.ndarray, tuple | None, np.ndarray, np.ndarray]:
    """y = relu(batch_norm(x)): x (N, C) or (N, C, H, W) in weight's dtype -> y of x's shape.

    Arguments and results as `batch_norm_forward`'s.
    """
    if (not training and need_cache) or len(x) == 0:  # run as the kernels one by one
        y, norm_cache, *running = bn.batch_norm_forward(
            x, weight, bias, running_mean, running_var, training, momentum, eps,
            num_batches_tracked, need_cache=need_cache,
        )  # fmt: skip
        y, relu_cache = relu_forward(y, need_cache=need_cache)
        return y, (False, norm_cache, relu_cache) if need_cache else None, *running
    x2, reps = bn.to_rows(x)
    mean, var, running_mean, running_var = bn.statistics(
        x2, reps, weight.dtype, (running_mean, running_var), training, momentum, num_batches_tracked
    )
    invstd = bn.inverse_std(var, eps, weight.dtype)
    y, mean_t = _affine_relu(x2, mean, weight * invstd, bias, training, reps)
    cache = (True, x2, reps, mean_t, invstd, y, weight) if training and need_cache else None
    return bn.from_rows(y, x.shape), cache, running_mean, running_var


@with_single_threaded_blas
def batch_norm_relu_backward(
    dy: np.ndarray, cache: tuple
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dy of x's shape in weight's dtype -> (dx of x's shape, dweight (C,), dbias (C,))."""
    if not cache[0]:  # run as the kernels one by one
        _, norm_cache, relu_cache = cache
        return bn.batch_norm_backward(relu_backward(dy, relu_cache), norm_cache)
    _, x2, reps, mean_t, invstd, y, weight = cache
    c = len(weight)
    dy2, _ = bn.to_rows(dy)
    if dy2.shape != y.shape:
        raise ValueError(f"batch_norm_relu_backward: dy has shape {dy.shape}")
    dz = memory.empty_like(dy2)  # the gradient at batch norm's output

    def gradient_sums(rows: range) -> tuple[np.ndarray, np.ndarray]:
        sl = slice(rows.start, rows.stop)
        np.multiply(dy2[sl], y[sl] > 0, out=dz[sl])
        return bn.chunk_moment_sums(x2[sl], c, centre=mean_t, weights=dz[sl])

    chunks = chunk_ranges(len(x2), 3 * x2[:1].nbytes, STREAM_CHUNK_BYTES)
    sums = parallel_map(gradient_sums, chunks)
    dweight, dbias, g, shift, slope = bn.gradient_terms(
        sum(s[0] for s in sums), sum(s[1] for s in sums), invstd, len(x2) * reps, weight
    )
    g_t, shift_t, slope_t = (np.tile(v, reps) for v in (g, shift, slope))
    dx = dz  # overwritten chunk by chunk, each after its last use

    def run(rows: range) -> None:  # dx = g * dz - shift - slope * (x - mean)
        sl = slice(rows.start, rows.stop)
        centred = np.subtract(x2[sl], mean_t, out=memory.scratch("centred", dz[sl].shape, dz.dtype))
        dx[sl] *= g_t
        bn.subtract_mean_terms(dx[sl], centred, shift_t, slope_t, overwrite_centred=True)

    parallel_map(run, chunks)
    return bn.from_rows(dx, dy.shape), dweight, dbias


# --- flatten and dense ------------------------------------------------------------------


@with_single_threaded_blas
def flatten_dense_forward(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None
) -> tuple[np.ndarray, tuple]:
    """y = dense(flatten(x)): x (N, d1, ...), weight (out, d1*...) -> y (N, out).

    Returns (y, cache). Raises ValueError when x's features do not match the weight.
    """
    if x.ndim == 4 and x.shape[1] > 1 and is_channels_last(x):
        n, c, h, w = x.shape
        # The weight's columns from (C, H, W) to the images' (H, W, C) order.
        w_cl = weight.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)
        y, dense_cache = dense_forward(to_channels_last(x).reshape(n, h * w * c), w_cl, bias)
        return y, ((c, h, w), None, dense_cache)
    flat, flatten_cache = flatten_forward(x)  # (one channel: both orders are the same)
    y, dense_cache = dense_forward(flat, weight, bias)
    return y, (None, flatten_cache, dense_cache)


@with_single_threaded_blas
def flatten_dense_backward(
    dy: np.ndarray, cache: tuple, need_input_grad: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """dy (N, out) -> (dx of x's shape, or None with need_input_grad=False; dweight (out, in);
    dbias (out,) or None). dx of channels-last images is channels-last too."""
    chw, flatten_cache, dense_cache = cache
    dx, dweight, dbias = dense_backward(dy, dense_cache, need_input_grad)
    if chw is None:
        return (None if dx is None else flatten_backward(dx, flatten_cache)), dweight, dbias
    c, h, w = chw
    # The weight gradient's columns back from (H, W, C) to the weight's (C, H, W) order.
    dweight = dweight.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(len(dweight), -1)
    if dx is not None:
        dx = from_channels_last(dx.reshape(len(dx), h, w, c))
    return dx, dweight, dbias
