"""The base classes every layer builds on: `Parameter` and `Layer`.

A layer owns its parameters (trainable arrays with a gradient) and its
buffers (state such as batch-norm running statistics that is saved but not
trained). `forward(x, training=True)` keeps what `backward` needs;
`backward(dy, need_input_grad=True)` returns the gradient with respect to the
input (None with need_input_grad=False: a network's first layer) and adds the
parameter gradients into each `Parameter.grad`, as PyTorch does.

The built-in layers compute through a kernel set (`npcnn.nn.backend`): they
hold parameters and state, check their input, call their operation's kernel
once per pass, keep its cache, and accumulate the gradients it returns.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

import numpy as np

from npcnn.nn.symbolic import call_symbolic, is_symbolic
from npcnn.text import names_list

#: Names beginning with it are records beside a model in its files (its architecture,
#: a checkpoint's optimiser state), never a layer's, parameter's or buffer's name.
RESERVED_PREFIX = "__"

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
    """Base class of every layer and of `Sequential`, with PyTorch's contracts.

    What a layer owns is registered under an attribute name, in order:
    - parameters (trainable `Parameter`s): by assignment, `self.weight =
      Parameter(...)`, or `register_parameter(name, param)`;
    - buffers (arrays saved in the state dict but not trained, such as
      batch-norm running statistics): `register_buffer(name, array)`; a later
      `self.name = new_array` replaces the buffer;
    - child layers: by assignment, `self.block = Dense(...)`, or
      `add_layer(name, layer)` (names need not be identifiers: Sequential's
      are "0", "1", ...);
    - random generators (`numpy.random.Generator`, e.g. dropout's masks):
      `register_generator(name, rng)`; their states are saved by `npcnn.save`
      and in checkpoints, and a generator that several layers share stays
      shared (`npcnn.nn.generator_states`).
    A registered name may later be set to None (an absent bias); assigning it
    a value of another kind raises TypeError. Everything else assigned to a
    layer (caches, settings) is a plain attribute.

    `named_parameters`, `named_buffers` and `state_dict` name arrays by dotted
    path ("0.weight"); `children`/`named_children` walk one level,
    `named_layers` every layer below. `config()` and `from_config(config)`
    rebuild a layer from its constructor arguments (what `npcnn.save` stores).
    """

    #: Whether `forward` takes a list of arrays (as `nn.MergeLayer`s do) rather than one
    #: array: a layer of one's own that does sets it True (or subclasses MergeLayer),
    #: and calls on a list are refused for the others.
    takes_several_inputs = False

    # Empty until Layer.__init__ gives each instance its own (see __setattr__).
    _params: Mapping[str, None] = MappingProxyType({})
    _buffers: Mapping[str, None] = MappingProxyType({})
    _children: Mapping[str, Layer] = MappingProxyType({})
    _generators: Mapping[str, None] = MappingProxyType({})

    def __init__(self) -> None:
        object.__setattr__(self, "_params", {})  # ordered sets of names: the values are
        object.__setattr__(self, "_buffers", {})  # ordinary attributes, read at full speed
        object.__setattr__(self, "_children", {})
        object.__setattr__(self, "_generators", {})

    # --- registration ------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        # Runs for every assignment, forward's caches included: a plain value under
        # an unregistered name costs two isinstance checks and four dict lookups.
        if isinstance(value, Parameter):
            self.register_parameter(name, value)
        elif isinstance(value, Layer):
            self.add_layer(name, value)
        else:
            if (
                name in self._params
                or name in self._buffers
                or name in self._children
                or name in self._generators
            ):
                self._check_reassignment(name, value)
            object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        object.__delattr__(self, name)
        for registry in (self._params, self._buffers, self._children, self._generators):
            if name in registry:
                del registry[name]  # type: ignore[attr-defined]

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register `param` (a Parameter, or None for an absent one) as attribute `name`.

        Raises:
            TypeError: `param` is not a Parameter or None.
            ValueError: `name` is not a valid name (empty, dotted, a method's name).
            AttributeError: called before `Layer.__init__`.
        """
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"cannot register a {type(param).__name__} as parameter {name!r}: "
                "wrap the array in nn.Parameter"
            )
        self._register(name, "parameter")
        self._params[name] = None  # type: ignore[index]
        object.__setattr__(self, name, param)

    def register_buffer(self, name: str, array: np.ndarray | None) -> None:
        """Register `array` as buffer `name`: saved in the state dict, converted by
        `astype`, never trained (running statistics, counters). None: no buffer yet.

        Raises:
            TypeError: `array` is not a numpy array or None.
            ValueError, AttributeError: as `register_parameter`.
        """
        if array is not None and not isinstance(array, np.ndarray):
            raise TypeError(
                f"cannot register a {type(array).__name__} as buffer {name!r}: "
                "buffers are numpy arrays"
            )
        self._register(name, "buffer")
        self._buffers[name] = None  # type: ignore[index]
        object.__setattr__(self, name, array)

    def register_generator(self, name: str, rng: np.random.Generator) -> None:
        """Register `rng` as the random generator `name` (also an attribute): its state
        is saved with the model and restored on load and resume. A later
        `self.name = other_generator` replaces it.

        Raises:
            TypeError: `rng` is not a numpy.random.Generator.
            ValueError, AttributeError: as `register_parameter`.
        """
        if not isinstance(rng, np.random.Generator):
            raise TypeError(
                f"cannot register a {type(rng).__name__} as generator {name!r}: "
                "expected a numpy.random.Generator"
            )
        self._register(name, "generator")
        self._generators[name] = None  # type: ignore[index]
        object.__setattr__(self, name, rng)

    def add_layer(self, name: str, layer: Layer) -> None:
        """Register `layer` as the child `name` (also an attribute); its parameters and
        buffers are then this layer's, named `name.<theirs>`.

        Raises:
            TypeError: `layer` is not a Layer.
            ValueError: `layer`, or a layer inside it, is already in this layer's tree
                (shared weights are not supported), or is this layer itself.
            ValueError, AttributeError: as `register_parameter`.
        """
        self.add_layers([(name, layer)])

    def add_layers(self, named: Iterable[tuple[str, Layer]]) -> None:
        """`add_layer(name, layer)` for each pair, in order, the tree walked once for all
        of them (a container of n layers is built in O(n), not O(n^2))."""
        named = list(named)
        for name, layer in named:
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"cannot add a {type(layer).__name__} as layer {name!r}: not a Layer"
                )
        replaced = {name for name, _ in named}
        placed: dict[int, str | None] = {id(self): None}
        for child_name, child in self._children.items():
            if child_name not in replaced:
                placed.update((id(sub), path) for path, sub in child.named_layers(child_name))
        for name, layer in named:
            self._check_new_in_tree(name, layer, placed)
            self._register(name, "layer")
            self._children[name] = layer  # type: ignore[index]
            object.__setattr__(self, name, layer)

    def check_placed_once(self) -> None:
        """ValueError when one layer instance is at two places of this layer's tree.

        Adding a layer checks the tree of the layer it is added to, not the trees
        that already hold that layer: `inner.add_layer("x", b)` after
        `outer = Sequential(inner, b)` puts `b` twice in `outer`. `parameters()`
        runs this check, so no optimiser is built over such a model.
        """
        placed: dict[int, str | None] = {id(self): None}
        for name, child in self._children.items():
            self._check_new_in_tree(name, child, placed, adding=False)

    def _check_new_in_tree(
        self, name: str, layer: Layer, placed: dict[int, str | None], adding: bool = True
    ) -> None:
        """ValueError when `layer` or one of its layers is among `placed` (id: its path
        below this layer, None for this layer itself), else add them there. One
        instance in two places would keep one forward's cache for two calls (wrong
        weight gradients) and have its parameters listed, and stepped, twice.
        `adding`: the message is about adding `layer`, else about a tree built so."""
        for path, sub in layer.named_layers(name):
            if id(sub) not in placed:
                placed[id(sub)] = path
                continue
            where, kind = placed[id(sub)], type(self).__name__
            if not adding:  # (never the root itself: adding refuses cycles)
                raise ValueError(
                    f"layer {type(sub).__name__} {path!r} of this {kind} is also its layer "
                    f"{where!r}; a layer instance may be in one place only (shared weights "
                    "are not supported): create another layer"
                )
            what = f"{type(sub).__name__} {path!r}" if path != name else repr(name)
            if where is None:
                raise ValueError(
                    f"cannot add layer {what} to this {kind}: it is "
                    f"that {kind} itself, which cannot contain itself"
                )
            raise ValueError(
                f"cannot add layer {what} to this {kind}: that "
                f"{type(sub).__name__} is already in it (as {where!r}); a layer instance "
                "may be in one place only (shared weights are not supported): create "
                "another layer"
            )

    def _register(self, name: str, kind: str) -> None:
        """Check that `name` can hold a `kind` ("parameter", "buffer" or "layer"), and
        forget it in the other registries (a name keeps its place in its own, so the
        state dict's order stays put when a parameter is replaced)."""
        if "_children" not in self.__dict__:
            raise AttributeError(
                f"cannot register {kind} {name!r} before Layer.__init__(): "
                f"call super().__init__() first in {type(self).__name__}.__init__"
            )
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"a {kind} name must be a non-empty string without '.', got {name!r}")
        if name.startswith(RESERVED_PREFIX):
            raise ValueError(
                f"a {kind} name must not begin with {RESERVED_PREFIX!r} (model files keep "
                f"their own records under such names), got {name!r}"
            )
        if hasattr(type(self), name):
            raise ValueError(
                f"cannot register {kind} {name!r}: {type(self).__name__} has a method "
                "or class attribute of that name"
            )
        registries = {
            "parameter": self._params,
            "buffer": self._buffers,
            "layer": self._children,
            "generator": self._generators,
        }
        for other_kind, registry in registries.items():
            if other_kind != kind:
                registry.pop(name, None)  # type: ignore[attr-defined]

    def _check_reassignment(self, name: str, value: Any) -> None:
        """A registered name takes None or a value of its kind (Parameters and Layers
        never get here: __setattr__ re-registers them)."""
        if name in self._children:
            if value is not None:
                raise TypeError(
                    f"cannot assign a {type(value).__name__} to layer {name!r}: "
                    "expected a Layer or None"
                )
            del self._children[name]  # type: ignore[attr-defined]
        elif name in self._params and value is not None:
            raise TypeError(
                f"cannot assign a {type(value).__name__} to parameter {name!r}: "
                "expected a Parameter or None"
            )
        elif name in self._buffers and value is not None and not isinstance(value, np.ndarray):
            raise TypeError(
                f"cannot assign a {type(value).__name__} to buffer {name!r}: "
                "expected a numpy array or None"
            )
        elif name in self._generators and not isinstance(value, np.random.Generator):
            raise TypeError(
                f"cannot assign a {type(value).__name__} to generator {name!r}: "
                "expected a numpy.random.Generator"
            )

    # --- the two passes ---------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """x -> y. A training forward (or any inside `inference_backward()`) keeps what
        `backward` needs."""
        raise NotImplementedError

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """dy = dL/dy -> dx = dL/dx; adds dL/dparameter into each parameter's grad.

        With need_input_grad=False nothing needs dx (the first layer of a network
        being trained): a layer may skip computing it, and returns None. A subclass
        whose backward takes only dy gets this argument from the base class (see
        `__init_subclass__`).

        Raises:
            NoForwardError: no forward has kept what backward needs.
        """
        raise NotImplementedError

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give a subclass's `backward(self, dy)` the base contract's need_input_grad,
        so that any model can be called as `model.backward(dy, need_input_grad=False)`:
        dx is computed anyway, and None returned when it is not needed."""
        super().__init_subclass__(**kwargs)
        backward = cls.__dict__.get("backward")
        if callable(backward) and not _takes_need_input_grad(backward):
            cls.backward = _accepting_need_input_grad(backward)  # type: ignore[method-assign]

    def __call__(self, x: Any, training: bool = False, *, name: str | None = None) -> Any:
        """`forward(x, training)` on arrays. On a `SymbolicTensor` (or a list of them, for
        a layer that takes several inputs) it records a node of a graph instead and
        returns the symbolic output (`npcnn.nn.symbolic`); `name` is then the layer's
        name in the Model (its state-dict prefix)."""
        if isinstance(x, np.ndarray):
            return self.forward(x, training=training)
        if is_symbolic(x):
            return call_symbolic(self, x, name)
        if isinstance(x, (list, tuple)) and not self.takes_several_inputs:
            raise TypeError(
                f"{type(self).__name__} takes one input (a numpy array or a symbolic "
                f"tensor), got a {type(x).__name__} of {len(x)}"
            )
        return self.forward(x, training=training)

    # --- walking the layers ------------------------------------------------
    def children(self) -> Iterator[Layer]:
        """The direct child layers, in registration order."""
        return iter(list(self._children.values()))

    def named_children(self) -> Iterator[tuple[str, Layer]]:
        """`(name, layer)` for each direct child, in registration order."""
        return iter(list(self._children.items()))

    def named_layers(self, prefix: str = "") -> Iterator[tuple[str, Layer]]:
        """`(dotted_name, layer)` for this layer (named `prefix`) and every layer below
        it, depth first, as PyTorch's named_modules: ("", model), ("0", ...), ("3.1", ...)."""
        yield prefix, self
        for name, child in self._children.items():
            yield from child.named_layers(f"{prefix}.{name}" if prefix else name)

    # --- parameters, buffers and state -----------------------------------
    def named_parameters(
        self, prefix: str = "", recurse: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """Yield `(prefix + dotted_name, parameter)` pairs, such as `("0.weight", p)`;
        with `recurse=False`, only this layer's own parameters."""
        for name in self._params:
            param = getattr(self, name)
            if param is not None:
                yield prefix + name, param
        if recurse:
            for child_name, child in self._children.items():
                yield from child.named_parameters(f"{prefix}{child_name}.")

    def parameters(self) -> list[Parameter]:
        """Every trainable parameter once, in a fixed order (the optimiser's order): a
        Parameter that two layers hold (tied weights) comes at its first place only, as
        in PyTorch, so that an optimiser steps it once, with the sum of both gradients.

        Raises:
            ValueError: a layer instance is at two places of the tree (`check_placed_once`).
        """
        self.check_placed_once()
        return list({id(p): p for _, p in self.named_parameters()}.values())

    def named_buffers(
        self, prefix: str = "", recurse: bool = True
    ) -> Iterator[tuple[str, np.ndarray]]:
        """Yield `(prefix + dotted_name, array)` for non-trainable state (running
        statistics); with `recurse=False`, only this layer's own buffers."""
        for name in self._buffers:
            buffer = getattr(self, name)
            if buffer is not None:
                yield prefix + name, buffer
        if recurse:
            for child_name, child in self._children.items():
                yield from child.named_buffers(f"{prefix}{child_name}.")

    def named_generators(
        self, prefix: str = "", recurse: bool = True
    ) -> Iterator[tuple[str, np.random.Generator]]:
        """Yield `(prefix + dotted_name, generator)` for every registered random
        generator, this layer's first, then its children's (a shared one once per
        name); with `recurse=False`, only this layer's own."""
        for name in self._generators:
            yield prefix + name, getattr(self, name)
        if recurse:
            for child_name, child in self._children.items():
                yield from child.named_generators(f"{prefix}{child_name}.")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, keyed by dotted name."""
        state = {name: p.data.copy() for name, p in self.named_parameters()}
        state.update({name: np.array(b, copy=True) for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray], strict: bool = True) -> None:
        """Copy arrays from `state` into this layer's parameters and buffers, in place.

        Raises:
            ValueError: with `strict`, if a name is missing or unexpected (the
                first few of each are named); always, if an array's shape does
                not match or it is not a float where the model holds one (or
                the reverse: integers for a counter).
        """
        own = {name: p.data for name, p in self.named_parameters()}
        own.update(self.named_buffers())
        if strict:
            missing = [name for name in own if name not in state]
            unexpected = [name for name in state if name not in own]
            if missing or unexpected:
                raise ValueError(
                    "state dict does not match the model: "
                    + "; ".join(
                        f"{what} {names_list(names)}"
                        for what, names in (("missing", missing), ("unexpected", unexpected))
                        if names
                    )
                )
        for name, target in own.items():
            if name not in state:
                continue
            value = np.asarray(state[name])
            if value.shape != target.shape:
                raise ValueError(
                    f"{name}: shape {value.shape} in the state dict, {target.shape} in the model"
                )
            if (value.dtype.kind == "f") != (target.dtype.kind == "f"):
                raise ValueError(
                    f"{name}: dtype {value.dtype} in the state dict, {target.dtype} in the model"
                )
            target[...] = value

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
        for _, layer in self.named_layers():
            for _, p in layer.named_parameters(recurse=False):
                p.data = p.data.astype(dtype)
                p.grad = p.grad.astype(dtype)
            for name, b in layer.named_buffers(recurse=False):
                if np.issubdtype(b.dtype, np.floating):
                    setattr(layer, name, b.astype(dtype))
        return self

    def reset_parameters(self, rng: np.random.Generator | int | None = None) -> None:
        """Re-initialise parameters (and reset buffers) from `rng`; containers recurse."""
        rng = np.random.default_rng(rng)
        for child in self.children():
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

        with passes_undone(self):  # a training forward's caches stay for its backward
            return summarize(self, input_shape, print_fn)

    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this layer (JSON-serialisable)."""
        return {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Layer:
        """The layer `config()` describes: `cls(**config)`. Containers whose
        configuration holds their children's descriptions override it (Sequential).

        Raises:
            TypeError, ValueError: the configuration does not fit the constructor (a
                switch such as `bias` that is not true or false, too: "yes" would
                count as true).
        """
        check_switches(cls, config)
        return cls(**config)

    @classmethod
    def state_shapes(cls, config: Mapping[str, Any]) -> dict[str, tuple[int, ...]] | None:
        """The shapes of the layer's own parameters and buffers (not its children's)
        that `from_config(config)` would allocate, computed without allocating them.

        `npcnn.load` compares them with the file's arrays before building the
        layer, so that a crafted architecture cannot claim gigabytes. None (the
        default) means "not stated": the layer is built, then checked.
        """
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def check_switches(cls: type, config: Mapping[str, Any]) -> None:
    """TypeError unless each of `config`'s values for a bool argument of `cls`'s
    constructor (`bias`, `ceil_mode`) is true or false: "yes" or 1 would count as true."""
    for name in _switches(cls).intersection(config):
        if not isinstance(config[name], (bool, np.bool_)):
            raise TypeError(f"{name} must be true or false, got {config[name]!r}")


@functools.cache
def _switches(cls: type) -> frozenset[str]:
    """The arguments of `cls`'s constructor annotated as bool (its on/off settings)."""
    try:
        parameters = inspect.signature(cls.__init__, eval_str=True).parameters
    except (NameError, TypeError, ValueError, SyntaxError):  # annotations it cannot resolve
        return frozenset()
    return frozenset(name for name, p in parameters.items() if p.annotation is bool)


def _takes_need_input_grad(backward: Callable[..., Any]) -> bool:
    """Whether `backward` accepts a need_input_grad keyword (by name, or any keyword)."""
    parameters = inspect.signature(backward).parameters.values()
    return any(p.name == "need_input_grad" or p.kind is p.VAR_KEYWORD for p in parameters)


def _accepting_need_input_grad(
    backward: Callable[[Any, np.ndarray], np.ndarray],
) -> Callable[..., np.ndarray | None]:
    """`backward(self, dy)` as `backward(self, dy, need_input_grad=True)`."""

    @functools.wraps(backward)
    def with_need_input_grad(
        self: Layer, dy: np.ndarray, need_input_grad: bool = True
    ) -> np.ndarray | None:
        dx = backward(self, dy)
        return dx if need_input_grad else None

    return with_need_input_grad


def check_input(x: np.ndarray, ndim: int, layer: Layer, channels: int | None = None) -> None:
    """Raise a clear ValueError when `x` has the wrong rank or channel count, and a
    TypeError when it is not a floating-point array (see `check_float`)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{type(layer).__name__} expects a numpy array, got {type(x).__name__}")
    check_float(x, type(layer).__name__)
    check_shape(x.shape, ndim, layer, channels)


def check_shape(
    shape: tuple[int, ...], ndim: int, layer: Layer, channels: int | None = None
) -> None:
    """Raise a clear ValueError, naming `layer`, when an input of `shape` has not `ndim`
    axes or not `channels` channels (features) on axis 1."""
    layout = {2: "(N, features)", 4: "(N, C, H, W)"}.get(ndim, f"{ndim} dimensions")
    if len(shape) != ndim:
        raise ValueError(
            f"{type(layer).__name__} expects input of shape {layout}, got shape {shape}"
        )
    if channels is not None and shape[1] != channels:
        raise ValueError(
            f"{type(layer).__name__} expects {channels} "
            f"{'channels' if ndim == 4 else 'features'}, got input of shape {shape}"
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


@contextmanager
def passes_undone(model: Layer) -> Iterator[None]:
    """Within the block, forward passes of `model` leave no trace: afterwards every
    layer below it, every step of their plans and every chain of a Model (which keeps
    the steps of its last forward) has the attributes it had before
    (what the last training forward kept for backward among them). For looking at a
    model (`summary`, an export) between a training forward and its backward."""
    layers = [layer for _, layer in model.named_layers()]
    owners: list[Any] = list(layers)
    owners += [step for layer in layers if hasattr(layer, "plan") for step in layer.plan()]
    owners += [chain for layer in layers for chain in getattr(layer, "chains", ())]  # a Model's
    saved = [(owner, dict(vars(owner))) for owner in owners]
    try:
        yield
    finally:
        for owner, attributes in saved:
            vars(owner).clear()
            vars(owner).update(attributes)


def keeps_cache(training: bool) -> bool:
    """Whether a forward in this mode must record what backward needs."""
    return training or _inference_backward


class NoForwardError(RuntimeError):
    """`backward` was called before a training `forward`."""

    def __init__(self, layer: object) -> None:
        super().__init__(
            f"{type(layer).__name__}.backward() called before forward(x, training=True)"
        )
