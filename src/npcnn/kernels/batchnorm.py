"""Fast batch normalisation, and the statistics and backward formula that every batch-norm
kernel shares (this one and the fused ones in `fused.py`).

The maths is the reference's (`npcnn.nn.functional.batchnorm`): per channel,
over the M values of the batch, mu = mean(x), var = mean((x - mu)^2) (biased),
y = weight * (x - mu) / sqrt(var + eps) + bias, with PyTorch's running
statistics. Backward (training), with g = weight / sqrt(var + eps):

    dbias = sum(dy),  dweight = sum(dy * xhat)
    dx = g * dy - shift - slope * (x - mean),   shift = g * dbias / M,
                                                slope = g * dweight / (M * sqrt(var + eps))

which is the reference's g / M * (M * dy - dbias - xhat * dweight) with the
per-channel factors computed once. In inference, dx = g * dy.

How: the input is seen as a matrix of R rows of length L = reps * C in which
column j belongs to channel j % C (`to_rows`): (N, C) for (N, C) input, and
(N, H*W*C) for channels-last (N, C, H, W) memory. Per-channel vectors are
tiled to length L, so every NumPy operation runs along long contiguous rows.
The variance comes from sums of d = x - centre and d^2 in one pass over the
data, with the centre the first row's channel means: near the mean,
mean(d^2) - mean(d)^2 loses no digits. The sums are taken in the data's
dtype over a chunk's rows (a BLAS product) and added up in float64.

Synchronised batch norm (PyTorch's SyncBatchNorm): inside
`statistics_across(total)`, where `total` sums a float64 vector over the
processes of data-parallel training, every batch norm computes its
statistics over the union of the processes' batches. Each process sends its
count m_r, m_r * mean_r and m_r * (var_r + mean_r^2) per channel; their sums
give the global M, mean = S1 / M and var = S2 / M - mean^2 (float64), and M
is the count of the running variance's M / (M - 1). Backward, sum(dy) and
sum(dy * (x - mean)) are summed the same way for dx's shift and slope, while
dweight and dbias stay the process's own sums (the gradients' all-reduce
adds them up with every other parameter's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

from npcnn.kernels.layout import from_channels_last, to_channels_last
from npcnn.runtime import memory
from npcnn.runtime.threads import (
    STREAM_CHUNK_BYTES,
    chunk_ranges,
    parallel_map,
    with_single_threaded_blas,
)

# --- the layout ------------------------------------------------------------------------


def to_rows(x: np.ndarray) -> tuple[np.ndarray, int]:
    """(N, C) -> itself, reps 1; (N, C, H, W) -> its channels-last (N, H*W*C) rows, reps H*W."""
    if x.ndim == 2:
        return x, 1
    if x.ndim != 4:
        raise ValueError(f"batch norm expects x of shape (N, C) or (N, C, H, W), got {x.shape}")
    n, c, h, w = x.shape
    return to_channels_last(x).reshape(n, h * w * c), h * w


def from_rows(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of `to_rows` for an input of `shape` (an NCHW view of channels-last memory)."""
    if len(shape) == 2:
        return rows
    n, c, h, w = shape
    return from_channels_last(rows.reshape(n, h, w, c))


# --- statistics ------------------------------------------------------------------------


def moment_sums(
    x: np.ndarray,
    channels: int,
    centre: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel sums of d and d^2 with d = x - centre; or, given `weights`, of
    weights and d * weights (d = x when centre is None).

    x and weights are (R, L) with column j in channel j % `channels`; centre
    is (L,). Returns two float64 (channels,) arrays. The rows are split in
    chunks over the cores (`chunk_moment_sums`) and the chunks' sums added.
    """

    def run(rows: range) -> tuple[np.ndarray, np.ndarray]:
        sl = slice(rows.start, rows.stop)
        return chunk_moment_sums(x[sl], channels, centre, None if weights is None else weights[sl])

    parts = parallel_map(run, chunk_ranges(x.shape[0], x[:1].nbytes * 2, 2 << 20))
    zeros = np.zeros(channels)  # the sums over no rows at all (an empty batch)
    return sum((p[0] for p in parts), zeros), sum((p[1] for p in parts), zeros)


def chunk_moment_sums(
    x: np.ndarray,
    channels: int,
    centre: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`moment_sums` over a few rows, in the calling thread.

    One pass over memory: d goes to a scratch block that stays in cache for
    both sums. The column sums come from BLAS (a vector-matrix product) in
    the array's dtype, over the chunk's few rows, and are then folded into
    channel sums in float64. So a float32 sum over ~10^6 values, added up
    chunk by chunk, keeps ~7 significant digits. (np.dot rather than @, which
    keeps the GIL when the result has under 512 values.)
    """
    reps = x.shape[1] // channels
    fold = np.ones(reps)

    def channel_sums(column_sums: np.ndarray) -> np.ndarray:
        return np.dot(fold, column_sums.astype(np.float64).reshape(reps, channels))

    ones = np.ones(len(x), dtype=x.dtype)
    d = memory.scratch("centred", x.shape, x.dtype)
    if weights is None:  # sums of d and d^2
        np.subtract(x, 0 if centre is None else centre, out=d)
        first = np.dot(ones, d)
        d *= d
    else:  # sums of weights and d * weights
        first = np.dot(ones, weights)
        np.subtract(x, 0 if centre is None else centre, out=d)
        d *= weights
    return channel_sums(first), channel_sums(np.dot(ones, d))


def rough_centre(x2: np.ndarray, reps: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """The first row's channel means (in x2's dtype, as float64), and tiled to a row: the
    centre of the one-pass variance."""
    first = x2[0].reshape(reps, channels)
    # A BLAS product rather than first.sum(axis=0), which NumPy runs element by element.
    rough = np.dot(np.ones(reps, dtype=x2.dtype), first) / x2.dtype.type(reps)
    return rough.astype(np.float64), np.tile(rough, reps)


# --- statistics over several processes ---------------------------------------------------

SumOverProcesses = Callable[[np.ndarray], np.ndarray]
_across: ContextVar[SumOverProcesses | None] = ContextVar("npcnn_bn_across", default=None)


@contextmanager
def statistics_across(total: SumOverProcesses) -> Iterator[None]:
    """Within the block (in this thread), batch statistics and their gradient terms
    cover the batches of every process that `total` sums over (module docstring)."""
    token = _across.set(total)
    try:
        yield
    finally:
        _across.reset(token)


def synchronised() -> bool:
    """Whether batch statistics are taken over several processes here (`statistics_across`)."""
    return _across.get() is not None


def _summed(m: int, *per_channel: np.ndarray) -> tuple[int, list[np.ndarray]]:
    """(m, per-channel sums) summed over the processes, or as given outside
    `statistics_across`."""
    total = _across.get()
    if total is None:
        return m, list(per_channel)
    sums = total(np.concatenate([[float(m)], *(np.asarray(v, np.float64) for v in per_channel)]))
    return round(sums[0]), np.split(sums[1:], len(per_channel))


def statistics_from_sums(
    rough: np.ndarray, sum_d: np.ndarray, sum_d2: np.ndarray, m: int, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray, int]:
    """The batch's mean (in `dtype`), biased variance (float64) and count, from the
    sums of d = x - rough and d^2 over the m values of each channel (over every
    process's batch inside `statistics_across`)."""
    shift = sum_d / m
    mean = rough + shift
    var = np.maximum(sum_d2 / m - shift**2, 0.0)
    if synchronised():
        m, (first, second) = _summed(m, m * mean, m * (var + mean**2))
        mean = first / m
        var = np.maximum(second / m - mean**2, 0.0)
    return mean.astype(dtype), var, m


def updated_running_statistics(
    running_mean: np.ndarray,
    running_var: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    m: int,
    momentum: float | None,
    num_batches_tracked: int,
) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's update, as new arrays of the running statistics' dtype:
    (1 - momentum) * running + momentum * batch statistic, with the unbiased
    variance var * M / (M - 1); momentum=None averages all batches evenly
    (momentum = 1 / (num_batches_tracked + 1), the batches before this one counted)."""
    mom = momentum if momentum is not None else np.float64(1) / (num_batches_tracked + 1)
    new_mean = (1 - mom) * running_mean + mom * mean
    new_var = (1 - mom) * running_var + mom * var * (m / (m - 1))
    return new_mean.astype(running_mean.dtype), new_var.astype(running_var.dtype)


def statistics(
    x2: np.ndarray,
    reps: int,
    dtype: np.dtype,
    running: tuple[np.ndarray, np.ndarray],
    training: bool,
    momentum: float | None,
    num_batches_tracked: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean in `dtype`, variance in float64, new running mean, new running variance) for
    rows `x2` (R, reps * C): the batch's statistics when training, else the running ones
    (returned unchanged). An empty batch has no statistics: it is normalised with the
    running ones, which it leaves as they were.

    Raises ValueError when training on a single value per channel.
    """
    running_mean, running_var = running
    m = x2.shape[0] * reps
    if not training or m == 0:
        return running_mean, running_var.astype(np.float64), running_mean, running_var
    if m < 2 and not synchronised():
        raise ValueError(
            f"batch norm needs more than 1 value per channel when training, got {m} value"
        )
    channels = x2.shape[1] // reps
    rough, centre = rough_centre(x2, reps, channels)
    mean, var, m = statistics_from_sums(rough, *moment_sums(x2, channels, centre), m, dtype)
    new = updated_running_statistics(
        running_mean, running_var, mean, var, m, momentum, num_batches_tracked
    )
    return mean, var, *new


def inverse_std(var: np.ndarray, eps: float, dtype: np.dtype) -> np.ndarray:
    """1 / sqrt(var + eps), per channel, in `dtype`."""
    return (1.0 / np.sqrt(var + eps)).astype(dtype)


# --- the backward formula ------------------------------------------------------------------


def gradient_terms(
    sum_dy: np.ndarray, sum_dy_centred: np.ndarray, invstd: np.ndarray, m: int, weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """From sum(dy) and sum(dy * (x - mean)) (float64 sums over the M values of each
    channel): (dweight, dbias) in weight's dtype, and per channel g = weight * invstd,
    shift = g * dbias / M and slope = g * invstd * dweight / M, with which
    dx = g * dy - shift - slope * (x - mean) in training (`subtract_mean_terms`)."""
    dtype = weight.dtype
    dweight, dbias = sum_dy_centred * invstd, sum_dy  # (this process's own)
    m, (sum_dy, sum_dy_centred) = _summed(m, sum_dy, sum_dy_centred)
    m = max(m, 1)  # an empty batch: the sums are 0, and so are shift and slope
    g = weight * invstd
    shift = (g * sum_dy / m).astype(dtype)
    slope = (g * invstd * invstd * sum_dy_centred / m).astype(dtype)
    return dweight.astype(dtype), dbias.astype(dtype), g, shift, slope


def subtract_mean_terms(
    dx: np.ndarray,
    centred: np.ndarray,
    shift: np.ndarray,
    slope: np.ndarray,
    overwrite_centred: bool = False,
) -> None:
    """dx <- dx - shift - slope * centred, in place, in the calling thread: with g * dy in
    dx and x - mean in `centred` (shift and slope tiled to their shape), batch norm's
    input gradient g * dy - shift - slope * (x - mean). With `overwrite_centred` (a
    scratch copy of the caller's) slope * centred is formed in `centred` itself,
    which keeps the chunk's working set to one buffer less."""
    out = centred if overwrite_centred else memory.scratch("slope", dx.shape, dx.dtype)
    dx -= shift
    dx -= np.multiply(centred, slope, out=out)


# --- the kernels ------------------------------------------------------------------------


@with_single_threaded_blas
def batch_norm_forward(
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
    """y = weight * xhat + bias per channel: x (N, C) or (N, C, H, W) in weight's dtype.

    Returns (y, cache, new running_mean, new running_var) as the reference
    does (the inputs are not modified; inference returns them unchanged); the
    cache is None with need_cache=False. Raises ValueError when training on a
    single value per channel.
    """
    x2, reps = to_rows(x)
    mean, var, running_mean, running_var = statistics(
        x2, reps, weight.dtype, (running_mean, running_var), training, momentum, num_batches_tracked
    )
    invstd = inverse_std(var, eps, weight.dtype)
    scale = weight * invstd
    scale_t = np.tile(scale, reps)
    y = memory.empty_like(x2)
    # With a cache, x - mean is kept for backward (xhat = (y - bias) / weight would be
    # lost where weight ~ 0), and y = (x - mean) * scale + bias computed from it, exact
    # even when |mean| >> std. Without: y = x * scale + (bias - mean * scale).
    centred = memory.empty_like(x2) if need_cache else None
    mean_t = np.tile(mean, reps) if centred is not None else None
    bias_t = np.tile(bias if centred is not None else bias - mean * scale, reps)

    def run(rows: range) -> None:
        sl = slice(rows.start, rows.stop)
        if centred is None:
            np.multiply(x2[sl], scale_t, out=y[sl])
        else:
            np.subtract(x2[sl], mean_t, out=centred[sl])
            np.multiply(centred[sl], scale_t, out=y[sl])
        y[sl] += bias_t

    parallel_map(run, chunk_ranges(x2.shape[0], x2[:1].nbytes * 3, STREAM_CHUNK_BYTES))
    batch = training and x2.size > 0
    cache = (centred, reps, invstd, batch, weight) if centred is not None else None
    return from_rows(y, x.shape), cache, running_mean, running_var


@with_single_threaded_blas
def batch_norm_backward(dy: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dy of x's shape (in weight's dtype) -> (dx of x's shape, dweight (C,), dbias (C,))."""
    centred, reps, invstd, batch, weight = cache
    dy2, _ = to_rows(dy)
    if dy2.shape != centred.shape:
        raise ValueError(f"batch_norm_backward: dy has shape {dy.shape}, not the input's")
    m = centred.shape[0] * reps
    # sum(dy) and sum(dy * xhat) = invstd * sum(dy * (x - mean))
    sums = moment_sums(centred, len(weight), weights=dy2)
    dweight, dbias, g, shift, slope = gradient_terms(*sums, invstd, m, weight)
    if not batch:  # inference: y is affine in x, dx = g * dy
        return from_rows(dy2 * np.tile(g, reps), dy.shape), dweight, dbias
    g_t, shift_t, slope_t = (np.tile(v, reps) for v in (g, shift, slope))
    dx = memory.empty_like(centred)

    def run(rows: range) -> None:
        sl = slice(rows.start, rows.stop)
        np.multiply(dy2[sl], g_t, out=dx[sl])
        subtract_mean_terms(dx[sl], centred[sl], shift_t, slope_t)

    parallel_map(run, chunk_ranges(len(centred), centred[:1].nbytes * 3, STREAM_CHUNK_BYTES))
    return from_rows(dx, dy.shape), dweight, dbias
