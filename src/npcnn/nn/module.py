"""The base classes every layer builds on: `Parameter` and `Layer`.

A layer owns its parameters (trainable arrays with a gradient) and its
buffers (state such as batch-norm running statistics that is saved but not
trained). `forward(x, training=True)` keeps what `backward` needs;
`backward(dy)` returns the gradient with respect to the input and adds the
parameter gradients into each `Parameter.grad`, as PyTorch does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

DEFAULT_DTYPE = np.float32


class Parameter:
    """A trainable array and the gradient accumulated for it.

    Attributes:
        data: the values, any shape.
        grad: the same shape and dtype as `data`; `backward` adds into it and
            `zero_grad` resets it to zero.
    """

    __slots__ = ("data", "grad")

    def __init__(self, data: np.ndarray) -> None:
        self.data = np.ascontiguousarray(data)
        self.grad = np.zeros_like(self.data)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def zero_grad(self) -> None:
        self.grad[...] = 0

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Layer:
    """Base class of every layer and of `Sequential`.

    Subclasses store parameters as `Parameter` attributes and list their names
    in `_param_names`; buffers (saved, not trained) are plain arrays listed in
    `_buffer_names`. Containers list child layers in `_children`.
    """

    _param_names: ClassVar[tuple[str, ...]] = ()
    _buffer_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self._children: dict[str, Layer] = {}

    # --- the two passes ---------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return self.forward(x, training=training)

    # --- parameters, buffers and state -----------------------------------
    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Yield `(dotted_name, parameter)` pairs, such as `("0.weight", p)`."""
        for name in self._param_names:
            param = getattr(self, name)
            if param is not None:
                yield prefix + name, param
        for child_name, child in self._children.items():
            yield from child.named_parameters(f"{prefix}{child_name}.")

    def parameters(self) -> list[Parameter]:
        """Every trainable parameter, in a fixed order (the optimiser's order)."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """Yield `(dotted_name, array)` for non-trainable state (running statistics)."""
        for name in self._buffer_names:
            yield prefix + name, getattr(self, name)
        for child_name, child in self._children.items():
            yield from child.named_buffers(f"{prefix}{child_name}.")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, keyed by dotted name."""
        state = {name: p.data.copy() for name, p in self.named_parameters()}
        state.update({name: np.array(b, copy=True) for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray], strict: bool = True) -> None:
        """Copy arrays from `state` into this layer's parameters and buffers.

        Raises:
            ValueError: with `strict`, if a name is missing or unexpected; always,
                if an array's shape does not match.
        """
        own = self._state_slots()
        if strict:
            missing = sorted(set(own) - set(state))
            unexpected = sorted(set(state) - set(own))
            if missing or unexpected:
                raise ValueError(
                    f"state dict does not match the model: missing {missing}, "
                    f"unexpected {unexpected}"
                )
        for name, (owner, attr) in own.items():
            if name not in state:
                continue
            value = np.asarray(state[name])
            current = getattr(owner, attr)
            target = current.data if isinstance(current, Parameter) else current
            if value.shape != target.shape:
                raise ValueError(
                    f"{name}: shape {value.shape} in the state dict, {target.shape} in the model"
                )
            target[...] = value

    def _state_slots(self, prefix: str = "") -> dict[str, tuple[Layer, str]]:
        slots = {prefix + n: (self, n) for n in self._param_names if getattr(self, n) is not None}
        slots.update({prefix + n: (self, n) for n in self._buffer_names})
        for child_name, child in self._children.items():
            slots.update(child._state_slots(f"{prefix}{child_name}."))
        return slots

    def zero_grad(self) -> None:
        """Reset every parameter's gradient to zero."""
        for p in self.parameters():
            p.zero_grad()

    def astype(self, dtype: np.typing.DTypeLike) -> Layer:
        """Convert parameters, gradients and float buffers to `dtype` in place; returns self.

        Raises:
            TypeError: `dtype` is not float32 or float64 (see `parameter_dtype`).
        """
        dtype = parameter_dtype(dtype)
        for name in self._param_names:
            p = getattr(self, name)
            if p is not None:
                p.data = p.data.astype(dtype)
                p.grad = p.grad.astype(dtype)
        for name in self._buffer_names:
            b = getattr(self, name)
            if np.issubdtype(b.dtype, np.floating):
                setattr(self, name, b.astype(dtype))
        for child in self._children.values():
            child.astype(dtype)
        return self

    def reset_parameters(self, rng: np.random.Generator | int | None = None) -> None:
        """Re-initialise parameters (and reset buffers) from `rng`; containers recurse."""
        rng = np.random.default_rng(rng)
        for child in self._children.values():
            child.reset_parameters(rng)

    # --- description, for summary() and save() -----------------------------
    def summary(
        self, input_shape: tuple[int, ...], print_fn: Callable[[str], Any] | None = print
    ) -> list[dict[str, Any]]:
        """Print and return each layer's output shape and parameter count, like Keras.

        Args:
            input_shape: one sample's shape without the batch axis, e.g. (1, 28, 28).
            print_fn: where the table goes (None: do not print).
        Returns:
            One dict per layer: name, type, output_shape (None for the batch axis),
            params; a last row named "total" holds the total parameter count.
        """
        from npcnn.nn.summary import summarize

        return summarize(self, input_shape, print_fn)

    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this layer (JSON-serialisable)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def as_pair(value: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    """Accept an int or a pair, as PyTorch's kernel_size/stride/padding do."""
    if isinstance(value, int | np.integer):
        pair = (int(value), int(value))
    else:
        pair = tuple(int(v) for v in value)
        if len(pair) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


def check_input(x: np.ndarray, ndim: int, layer: Layer, channels: int | None = None) -> None:
    """Raise a clear ValueError when `x` has the wrong rank or channel count, and a
    TypeError when it is not a floating-point array (see `check_float`)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{type(layer).__name__} expects a numpy array, got {type(x).__name__}")
    check_float(x, type(layer).__name__)
    layout = {2: "(N, features)", 4: "(N, C, H, W)"}.get(ndim, f"{ndim} dimensions")
    if x.ndim != ndim:
        raise ValueError(
            f"{type(layer).__name__} expects input of shape {layout}, got shape {x.shape}"
        )
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{type(layer).__name__} expects {channels} "
            f"{'channels' if ndim == 4 else 'features'}, got input of shape {x.shape}"
        )


def check_float(x: np.ndarray, owner: str) -> None:
    """Raise a TypeError naming `owner` unless `x` holds floating-point numbers.

    Integer or boolean images would otherwise be cast to floats unscaled: a
    network trained on [0, 1] would see 0..255. The scale is not guessed (as
    PyTorch, whose convolutions refuse integer tensors): the message says how
    to convert.
    """
    kind = getattr(getattr(x, "dtype", None), "kind", "f")
    if kind != "f":
        hint = "divide by 255" if x.dtype == np.uint8 else "convert to floats"
        raise TypeError(
            f"{owner} expects floating-point input, got {x.dtype}: {hint} first, "
            "e.g. with npcnn.training.as_model_input(x)"
        )


#: The dtypes the layers compute in: BLAS has no float16 products, and integers
#: would truncate every update.
PARAMETER_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def parameter_dtype(dtype: np.typing.DTypeLike) -> np.dtype:
    """`dtype` as a NumPy dtype if the layers support it (float32, float64); else TypeError."""
    resolved = np.dtype(dtype)
    if resolved not in PARAMETER_DTYPES:
        raise TypeError(f"unsupported dtype {resolved}: the layers compute in float32 or float64")
    return resolved


_inference_backward = False


class inference_backward:
    """Context manager: inference-mode forwards also keep what backward needs.

    Normally only `forward(x, training=True)` records the cache, so inference
    costs no extra memory. Inside `with inference_backward():`, backward is
    also valid after `forward(x)` and differentiates the inference function
    (batch norm with its running statistics, dropout off), as PyTorch's
    backward through a model in eval mode does: for saliency maps, or for
    checking inference-mode gradients.
    """

    def __enter__(self) -> inference_backward:
        global _inference_backward
        self._previous, _inference_backward = _inference_backward, True
        return self

    def __exit__(self, *exc: object) -> None:
        global _inference_backward
        _inference_backward = self._previous


def keeps_cache(training: bool) -> bool:
    """Whether a forward in this mode must record what backward needs."""
    return training or _inference_backward


class NoForwardError(RuntimeError):
    """`backward` was called before a training `forward`."""

    def __init__(self, layer: object) -> None:
        super().__init__(
            f"{type(layer).__name__}.backward() called before forward(x, training=True)"
        )
