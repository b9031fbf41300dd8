"""Layer types by name: how a saved architecture names a layer, and rebuilds it.

A layer is described as {"type": NAME, "config": layer.config()} (`layer_spec`)
and rebuilt by `build_layer`, which looks NAME up in `LAYERS` and calls the
class's `from_config`. The built-in layers are registered by `npcnn.nn`; a
class of one's own is registered once with the `register_layer` decorator.

The description may come from a file that was damaged or crafted, so
`build_layer` refuses, with a short ValueError naming the layer, anything a
sane model never has: layers nested more than `MAX_DEPTH` deep, more than
`MAX_LAYERS` layers, and, inside `build_limits(...)`, more parameter and
buffer values than the file holds or shapes other than the file's, checked
from each class's `state_shapes` before the layer allocates them.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from npcnn.nn.module import Layer, check_switches
from npcnn.text import clip, short_repr

#: Every registered layer type by name (the built-in ones and the user's own).
LAYERS: dict[str, type[Layer]] = {}

#: Deeper nesting of layers than any sane model has; also keeps Python's recursion safe.
MAX_DEPTH = 64
#: More layers than any sane model has.
MAX_LAYERS = 10_000

L = TypeVar("L", bound=type[Layer])


@overload
def register_layer(cls: L, *, name: str | None = None) -> L: ...
@overload
def register_layer(cls: None = None, *, name: str | None = None) -> Callable[[L], L]: ...
def register_layer(cls: L | None = None, *, name: str | None = None) -> L | Callable[[L], L]:
    """Class decorator: save and load this layer class under `name` (default: its
    class name), like Keras' `register_keras_serializable`.

        @npcnn.nn.register_layer
        class Scale(nn.Layer): ...

    Registering the same class again (a re-run notebook cell) replaces it.

    Raises:
        TypeError: `cls` is not a Layer subclass.
        ValueError: `name` already belongs to another class.
    """

    def register(layer_cls: L) -> L:
        if not (isinstance(layer_cls, type) and issubclass(layer_cls, Layer)):
            raise TypeError(f"register_layer takes a Layer subclass, got {layer_cls!r}")
        key = layer_cls.__name__ if name is None else name
        other = LAYERS.get(key)
        if other is not None and _qualified(other) != _qualified(layer_cls):
            raise ValueError(
                f"layer type {key!r} is already registered for {_qualified(other)}: "
                "register this class under another name (name=...)"
            )
        LAYERS[key] = layer_cls
        return layer_cls

    return register if cls is None else register(cls)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def layer_type_name(cls: type[Layer]) -> str:
    """The name `cls` is saved under: the name it was registered with, else its class name."""
    for key, registered in LAYERS.items():
        if registered is cls:
            return key
    return cls.__name__


def check_saveable(model: Layer) -> None:
    """Refuse to save what `build_layer` could not load back: a layer class that is not
    registered, a configuration its constructor does not take, nesting deeper than
    `MAX_DEPTH` or more than `MAX_LAYERS` layers.

    Raises:
        ValueError: naming the layer and what to do.
    """
    layers = list(model.named_layers())
    if len(layers) > MAX_LAYERS:
        raise ValueError(f"cannot save: {len(layers):,} layers, more than {MAX_LAYERS:,}")
    for name, layer in layers:
        where = f" (layer {clip(name, 40)!r})" if name else ""
        if name.count(".") >= MAX_DEPTH:
            raise ValueError(f"cannot save: layers nest more than {MAX_DEPTH} deep{where}")
        cls = type(layer)
        if LAYERS.get(layer_type_name(cls)) is not cls:
            raise ValueError(
                f"cannot save: layer type {cls.__name__!r}{where} is not registered: "
                "decorate its class with @npcnn.nn.register_layer"
            )
        if cls.from_config.__func__ is Layer.from_config.__func__:  # cls(**config)
            try:
                inspect.signature(cls).bind(**layer.config())
            except TypeError as err:
                raise ValueError(
                    f"cannot save: {cls.__name__}{where}.config() does not fit its "
                    f"constructor ({err}); config() must return the constructor's arguments"
                ) from None


def layer_spec(layer: Layer) -> dict[str, Any]:
    """The JSON-ready description {"type", "config"} that rebuilds `layer` (recursive)."""
    return {"type": layer_type_name(type(layer)), "config": layer.config()}


@dataclass
class _Build:
    """One build: where it is in the tree of layers, and what the layers built so
    far hold, against the limits (see `build_limits`)."""

    max_elements: int | None
    shapes: Mapping[str, tuple[int, ...]] | None
    path: list[str] = field(default_factory=list)
    layers: int = 0
    elements: int = 0

    def prefix(self) -> str:
        """The dotted name of the layer being built ("" for the model itself)."""
        return ".".join(name for name in self.path if name)

    def where(self) -> str:
        return f" (layer {clip(self.prefix(), 60)!r})" if self.prefix() else ""

    def check(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Compare the layer's stated shapes with the file's, then count them."""
        prefix = f"{self.prefix()}." if self.prefix() else ""
        # A container that built a child without its name leaves the dotted names
        # unknown below it: only the count is checked there (and load_state_dict
        # compares the shapes once the layers exist).
        named = "" not in self.path[1:]
        for name, shape in shapes.items():
            shape = tuple(int(n) for n in shape)
            if self.shapes is None or not named:
                continue
            found = self.shapes.get(prefix + name)
            if found is None:
                raise _SpecError(f"array {clip(prefix + name, 60)!r} is missing from the file")
            if tuple(found) != shape:
                raise _SpecError(
                    f"array {clip(prefix + name, 60)!r} has shape {short_repr(found, 40)} "
                    f"in the file, {short_repr(shape, 40)} in the architecture"
                )
        self.charge(sum(math.prod(max(0, n) for n in shape) for shape in shapes.values()))

    def charge(self, elements: int) -> None:
        self.elements += elements
        if self.max_elements is not None and self.elements > self.max_elements:
            raise _SpecError(
                f"the architecture needs more than the {self.max_elements:,} parameter and "
                f"buffer values the file holds{self.where()}"
            )


_current: ContextVar[_Build | None] = ContextVar("npcnn_build", default=None)


class _SpecError(ValueError):
    """A layer description that cannot be built; the message names the layer (raised
    once, where the fault is, and passed up through the containers unchanged)."""


@contextmanager
def build_limits(
    max_elements: int | None = None, shapes: Mapping[str, tuple[int, ...]] | None = None
) -> Iterator[None]:
    """Limits for the `build_layer` calls within the block: the layers built may
    hold at most `max_elements` parameter and buffer values in all (None: no
    limit), and the arrays a layer class states (`Layer.state_shapes`) must be
    in `shapes` (dotted name -> shape), with those shapes."""
    token = _current.set(_Build(max_elements, shapes))
    try:
        yield
    finally:
        _current.reset(token)


def build_layer(spec: Mapping[str, Any], name: str = "") -> Layer:
    """Rebuild a layer from `layer_spec` output; `name` is its name in its parent
    (its attribute name: "0", "block1"...). Containers' `from_config` call it for
    their children, with their names, so that messages name the layer and a
    file's arrays are checked against the child's shapes before it allocates
    them (without a name only their count is).

    Raises:
        ValueError: an unknown type, a bad configuration, or a limit exceeded
            (see the module docstring); the message names the layer.
    """
    state = _current.get()
    if state is None:
        with build_limits():
            return build_layer(spec, name)
    state.path.append(name)
    try:
        return _build(spec, state)
    except RecursionError:
        raise _SpecError(f"the architecture nests too deeply{state.where()}") from None
    finally:
        state.path.pop()


def _build(spec: Mapping[str, Any], state: _Build) -> Layer:
    if len(state.path) > MAX_DEPTH:
        raise _SpecError(f"layers nest more than {MAX_DEPTH} deep{state.where()}")
    state.layers += 1
    if state.layers > MAX_LAYERS:
        raise _SpecError(f"the architecture has more than {MAX_LAYERS:,} layers")
    cls, config = _parse(spec, state)
    before = state.elements
    try:
        check_switches(cls, config)  # before the shapes, which a switch decides
        shapes = cls.state_shapes(config)
        if shapes is not None:
            state.check(shapes)
        layer = cls.from_config(config)
    except _SpecError:
        raise
    except (TypeError, ValueError, KeyError, OverflowError) as err:
        raise _SpecError(f"cannot build {cls.__name__}{state.where()}: {clip(err)}") from None
    # What was not stated beforehand (a class without state_shapes, children
    # made in its constructor) is counted now that it exists.
    built = sum(p.data.size for p in layer.parameters())
    built += sum(b.size for _, b in layer.named_buffers())
    state.charge(max(0, built - (state.elements - before)))
    return layer


def _parse(spec: Mapping[str, Any], state: _Build) -> tuple[type[Layer], dict[str, Any]]:
    """The class and the configuration of a description; _SpecError if malformed."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("type"), str):
        raise _SpecError(f"malformed layer description{state.where()}: {short_repr(spec)}")
    name = spec["type"]
    cls = LAYERS.get(name)
    if cls is None:
        raise _SpecError(
            f"unknown layer type {clip(name, 40)!r}{state.where()}: register its class with "
            f"@npcnn.nn.register_layer before loading (known: {clip(', '.join(LAYERS), 60)})"
        )
    config = spec.get("config", {})
    if not isinstance(config, Mapping) or not all(isinstance(k, str) for k in config):
        raise _SpecError(f"malformed configuration of {name}{state.where()}: {short_repr(config)}")
    return cls, dict(config)
