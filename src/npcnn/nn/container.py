"""Sequential: layers applied one after another; backward runs them in reverse."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from npcnn.nn.fusion import Planner, Step, backward_steps, forward_steps
from npcnn.nn.module import Layer, check_float
from npcnn.nn.registry import build_layer, layer_spec
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
        self.add_layers((str(i), layer) for i, layer in enumerate(items))
        self._planner = Planner()
        self._steps: list[Step] | None = None  # the steps of the last forward, for backward

    @property
    def takes_several_inputs(self) -> bool:  # type: ignore[override]
        """As its first layer: a Sequential that starts with a merge layer takes a list."""
        first = next(iter(self._children.values()), None)
        return first is not None and first.takes_several_inputs

    @property
    def layers(self) -> list[Layer]:
        return list(self._children.values())

    def __len__(self) -> int:
        return len(self._children)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self._children.values())

    def __getitem__(self, index: int) -> Layer:
        return self.layers[index]

    def plan(self) -> list[Step]:
        """The steps the passes run now: each layer alone, or several by one fused kernel
        (`npcnn.nn.fusion`); `summary` marks the fused ones."""
        return self._planner.steps(self.layers)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """x (N, ...) floats -> the last layer's output; N = 0 gives an empty output.

        Raises:
            TypeError: integer or boolean input (uint8 images must be divided by
                255 first, as `npcnn.training.as_model_input` does), or not an array.
            ValueError: a shape that the first layer does not take.
        """
        check_float(x, "Sequential")
        self._steps = self.plan()
        return forward_steps(self._steps, x, training)

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """dy (gradient of the loss w.r.t. the output) -> dx; fills every parameter's .grad.

        With `need_input_grad=False` the first layer skips its input gradient
        (nothing needs dL/dx of a network's input while training) and None is
        returned; layers that cannot skip it compute it anyway.
        """
        steps = self._steps if self._steps is not None else self.plan()
        return backward_steps(steps, dy, need_input_grad)

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
