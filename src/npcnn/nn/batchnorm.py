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

The kernels compute it: `npcnn.nn.functional.batchnorm` as written above,
`npcnn.kernels.batchnorm` fast, whose statistics and backward formula the
fused batch-norm kernels share (see `npcnn.nn.backend`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from npcnn.kernels.batchnorm import synchronised
from npcnn.nn.backend import active_kernels
from npcnn.nn.module import (
    DEFAULT_DTYPE,
    Layer,
    NoForwardError,
    Parameter,
    check_input,
    keeps_cache,
    parameter_dtype,
)


class _BatchNorm(Layer):
    """What BatchNorm1D and BatchNorm2D share; they differ in their input's rank."""

    _input_ndim = 4  # (N, C, H, W); BatchNorm1D's is (N, C)

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
        # Both are checked where they are given: a negative or NaN eps (a crafted model
        # file) makes 1/sqrt(var + eps) NaN only later, in every output.
        if not 0 <= self.eps < math.inf:
            raise ValueError(f"{type(self).__name__} needs a finite eps >= 0, got {eps}")
        if self.momentum is not None and not 0 <= self.momentum <= 1:
            raise ValueError(
                f"{type(self).__name__} needs momentum from 0 to 1 (or None), got {momentum}"
            )
        dtype = parameter_dtype(dtype)
        self.weight = Parameter(np.ones(num_features, dtype=dtype))
        self.bias = Parameter(np.zeros(num_features, dtype=dtype))
        self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
        self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
        self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        self._cache: tuple | None = None  # (kernel set, kernel cache) of a training forward

    def reset_parameters(self, rng: np.random.Generator | int | None = None) -> None:
        self.weight.data[...] = 1
        self.bias.data[...] = 0
        self.running_mean[...] = 0
        self.running_var[...] = 1
        self.num_batches_tracked[...] = 0

    def run_kernel(
        self, kernel: Callable[..., tuple], x: np.ndarray, training: bool, *args: Any
    ) -> tuple[np.ndarray, tuple | None]:
        """(y, cache) of a batch-norm kernel (`batch_norm_forward`, or a fused kernel whose
        arguments begin with its) on `x` with this layer's parameters and statistics,
        followed by `args`; keeps the batch's statistics in the running ones when
        training. Checks x first, and computes in the layer's dtype.

        Raises:
            TypeError: x is not a floating-point array.
            ValueError: x has not the layer's shape, or a single value per channel
                when training.
        """
        check_input(x, self._input_ndim, self, self.num_features)
        x = x.astype(self.weight.data.dtype, copy=False)
        m = x.size // self.num_features
        if training and m == 1 and not synchronised():
            raise ValueError(
                f"{type(self).__name__} needs more than 1 value per channel when training, "
                f"got input of shape {x.shape}"
            )
        # An empty batch has no statistics: it normalises nothing, changes nothing.
        batch = training and m > 0
        y, cache, mean, var = kernel(
            x, self.weight.data, self.bias.data, self.running_mean, self.running_var, batch,
            self.momentum, self.eps, int(self.num_batches_tracked), *args,
            need_cache=keeps_cache(training),
        )  # fmt: skip
        if batch:
            self.running_mean[...] = mean
            self.running_var[...] = var
            self.num_batches_tracked += 1
        return y, cache

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """x of the layer's input shape -> y of x's shape, in the layer's dtype."""
        keep = keeps_cache(training)
        if keep:  # (an inference forward leaves a training forward's cache in place)
            self._cache = None  # let the previous step's memory serve this one
        kernels = active_kernels()
        y, cache = self.run_kernel(kernels.batch_norm_forward, x, training)
        if keep:
            self._cache = (kernels, cache)
        return y

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """dy of the input's shape -> dx; adds into weight.grad and bias.grad."""
        if self._cache is None:
            raise NoForwardError(self)
        kernels, cache = self._cache
        dy = dy.astype(self.weight.data.dtype, copy=False)
        dx, dweight, dbias = kernels.batch_norm_backward(dy, cache)
        self.weight.grad += dweight
        self.bias.grad += dbias
        return dx if need_input_grad else None

    def config(self) -> dict[str, Any]:
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum}

    @classmethod
    def state_shapes(cls, config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        c = (int(config["num_features"]),)
        names = ("weight", "bias", "running_mean", "running_var")
        return {**dict.fromkeys(names, c), "num_batches_tracked": ()}


class BatchNorm1D(_BatchNorm):
    """Batch norm over the batch axis of (N, C) input; see the module docstring."""

    _input_ndim = 2


class BatchNorm2D(_BatchNorm):
    """Batch norm per channel of (N, C, H, W) input, over N, H and W; see the module docstring."""


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
