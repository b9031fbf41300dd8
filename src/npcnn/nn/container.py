"""Sequential: layers applied one after another; backward runs them in reverse."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from npcnn.nn.activations import ReLU
from npcnn.nn.batchnorm import BatchNorm1D, BatchNorm2D
from npcnn.nn.fused import NormReLU, NormReLUPool
from npcnn.nn.layout import is_channels_last
from npcnn.nn.linear import Dense, Flatten
from npcnn.nn.module import Layer, check_float
from npcnn.nn.pooling import MaxPool2D
from npcnn.nn.registry import build_layer, layer_spec
from npcnn.runtime.threads import single_threaded_blas
from npcnn.text import short_repr


class Sequential(Layer):
    """y = layers[-1](...layers[1](layers[0](x))). Children are named "0", "1", ... as in PyTorch.

    Accepts a list of layers (`Sequential([a, b])`) or the layers themselves
    (`Sequential(a, b)`).
    """

    def __init__(self, layers: Iterable[Layer] | Layer = (), *more: Layer) -> None:
        super().__init__()
        items = [layers, *more] if isinstance(layers, Layer) else [*layers, *more]
        for i, layer in enumerate(items):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential item {i} is a {type(layer).__name__}, not a Layer")
            self.add_layer(str(i), layer)
        self._plan: tuple[tuple[int, ...], list] | None = None  # see _passes

    @property
    def layers(self) -> list[Layer]:
        return list(self._children.values())

    def __len__(self) -> int:
        return len(self._children)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self._children.values())

    def __getitem__(self, index: int) -> Layer:
        return self.layers[index]

    def _passes(
        self,
    ) -> list[
        tuple[
            Callable[[np.ndarray, bool], np.ndarray],
            Layer | _FlattenThenDense | NormReLUPool | NormReLU,
        ]
    ]:
        """(forward, the layer whose backward undoes it) for each step of the passes.

        One per layer, except for these:
        - BatchNorm2D followed by a ReLU and a MaxPool2D (in either order), and
          batch norm followed by a ReLU, run as one pass (`fused.py`);
        - a ReLU next to a MaxPool2D (before or after it) is folded into the
          pool: max-pooling commutes with ReLU, max(relu(a), relu(b)) =
          relu(max(a, b)), and so do the gradients (both send dy to the
          window's first maximum when it is positive, and nothing otherwise).
          The ReLU then costs one pass over the pooled values, a quarter of
          its input for 2x2 windows, inside the pool's own loop;
        - a Flatten followed by a Dense skips the Flatten's reordering of
          channels-last images (`_FlattenThenDense`).
        """
        layers = self.layers
        # Built once for a given list of layers: the fused blocks keep state between passes.
        key = tuple(map(id, layers))
        if self._plan is not None and self._plan[0] == key:
            return self._plan[1]
        passes, i = [], 0
        while i < len(layers):
            pair, triple = tuple(map(type, layers[i : i + 2])), tuple(map(type, layers[i : i + 3]))
            if triple in ((BatchNorm2D, ReLU, MaxPool2D), (BatchNorm2D, MaxPool2D, ReLU)):
                pool = layers[i + 1] if triple[1] is MaxPool2D else layers[i + 2]
                block = NormReLUPool(layers[i], pool)
                passes.append((block.forward, block))
                i += 3
            elif pair in ((BatchNorm2D, ReLU), (BatchNorm1D, ReLU)):
                block = NormReLU(*layers[i : i + 2])
                passes.append((block.forward, block))
                i += 2
            elif pair in ((ReLU, MaxPool2D), (MaxPool2D, ReLU)):
                pool = layers[i] if pair[0] is MaxPool2D else layers[i + 1]
                passes.append((pool.forward_then_relu, pool))
                i += 2
            elif pair == (Flatten, Dense):
                step = _FlattenThenDense(*layers[i : i + 2])
                passes.append((step.forward, step))
                i += 2
            else:
                passes.append((layers[i].forward, layers[i]))
                i += 1
        self._plan = (key, passes)
        return passes

    # Both passes keep BLAS single-threaded throughout: the layers split the
    # batch over the cores themselves, and BLAS threads left spinning after a
    # multi-threaded product (a Dense layer's) would steal a core from them.
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """x (N, ...) floats -> the last layer's output; N = 0 gives an empty output.

        Raises:
            TypeError: integer or boolean input (uint8 images must be divided by
                255 first, as `npcnn.training.as_model_input` does), or not an array.
            ValueError: a shape that the first layer does not take.
        """
        check_float(x, "Sequential")
        with single_threaded_blas():
            for forward, _ in self._passes():
                x = forward(x, training=training)
        return x

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """dy (gradient of the loss w.r.t. the output) -> dx; fills every parameter's .grad.

        With `need_input_grad=False` the first layer skips its input gradient
        (nothing needs dL/dx of a network's input while training) and None is
        returned; layers that cannot skip it compute it anyway.
        """
        layers = [layer for _, layer in self._passes()]
        if not layers:
            return dy
        first = layers[0]
        with single_threaded_blas():
            for layer in reversed(layers[1:]):
                dy = layer.backward(dy)
            if not need_input_grad and _can_skip_input_grad(type(first)):
                return first.backward(dy, need_input_grad=False)
            dx = first.backward(dy)
        return dx if need_input_grad else None

    def config(self) -> dict[str, Any]:
        return {"layers": [layer_spec(layer) for layer in self]}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Sequential:
        """The Sequential of the layers `config["layers"]` describes (`layer_spec` output)."""
        extra = sorted(set(config) - {"layers"})
        if extra:
            raise TypeError(f"unexpected configuration {short_repr(extra, 60)}")
        specs = config.get("layers", [])
        if not isinstance(specs, list):
            raise ValueError(f"'layers' must be a list, not a {type(specs).__name__}")
        return cls([build_layer(spec, str(i)) for i, spec in enumerate(specs)])

    @classmethod
    def state_shapes(cls, config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        return {}  # a Sequential's arrays are its children's

    def __repr__(self) -> str:
        inner = "\n".join(f"  ({name}): {layer!r}" for name, layer in self._children.items())
        return f"Sequential(\n{inner}\n)"


class _FlattenThenDense:
    """Flatten then Dense. For channels-last images (what conv and pooling layers
    hand on), Dense takes them as they lie in memory and reorders its weight's
    columns instead (`Dense.forward_channels_last`); otherwise both layers run."""

    def __init__(self, flatten: Flatten, dense: Dense) -> None:
        self.flatten, self.dense = flatten, dense

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        # (With one channel both orders are the same: Flatten copies nothing.)
        if x.ndim == 4 and x.shape[1] > 1 and is_channels_last(x):
            return self.dense.forward_channels_last(x, training)
        return self.dense.forward(self.flatten.forward(x, training), training)

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        dx = self.dense.backward(dy, need_input_grad)
        if dx is None or self.dense.fed_channels_last:
            return dx
        return self.flatten.backward(dx)


@functools.cache
def _can_skip_input_grad(layer_type: type[Layer]) -> bool:
    """Whether this layer type's backward takes `need_input_grad` (Conv2D, Dense)."""
    return "need_input_grad" in inspect.signature(layer_type.backward).parameters
