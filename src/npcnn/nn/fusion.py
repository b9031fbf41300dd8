"""Fusion: a table of layer patterns that run as one fused kernel, and the planner that applies it.

A container does not run its layers one by one: it asks `plan(layers)` for
steps and runs those (`forward_steps`, `backward_steps`). The planner walks
the chain of layers and, at each position, takes the first pattern of
`FUSIONS` that the next layers' types match exactly and whose `accepts`
they pass (no max-pool in ceil mode); a layer that starts no pattern is a
step of its own. A fused step holds the layers it covers,
reads their public parameters, buffers and settings, calls its fused kernel
from `npcnn.kernels.fused` (or `pooling`), and keeps the kernel's cache
between the two passes; the layers know nothing of it.

    (BatchNorm2D, ReLU, MaxPool2D)  batch_norm_relu_max_pool2d   one pass over the images
    (BatchNorm2D, MaxPool2D, ReLU)  batch_norm_relu_max_pool2d   (max-pooling and ReLU commute)
    (BatchNorm2D, ReLU)             batch_norm_relu
    (BatchNorm1D, ReLU)             batch_norm_relu
    (ReLU, MaxPool2D)               max_pool2d_relu              the ReLU inside the pool's loop
    (MaxPool2D, ReLU)               max_pool2d_relu
    (Flatten, Dense)                flatten_dense                channels-last images as they lie

Fusion changes where the work is done, not what is computed: each fused
kernel is held by the tests to the reference kernels of the layers it
covers. It is on by default; `set_fusion(False)` or `with no_fusion():`
turns it off, and inside `npcnn.use_reference()` nothing is fused (the
reference kernels have no fused forms). `Sequential.summary` marks the
fused blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from npcnn import kernels
from npcnn.nn.activations import ReLU
from npcnn.nn.backend import reference_active
from npcnn.nn.batchnorm import BatchNorm1D, BatchNorm2D
from npcnn.nn.hooks import notify_gradients_ready, timed_step
from npcnn.nn.linear import Dense, Flatten
from npcnn.nn.module import Layer, NoForwardError, check_input, check_shape, keeps_cache
from npcnn.nn.pooling import MaxPool2D
from npcnn.runtime.threads import single_threaded_blas


class Step:
    """One step of a plan: `layers` run as one, forward and backward."""

    layers: tuple[Layer, ...]

    @property
    def name(self) -> str:
        """The covered layers' types joined by "+", e.g. "BatchNorm2D+ReLU+MaxPool2D"."""
        return "+".join(type(layer).__name__ for layer in self.layers)

    @property
    def fused(self) -> bool:
        return len(self.layers) > 1

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


class LayerStep(Step):
    """A layer on its own: its forward and backward."""

    def __init__(self, layer: Layer) -> None:
        self.layers = (layer,)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return self.layers[0].forward(x, training=training)

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        if need_input_grad:  # (the plain call works for a backward replaced on the fly too)
            return self.layers[0].backward(dy)
        return self.layers[0].backward(dy, need_input_grad=False)


class FusedStep(Step):
    """Several layers by one fused kernel; the kernel's cache lives here between passes."""

    def __init__(self, *layers: Layer) -> None:
        self.layers = layers
        self._cache: tuple | None = None

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        # Any forward drops the previous one's cache: it holds big arrays.
        self._cache = None  # (and lets the previous step's memory serve this one)
        y, cache = self._forward(x, training)
        self._cache = cache if keeps_cache(training) else None
        return y

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        if self._cache is None:
            raise NoForwardError(self.layers[0])
        dx = self._backward(dy, self._cache, need_input_grad)
        return dx if need_input_grad else None

    def _forward(self, x: np.ndarray, training: bool) -> tuple[np.ndarray, tuple | None]:
        raise NotImplementedError

    def _backward(self, dy: np.ndarray, cache: tuple, need_input_grad: bool) -> np.ndarray | None:
        raise NotImplementedError


class NormReLUPool(FusedStep):
    """BatchNorm2D, ReLU and MaxPool2D (the ReLU before or after the pool)."""

    def __init__(self, norm: BatchNorm2D, *rest: Layer) -> None:
        super().__init__(norm, *rest)
        self.norm = norm
        self.pool = next(layer for layer in rest if isinstance(layer, MaxPool2D))

    def _forward(self, x: np.ndarray, training: bool) -> tuple[np.ndarray, tuple | None]:
        pool = self.pool
        if x.ndim == 4:  # (else the norm's check refuses x)
            pool.output_size(x.shape[2], x.shape[3])
        kernel = kernels.batch_norm_relu_max_pool2d_forward
        return self.norm.run_kernel(
            kernel, x, training, pool.kernel_size, pool.stride, pool.padding
        )

    def _backward(self, dy: np.ndarray, cache: tuple, need_input_grad: bool) -> np.ndarray | None:
        norm = self.norm
        dy = dy.astype(norm.weight.data.dtype, copy=False)
        dx, dweight, dbias = kernels.batch_norm_relu_max_pool2d_backward(dy, cache)
        norm.weight.grad += dweight
        norm.bias.grad += dbias
        return dx


class NormReLU(FusedStep):
    """BatchNorm1D or BatchNorm2D, then ReLU."""

    def __init__(self, norm: BatchNorm1D | BatchNorm2D, relu: ReLU) -> None:
        super().__init__(norm, relu)
        self.norm = norm

    def _forward(self, x: np.ndarray, training: bool) -> tuple[np.ndarray, tuple | None]:
        return self.norm.run_kernel(kernels.batch_norm_relu_forward, x, training)

    def _backward(self, dy: np.ndarray, cache: tuple, need_input_grad: bool) -> np.ndarray | None:
        norm = self.norm
        dy = dy.astype(norm.weight.data.dtype, copy=False)
        dx, dweight, dbias = kernels.batch_norm_relu_backward(dy, cache)
        norm.weight.grad += dweight
        norm.bias.grad += dbias
        return dx


class PoolReLU(FusedStep):
    """MaxPool2D and ReLU, in either order."""

    def __init__(self, *layers: Layer) -> None:
        super().__init__(*layers)
        self.pool = next(layer for layer in layers if isinstance(layer, MaxPool2D))

    def _forward(self, x: np.ndarray, training: bool) -> tuple[np.ndarray, tuple | None]:
        pool = self.pool
        check_input(x, 4, pool)
        pool.output_size(x.shape[2], x.shape[3])
        return kernels.max_pool2d_relu_forward(
            x, pool.kernel_size, pool.stride, pool.padding, need_cache=keeps_cache(training)
        )

    def _backward(self, dy: np.ndarray, cache: tuple, need_input_grad: bool) -> np.ndarray | None:
        return kernels.max_pool2d_relu_backward(dy, cache)


class FlattenDense(FusedStep):
    """Flatten, then Dense."""

    def __init__(self, flatten: Flatten, dense: Dense) -> None:
        super().__init__(flatten, dense)
        self.flatten, self.dense = flatten, dense

    def _forward(self, x: np.ndarray, training: bool) -> tuple[np.ndarray, tuple | None]:
        dense = self.dense
        check_input(x, x.ndim, dense)  # a floating-point array
        check_shape(self.flatten.output_shape(x.shape), 2, dense, dense.in_features)
        x = x.astype(dense.weight.data.dtype, copy=False)
        bias = dense.bias.data if dense.bias is not None else None
        return kernels.flatten_dense_forward(x, dense.weight.data, bias)

    def _backward(self, dy: np.ndarray, cache: tuple, need_input_grad: bool) -> np.ndarray | None:
        dense = self.dense
        dy = dy.astype(dense.weight.data.dtype, copy=False)
        dx, dweight, dbias = kernels.flatten_dense_backward(dy, cache, need_input_grad)
        dense.weight.grad += dweight
        if dense.bias is not None:
            dense.bias.grad += dbias
        return dx


def plain_windows(*layers: Layer) -> bool:
    """No max-pool among `layers` keeps ceil_mode's partial windows (the fused kernels
    pool floor-mode windows only)."""
    return not any(getattr(layer, "ceil_mode", False) for layer in layers)


@dataclass(frozen=True)
class Fusion:
    """A pattern of layer types (matched exactly, subclasses not), the step that runs it,
    and what else the layers must satisfy (`accepts`)."""

    pattern: tuple[type[Layer], ...]
    step: type[FusedStep]
    accepts: Callable[..., bool] = plain_windows


#: The fusion table, in order of precedence: longer patterns first.
FUSIONS: tuple[Fusion, ...] = (
    Fusion((BatchNorm2D, ReLU, MaxPool2D), NormReLUPool),
    Fusion((BatchNorm2D, MaxPool2D, ReLU), NormReLUPool),
    Fusion((BatchNorm2D, ReLU), NormReLU),
    Fusion((BatchNorm1D, ReLU), NormReLU),
    Fusion((ReLU, MaxPool2D), PoolReLU),
    Fusion((MaxPool2D, ReLU), PoolReLU),
    Fusion((Flatten, Dense), FlattenDense),
)

_fusion_enabled = True


def set_fusion(enabled: bool) -> None:
    """Turn fusion on or off for every container (on by default)."""
    global _fusion_enabled
    _fusion_enabled = bool(enabled)


def fusion_enabled() -> bool:
    """Whether containers fuse layers now: fusion is on and the fast kernels are in use."""
    return _fusion_enabled and not reference_active()


@contextmanager
def no_fusion() -> Iterator[None]:
    """Context manager: no layers are fused within the block (each runs its own kernel)."""
    previous = _fusion_enabled
    set_fusion(False)
    try:
        yield
    finally:
        set_fusion(previous)


def plan(layers: Sequence[Layer], fuse: bool | None = None) -> list[Step]:
    """The steps that run a chain of `layers`: a fused step for each match of the table
    (`FUSIONS`, first match wins, left to right), a `LayerStep` for every other layer.
    `fuse` defaults to `fusion_enabled()`."""
    fuse = fusion_enabled() if fuse is None else fuse
    steps: list[Step] = []
    i = 0
    while i < len(layers):
        fusion = _match(layers, i) if fuse else None
        if fusion is None:
            steps.append(LayerStep(layers[i]))
            i += 1
        else:
            steps.append(fusion.step(*layers[i : i + len(fusion.pattern)]))
            i += len(fusion.pattern)
    return steps


def _match(layers: Sequence[Layer], i: int) -> Fusion | None:
    """The first fusion whose pattern the layers from position i match."""
    for fusion in FUSIONS:
        window = layers[i : i + len(fusion.pattern)]
        if tuple(map(type, window)) == fusion.pattern and fusion.accepts(*window):
            return fusion
    return None


class Planner:
    """A container's plan, made again only when its layers or the mode (fusion on or off,
    fast or reference kernels) change: fused steps keep state between passes."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._steps: list[Step] = []

    def steps(self, layers: Sequence[Layer]) -> list[Step]:
        """The steps for `layers` in the current mode."""
        fuse = fusion_enabled()
        key = (tuple(map(id, layers)), fuse)
        if key != self._key:
            self._key, self._steps = key, plan(layers, fuse)
        return self._steps


def forward_steps(steps: Sequence[Step], x: np.ndarray, training: bool) -> np.ndarray:
    """Run the steps' forwards one after another. BLAS stays single-threaded throughout:
    the kernels split the batch over the cores themselves, and BLAS threads left
    spinning after a multi-threaded product would take a core from them."""
    with single_threaded_blas():
        for step in steps:
            x = timed_step(step, "forward", step.forward, x, training)
    return x


def backward_steps(
    steps: Sequence[Step], dy: np.ndarray, need_input_grad: bool = True
) -> np.ndarray | None:
    """Run the steps' backwards in reverse order; the first step's input gradient only
    with `need_input_grad` (else None is returned). After each step, its layers'
    gradients are final: `npcnn.nn.hooks` hears it."""
    if not steps:
        return dy if need_input_grad else None
    with single_threaded_blas():
        for step in reversed(steps[1:]):
            dy = timed_step(step, "backward", step.backward, dy)
            notify_gradients_ready(step.layers)
        first = steps[0]
        dx = timed_step(first, "backward", first.backward, dy, need_input_grad=need_input_grad)
        notify_gradients_ready(first.layers)
    return dx if need_input_grad else None
