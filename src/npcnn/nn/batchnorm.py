"""Batch normalisation (Ioffe & Szegedy 2015), with PyTorch's semantics.

Training, per channel c over the M values of the batch (M = N for
BatchNorm1D's (N, C) input, M = N*H*W for BatchNorm2D's (N, C, H, W)):

    mu = mean(x),  var = mean((x - mu)^2)            (biased, for normalising)
    xhat = (x - mu) / sqrt(var + eps),  y = weight * xhat + bias
    running_mean <- (1 - momentum) * running_mean + momentum * mu
    running_var  <- (1 - momentum) * running_var  + momentum * var * M / (M - 1)   (unbiased)

Inference uses the running statistics instead of the batch's:
    y = weight * (x - running_mean) / sqrt(running_var + eps) + bias

Backward (training), with g = weight / sqrt(var + eps):
    dbias = sum(dy),  dweight = sum(dy * xhat)
    dx = g / M * (M * dy - dbias - xhat * dweight)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from npcnn._parallel import chunk_ranges, parallel_map
from npcnn.nn.layout import from_channels_last, to_channels_last
from npcnn.nn.module import (
    DEFAULT_DTYPE,
    Layer,
    NoForwardError,
    Parameter,
    check_input,
    keeps_cache,
)


def _channel_sums(x2: np.ndarray, centre: np.ndarray | None = None) -> np.ndarray:
    """Column sums of (M, C) `x2`, or of (x2 - centre)^2 if `centre` is given; float64 (C,).

    Each chunk is summed in the array's dtype and the partial sums added in
    float64, so a float32 sum over ~10^6 values keeps ~7 significant digits.
    """

    def run(rows: range) -> np.ndarray:
        block = x2[rows.start : rows.stop]
        if centre is not None:
            block = block - centre
            block *= block
        return block.sum(axis=0, dtype=np.float64)

    return sum(parallel_map(run, chunk_ranges(x2.shape[0], x2[0].nbytes * 2, 1 << 18)))


class _BatchNorm(Layer):
    _param_names = ("weight", "bias")
    _buffer_names = ("running_mean", "running_var", "num_batches_tracked")

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        *,
        dtype: np.typing.DTypeLike = DEFAULT_DTYPE,
    ) -> None:
        super().__init__()
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.weight = Parameter(np.ones(num_features, dtype=dtype))
        self.bias = Parameter(np.zeros(num_features, dtype=dtype))
        self.running_mean = np.zeros(num_features, dtype=dtype)
        self.running_var = np.ones(num_features, dtype=dtype)
        self.num_batches_tracked = np.array(0, dtype=np.int64)
        self._cache: tuple[np.ndarray, np.ndarray] | None = None

    def reset_parameters(self, rng: np.random.Generator | int | None = None) -> None:
        self.weight.data[...] = 1
        self.bias.data[...] = 0
        self.running_mean[...] = 0
        self.running_var[...] = 1
        self.num_batches_tracked[...] = 0

    # Subclasses turn their input into an (M, C) matrix and back.
    def _to_rows(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _from_rows(self, rows: np.ndarray, like_shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        x2 = self._to_rows(x.astype(self.weight.data.dtype, copy=False))
        m = x2.shape[0]
        if training:
            if m < 2:
                raise ValueError(
                    f"{type(self).__name__} needs more than 1 value per channel when training, "
                    f"got input of shape {x.shape}"
                )
            mean = (_channel_sums(x2) / m).astype(x2.dtype)
            var = _channel_sums(x2, centre=mean) / m  # two passes: exact even when |mean| >> std
            invstd = (1.0 / np.sqrt(var + self.eps)).astype(x2.dtype)
            scale = self.weight.data * invstd
            mom = self.momentum
            self.running_mean[...] = (1 - mom) * self.running_mean + mom * mean
            self.running_var[...] = (1 - mom) * self.running_var + mom * var * (m / (m - 1))
            self.num_batches_tracked += 1
        else:
            invstd = (1.0 / np.sqrt(self.running_var.astype(np.float64) + self.eps)).astype(
                x2.dtype
            )
            scale = self.weight.data * invstd
            mean = self.running_mean
        y = np.empty_like(x2)

        def run(rows: range) -> None:
            sl = slice(rows.start, rows.stop)
            np.subtract(x2[sl], mean, out=y[sl])
            y[sl] *= scale
            y[sl] += self.bias.data

        parallel_map(run, chunk_ranges(m, x2[0].nbytes * 2, 1 << 18))
        if keeps_cache(training):
            # xhat = (y - bias) / weight would lose it when weight ~ 0: keep x and the stats.
            self._cache = (x2, mean, invstd, training)
        return self._from_rows(y, x.shape)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy of the input's shape -> dx; adds into weight.grad and bias.grad."""
        if self._cache is None:
            raise NoForwardError(self)
        x2, mean, invstd, batch_stats = self._cache
        dy2 = self._to_rows(dy.astype(x2.dtype, copy=False))
        if dy2.shape != x2.shape:
            raise ValueError(f"{type(self).__name__}.backward: dy has shape {dy.shape}")
        m = x2.shape[0]

        def sums(rows: range) -> tuple[np.ndarray, np.ndarray]:
            sl = slice(rows.start, rows.stop)
            d = dy2[sl]
            xhat = (x2[sl] - mean) * invstd
            return d.sum(axis=0, dtype=np.float64), (d * xhat).sum(axis=0, dtype=np.float64)

        chunks = chunk_ranges(m, x2[0].nbytes * 4, 1 << 18)
        parts = parallel_map(sums, chunks)
        dbias = sum(p[0] for p in parts)
        dweight = sum(p[1] for p in parts)
        self.bias.grad += dbias.astype(x2.dtype)
        self.weight.grad += dweight.astype(x2.dtype)
        g = (self.weight.data * invstd).astype(x2.dtype)
        if not batch_stats:  # inference: y is affine in x, dx = g * dy
            return self._from_rows(dy2 * g, dy.shape)
        # dx = g * (dy - dbias/M - xhat * dweight/M) with xhat = (x - mean) * invstd
        shift = (g * dbias / m).astype(x2.dtype)
        slope = (g * invstd * dweight / m).astype(x2.dtype)
        dx = np.empty_like(x2)

        def run(rows: range) -> None:
            sl = slice(rows.start, rows.stop)
            np.multiply(dy2[sl], g, out=dx[sl])
            dx[sl] -= shift
            centred = x2[sl] - mean
            centred *= slope
            dx[sl] -= centred

        parallel_map(run, chunks)
        return self._from_rows(dx, dy.shape)

    def config(self) -> dict[str, Any]:
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum}


class BatchNorm1D(_BatchNorm):
    """Batch norm over the batch axis of (N, C) input; see the module docstring."""

    def _to_rows(self, x: np.ndarray) -> np.ndarray:
        check_input(x, 2, self, self.num_features)
        return x

    def _from_rows(self, rows: np.ndarray, like_shape: tuple[int, ...]) -> np.ndarray:
        return rows


class BatchNorm2D(_BatchNorm):
    """Batch norm per channel of (N, C, H, W) input, over N, H and W; see the module docstring."""

    def _to_rows(self, x: np.ndarray) -> np.ndarray:
        check_input(x, 4, self, self.num_features)
        return to_channels_last(x).reshape(-1, self.num_features)

    def _from_rows(self, rows: np.ndarray, like_shape: tuple[int, ...]) -> np.ndarray:
        n, c, h, w = like_shape
        return from_channels_last(rows.reshape(n, h, w, c))
