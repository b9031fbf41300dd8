"""Batch normalisation (Ioffe & Szegedy 2015), with PyTorch's semantics.

Training, per channel c over the M values of the batch (M = N for
BatchNorm1D's (N, C) input, M = N*H*W for BatchNorm2D's (N, C, H, W)):

    mu = mean(x),  var = mean((x - mu)^2)            (biased, for normalising)
    xhat = (x - mu) / sqrt(var + eps),  y = weight * xhat + bias
    running_mean <- (1 - momentum) * running_mean + momentum * mu
    running_var  <- (1 - momentum) * running_var  + momentum * var * M / (M - 1)   (unbiased)
With momentum=None the running statistics are the plain average over all
batches seen so far (momentum = 1 / num_batches_tracked), as in PyTorch.

Inference uses the running statistics instead of the batch's:
    y = weight * (x - running_mean) / sqrt(running_var + eps) + bias

Backward (training), with g = weight / sqrt(var + eps):
    dbias = sum(dy),  dweight = sum(dy * xhat)
    dx = g / M * (M * dy - dbias - xhat * dweight)

Layout: the input is seen as a matrix of R rows of length L = reps * C in
which column j belongs to channel j % C: (N, C) for BatchNorm1D, and
(N, H*W*C) for BatchNorm2D's channels-last memory. Per-channel vectors are
tiled to length L, so every NumPy operation runs along long contiguous rows
instead of C values at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from npcnn.nn.layout import from_channels_last, to_channels_last
from npcnn.nn.module import (
    DEFAULT_DTYPE,
    Layer,
    NoForwardError,
    Parameter,
    check_input,
    keeps_cache,
    parameter_dtype,
)
from npcnn.runtime import memory
from npcnn.runtime.memory import scratch
from npcnn.runtime.threads import STREAM_CHUNK_BYTES, chunk_ranges, parallel_map


def _moment_sums(
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
    """`_moment_sums` over a few rows, in the calling thread.

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
    d = scratch("centred", x.shape, x.dtype)
    if weights is None:  # sums of d and d^2
        np.subtract(x, 0 if centre is None else centre, out=d)
        first = np.dot(ones, d)
        d *= d
    else:  # sums of weights and d * weights
        first = np.dot(ones, weights)
        np.subtract(x, 0 if centre is None else centre, out=d)
        d *= weights
    return channel_sums(first), channel_sums(np.dot(ones, d))


class _BatchNorm(Layer):
    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        *,
        dtype: np.typing.DTypeLike = DEFAULT_DTYPE,
    ) -> None:
        super().__init__()
        self.num_features = int(num_features)
        if self.num_features < 1:
            raise ValueError(f"{type(self).__name__} needs num_features >= 1, got {num_features}")
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        dtype = parameter_dtype(dtype)
        self.weight = Parameter(np.ones(num_features, dtype=dtype))
        self.bias = Parameter(np.zeros(num_features, dtype=dtype))
        self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
        self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
        self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        self._cache: tuple | None = None

    def reset_parameters(self, rng: np.random.Generator | int | None = None) -> None:
        self.weight.data[...] = 1
        self.bias.data[...] = 0
        self.running_mean[...] = 0
        self.running_var[...] = 1
        self.num_batches_tracked[...] = 0

    # Subclasses turn their input into an (R, reps * C) matrix and back.
    def _to_rows(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def _from_rows(self, rows: np.ndarray, like_shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError

    def _batch_statistics(
        self, x2: np.ndarray, reps: int, input_shape: tuple[int, ...]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The batch's per-channel mean (x2's dtype) and biased variance (float64), from
        rows `x2` (R, reps * C); updates the running statistics."""
        m = x2.shape[0] * reps
        if m == 0:  # an empty batch has no statistics: it normalises nothing, changes nothing
            return self._running_statistics()
        if m < 2:
            raise ValueError(
                f"{type(self).__name__} needs more than 1 value per channel when training, "
                f"got input of shape {input_shape}"
            )
        rough, centre = self._rough_centre(x2, reps)
        return self._statistics_from_sums(rough, *_moment_sums(x2, self.num_features, centre), m)

    def _rough_centre(self, x2: np.ndarray, reps: int) -> tuple[np.ndarray, np.ndarray]:
        """The first row's channel means (in x2's dtype, as float64), and tiled to a row.

        The variance comes from sums of d = x - centre and d^2 in one pass; with
        the centre near the mean, mean(d^2) - mean(d)^2 loses no digits.
        """
        first = x2[0].reshape(reps, self.num_features)
        # np.dot (a BLAS product) runs this sum far faster than first.sum(axis=0).
        rough = np.dot(np.ones(reps, dtype=x2.dtype), first) / x2.dtype.type(reps)
        return rough.astype(np.float64), np.tile(rough, reps)

    def _statistics_from_sums(
        self, rough: np.ndarray, sum_d: np.ndarray, sum_d2: np.ndarray, m: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean (in the layer's dtype) and biased variance (float64) from the sums of d and
        d^2 over the M values of each channel; updates the running statistics."""
        shift = sum_d / m
        mean = (rough + shift).astype(self.weight.data.dtype)
        var = np.maximum(sum_d2 / m - shift**2, 0.0)
        self.num_batches_tracked += 1
        mom = self.momentum if self.momentum is not None else 1 / self.num_batches_tracked
        self.running_mean[...] = (1 - mom) * self.running_mean + mom * mean
        self.running_var[...] = (1 - mom) * self.running_var + mom * var * (m / (m - 1))
        return mean, var

    def _statistics(
        self, x2: np.ndarray, reps: int, input_shape: tuple[int, ...], training: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """The mean and variance that normalise `x2`: the batch's when training (updating
        the running statistics), else the running ones."""
        if training:
            return self._batch_statistics(x2, reps, input_shape)
        return self._running_statistics()

    def _running_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """The running mean (in the layer's dtype) and variance (float64), for inference."""
        return self.running_mean, self.running_var.astype(np.float64)

    def _inverse_std(self, var: np.ndarray) -> np.ndarray:
        return (1.0 / np.sqrt(var + self.eps)).astype(self.weight.data.dtype)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        dtype = self.weight.data.dtype
        x2, reps = self._to_rows(x)  # (which checks x, before any cast)
        x2 = x2.astype(dtype, copy=False)
        mean, var = self._statistics(x2, reps, x.shape, training)
        invstd = self._inverse_std(var)
        scale = self.weight.data * invstd
        scale_t = np.tile(scale, reps)
        y = memory.empty_like(x2)
        # Training keeps x - mean for backward (xhat = (y - bias) / weight would be
        # lost where weight ~ 0) and computes y = (x - mean) * scale + bias from it,
        # exact even when |mean| >> std. Inference: y = x * scale + (bias - mean * scale).
        if keeps_cache(training):
            self._cache = None  # let the previous step's memory serve this one (memory.py)
        centred = memory.empty_like(x2) if keeps_cache(training) else None
        mean_t = np.tile(mean, reps) if centred is not None else None
        bias_t = np.tile(
            self.bias.data if centred is not None else self.bias.data - mean * scale, reps
        )

        def run(rows: range) -> None:
            sl = slice(rows.start, rows.stop)
            if centred is None:
                np.multiply(x2[sl], scale_t, out=y[sl])
            else:
                np.subtract(x2[sl], mean_t, out=centred[sl])
                np.multiply(centred[sl], scale_t, out=y[sl])
            y[sl] += bias_t

        parallel_map(run, chunk_ranges(x2.shape[0], x2[:1].nbytes * 3, STREAM_CHUNK_BYTES))
        if centred is not None:
            self._cache = (centred, reps, invstd, training)
        return self._from_rows(y, x.shape)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy of the input's shape -> dx; adds into weight.grad and bias.grad."""
        if self._cache is None:
            raise NoForwardError(self)
        centred, reps, invstd, batch_stats = self._cache
        dy2, _ = self._to_rows(dy.astype(centred.dtype, copy=False))
        if dy2.shape != centred.shape:
            raise ValueError(f"{type(self).__name__}.backward: dy has shape {dy.shape}")
        m = centred.shape[0] * reps
        # sum(dy) and sum(dy * xhat) = invstd * sum(dy * (x - mean))
        dbias, sum_dy_centred = _moment_sums(centred, self.num_features, weights=dy2)
        g, shift, slope = self._add_grads(dbias, sum_dy_centred, invstd, m)
        if not batch_stats:  # inference: y is affine in x, dx = g * dy
            return self._from_rows(dy2 * np.tile(g, reps), dy.shape)
        g_t, shift_t, slope_t = (np.tile(v, reps) for v in (g, shift, slope))
        dx = memory.empty_like(centred)

        def run(rows: range) -> None:
            sl = slice(rows.start, rows.stop)
            np.multiply(dy2[sl], g_t, out=dx[sl])
            dx[sl] -= shift_t  # dx = g * dy - shift - slope * (x - mean)
            dx[sl] -= np.multiply(
                centred[sl], slope_t, out=scratch("slope", dx[sl].shape, dx.dtype)
            )

        parallel_map(run, chunk_ranges(len(centred), centred[:1].nbytes * 3, STREAM_CHUNK_BYTES))
        return self._from_rows(dx, dy.shape)

    def _add_grads(
        self, dbias: np.ndarray, sum_dy_centred: np.ndarray, invstd: np.ndarray, m: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Adds dbias = sum(dy) and dweight = invstd * sum(dy * (x - mean)) (float64 sums over
        the M values of each channel) into the gradients. Returns, per channel,
        g = weight * invstd, shift = g * dbias / M and slope = g * invstd * dweight / M,
        with which dx = g * dy - shift - slope * (x - mean) in training."""
        dtype = self.weight.data.dtype
        m = max(m, 1)  # an empty batch: the sums are 0, and so are shift and slope
        dweight = sum_dy_centred * invstd
        self.bias.grad += dbias.astype(dtype)
        self.weight.grad += dweight.astype(dtype)
        g = self.weight.data * invstd
        return g, (g * dbias / m).astype(dtype), (g * invstd * dweight / m).astype(dtype)

    def config(self) -> dict[str, Any]:
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum}

    @classmethod
    def state_shapes(cls, config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        c = (int(config["num_features"]),)
        names = ("weight", "bias", "running_mean", "running_var")
        return {**dict.fromkeys(names, c), "num_batches_tracked": ()}


class BatchNorm1D(_BatchNorm):
    """Batch norm over the batch axis of (N, C) input; see the module docstring."""

    def _to_rows(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        check_input(x, 2, self, self.num_features)
        return x, 1

    def _from_rows(self, rows: np.ndarray, like_shape: tuple[int, ...]) -> np.ndarray:
        return rows


class BatchNorm2D(_BatchNorm):
    """Batch norm per channel of (N, C, H, W) input, over N, H and W; see the module docstring."""

    def _to_rows(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        check_input(x, 4, self, self.num_features)
        n, c, h, w = x.shape
        return to_channels_last(x).reshape(n, h * w * c), h * w

    def _from_rows(self, rows: np.ndarray, like_shape: tuple[int, ...]) -> np.ndarray:
        n, c, h, w = like_shape
        return from_channels_last(rows.reshape(n, h, w, c))


def update_bn(model: Layer, batches: Iterable[np.ndarray]) -> None:
    """Recompute every batch norm's running statistics for the model's current weights.

    Resets the running mean and variance, then averages the statistics of
    `batches` (inputs of shape (N, C, H, W), or (x, y) pairs) evenly over a
    training-mode pass, without touching any parameter, as PyTorch's
    `torch.optim.swa_utils.update_bn`. Inference then uses statistics that
    fit the weights, where the exponential running average would still lag
    behind a fast-changing network (a short or full-batch run).
    """
    norms = [layer for _, layer in model.named_layers() if isinstance(layer, _BatchNorm)]
    if not norms:
        return
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.running_mean[...] = 0
        bn.running_var[...] = 1
        bn.num_batches_tracked[...] = 0
        bn.momentum = None
    try:
        for batch in batches:
            x = batch[0] if isinstance(batch, tuple | list) else batch
            model.forward(x, training=True)
    finally:
        for bn, momentum in zip(norms, momenta, strict=True):
            bn.momentum = momentum
            bn._cache = None
