"""The states of a model's random generators, as JSON data, sharing kept.

A layer that draws random numbers (dropout's masks) registers its
``numpy.random.Generator`` (`Layer.register_generator`). Its state is part
of what a model file and a checkpoint hold, so that a loaded or resumed
model draws the same numbers as the original. One generator may serve
several layers (a preset hands one ``rng`` to both of its dropout layers,
which then draw from one stream in turn); it is recorded once, under its
first name, and the other names say ``{"shared_with": first_name}``, so the
restored layers share one generator again.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from npcnn.nn.module import Layer


def _owned_generators(model: Layer) -> Iterator[tuple[str, Layer, str, np.random.Generator]]:
    """(dotted name, owning layer, attribute, generator) for every registered generator."""
    for layer_name, layer in model.named_layers():
        for attr, generator in layer.named_generators(recurse=False):
            yield f"{layer_name}.{attr}" if layer_name else attr, layer, attr, generator


def generator_states(model: Layer) -> dict[str, dict[str, Any]]:
    """{dotted name: bit-generator state (JSON data) or {"shared_with": name}}.

    Keys are dotted names such as ``"3.rng"`` (layer "3", generator ``rng``).
    """
    states: dict[str, dict[str, Any]] = {}
    first_name: dict[int, str] = {}
    for name, _, _, generator in _owned_generators(model):
        if id(generator) in first_name:
            states[name] = {"shared_with": first_name[id(generator)]}
        else:
            first_name[id(generator)] = name
            states[name] = jsonable(generator.bit_generator.state)
    return states


def set_generator_states(model: Layer, states: Mapping[str, Mapping[str, Any]]) -> None:
    """Restore :func:`generator_states` output, sharing generators as they were shared.

    Raises:
        ValueError: the model's generators are not the ones recorded, or a state
            is damaged (the model's generators are then left as they were).
    """
    found = {name: (layer, attr) for name, layer, attr, _ in _owned_generators(model)}
    if set(found) != set(states):
        raise ValueError(
            f"recorded random generators {sorted(states)}, the model has {sorted(found)}"
        )
    restored: dict[str, np.random.Generator] = {}
    for name in found:
        state = states[name]
        if not isinstance(state, Mapping):
            raise ValueError(f"random generator {name!r}: damaged state")
        shared_with = state.get("shared_with")
        if shared_with is not None:
            if shared_with not in restored:
                raise ValueError(f"generator {name!r} is shared with unknown {shared_with!r}")
            restored[name] = restored[shared_with]
        else:
            restored[name] = _generator_from_state(name, state)
    for name, (layer, attr) in found.items():
        setattr(layer, attr, restored[name])


def _generator_from_state(name: str, state: Mapping[str, Any]) -> np.random.Generator:
    """A new Generator whose bit generator (named in ``state``) is set to ``state``."""
    kind = getattr(np.random, str(state.get("bit_generator")), None)
    if not (isinstance(kind, type) and issubclass(kind, np.random.BitGenerator)):
        raise ValueError(
            f"generator {name!r}: unknown bit generator {state.get('bit_generator')!r}"
        )
    bit_generator = kind()
    try:
        bit_generator.state = dict(state)
    except (TypeError, ValueError, KeyError, OverflowError) as err:
        raise ValueError(f"generator {name!r}: damaged state ({type(err).__name__})") from None
    return np.random.Generator(bit_generator)


def jsonable(value: Any) -> Any:
    """Bit-generator states as JSON: PCG64's are plain ints; arrays (MT19937) become lists."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
