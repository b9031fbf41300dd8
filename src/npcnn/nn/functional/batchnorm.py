"""Batch normalisation (Ioffe & Szegedy 2015) with PyTorch's semantics, for (N, C) or (N, C, H, W).

Every statistic is per channel c (axis 1), over the M values of that channel
in the batch (M = N for (N, C), M = N*H*W for (N, C, H, W)).

Training:
    mu   = mean(x)                      var = mean((x - mu)^2)   (biased: it normalises)
    xhat = (x - mu) / sqrt(var + eps)   y   = weight * xhat + bias
    running_mean <- (1 - momentum) * running_mean + momentum * mu
    running_var  <- (1 - momentum) * running_var  + momentum * var * M / (M - 1)   (unbiased)
  momentum=None averages all batches so far evenly: momentum = 1 / (batches so far + 1).

Inference (the running statistics instead of the batch's):
    xhat = (x - running_mean) / sqrt(running_var + eps)   y = weight * xhat + bias

Backward, with s = 1 / sqrt(var + eps):
    dbias   = sum(dy)       dweight = sum(dy * xhat)
    training:  dx = weight * s / M * (M * dy - dbias - xhat * dweight)
               (mu and var depend on x too: the two subtracted terms are their share)
    inference: dx = weight * s * dy
"""

from __future__ import annotations

import numpy as np


def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """A (C,) vector shaped (1, C, 1, ...) to broadcast along axis 1 of an ndim-array."""
    return v.reshape(1, -1, *([1] * (ndim - 2)))


def _check_shapes(x: np.ndarray, **per_channel: np.ndarray) -> None:
    """Raise ValueError unless x is (N, C, ...) and every per-channel array is (C,)."""
    if x.ndim < 2:
        raise ValueError(f"batch norm expects x of shape (N, C, ...), got shape {x.shape}")
    for name, v in per_channel.items():
        if v.shape != (x.shape[1],):
            raise ValueError(f"batch norm: {name} must have shape ({x.shape[1]},), got {v.shape}")


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
    """y = weight * xhat + bias, per channel: x (N, C) or (N, C, H, W) -> y of x's shape.

    weight, bias, running_mean, running_var are (C,). num_batches_tracked is
    the number of training batches averaged in before this one (used only
    with momentum=None). Returns (y, cache, new running_mean, new running_var);
    the inputs are not modified, and inference returns the running statistics
    unchanged. Raises ValueError when the per-channel arrays are not (C,), or
    when training on M < 2 values per channel.
    """
    _check_shapes(x, weight=weight, bias=bias, running_mean=running_mean, running_var=running_var)
    axes = (0, *range(2, x.ndim))  # every axis but the channels'
    m = x.size // x.shape[1]
    if training:
        if m < 2:
            raise ValueError(f"batch norm needs more than 1 value per channel, got {x.shape}")
        mu = x.mean(axis=axes)
        var = ((x - _per_channel(mu, x.ndim)) ** 2).mean(axis=axes)
        rate = momentum if momentum is not None else 1 / (num_batches_tracked + 1)
        running_mean = (1 - rate) * running_mean + rate * mu
        running_var = (1 - rate) * running_var + rate * var * m / (m - 1)
    else:
        mu, var = running_mean, running_var
    s = 1 / np.sqrt(var + eps)  # (C,)
    xhat = (x - _per_channel(mu, x.ndim)) * _per_channel(s, x.ndim)
    y = _per_channel(weight, x.ndim) * xhat + _per_channel(bias, x.ndim)
    cache = (xhat, weight, s, training) if need_cache else None
    return y, cache, running_mean, running_var


def batch_norm_backward(dy: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dy of x's shape -> (dx of x's shape, dweight (C,), dbias (C,))."""
    xhat, weight, s, training = cache
    axes = (0, *range(2, dy.ndim))
    m = dy.size // dy.shape[1]
    dbias = dy.sum(axis=axes)
    dweight = (dy * xhat).sum(axis=axes)
    g = _per_channel(weight * s, dy.ndim)
    if not training:
        return g * dy, dweight, dbias
    dx = g / m * (m * dy - _per_channel(dbias, dy.ndim) - xhat * _per_channel(dweight, dy.ndim))
    return dx, dweight, dbias
