"""What every optimiser shares: the parameter list, zero_grad and a flat state dict."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

from npcnn.nn.module import Parameter

#: Hyperparameter -> (its name in messages, lowest value, highest value, whether the
#: highest is allowed). The bounds are torch.optim's, which however lets NaN through
#: (every comparison with NaN is False) and momentum >= 1, which diverges.
HYPERPARAMETER_RANGES: dict[str, tuple[str, float, float, bool]] = {
    "lr": ("learning rate", 0.0, math.inf, False),
    "momentum": ("momentum value", 0.0, 1.0, False),
    "dampening": ("dampening value", 0.0, 1.0, True),
    "weight_decay": ("weight_decay value", 0.0, math.inf, False),
    "eps": ("epsilon value", 0.0, math.inf, False),
    "betas": ("beta parameter", 0.0, 1.0, False),
}


def check_hyperparameter(name: str, value: Any) -> Any:
    """`value` as a float (a tuple of floats for "betas") if it lies in its range
    (`HYPERPARAMETER_RANGES`); other names are returned unchanged.

    Raises:
        ValueError: "Invalid learning rate: nan (must be finite and >= 0)", as
            torch.optim says it, with the range.
    """
    if name not in HYPERPARAMETER_RANGES:
        return value
    label, low, high, high_allowed = HYPERPARAMETER_RANGES[name]
    if name == "betas":
        if not isinstance(value, tuple | list) or len(value) != 2:
            raise ValueError(f"Invalid betas: {value!r} (must be a pair)")
        return tuple(check_hyperparameter_value(label, v, low, high, high_allowed) for v in value)
    return check_hyperparameter_value(label, value, low, high, high_allowed)


def check_hyperparameter_value(
    label: str, value: Any, low: float, high: float, high_allowed: bool
) -> float:
    """float(value) if low <= value < high (or <= high); ValueError "Invalid <label>: ..."."""
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    inside = number and low <= value and (value <= high if high_allowed else value < high)
    if not inside:
        if high == math.inf:
            bounds = f"finite and >= {low:g}"
        else:
            bounds = f"in [{low:g}, {high:g}{']' if high_allowed else ')'}"
        raise ValueError(f"Invalid {label}: {value!r} (must be {bounds})")
    return float(value)


class Optimizer:
    """Base class. Subclasses implement `step()` and name their per-parameter
    state arrays in `_state_names` and their hyperparameters in `_hyper_names`.

    The state dict is flat, so that it fits in an .npz next to the model:
    hyperparameters by name ("lr", "momentum", ...) and per-parameter arrays
    as "state.<index>.<name>", the index being the parameter's position in the
    list the optimiser was built with.
    """

    _state_names: ClassVar[tuple[str, ...]] = ()
    _hyper_names: ClassVar[tuple[str, ...]] = ("lr",)
    #: State arrays that cannot be negative (a second moment, whose square root `step` takes).
    _nonnegative_states: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Iterable[Parameter], lr: float) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        if not all(isinstance(p, Parameter) for p in self.params):
            raise TypeError("optimizer expects Parameter objects, e.g. model.parameters()")
        self.lr = lr  # (checked by __setattr__, as every hyperparameter)
        # Per-parameter state, created lazily on the first step (as PyTorch does).
        self.state: list[dict[str, np.ndarray]] = [{} for _ in self.params]

    def __setattr__(self, name: str, value: Any) -> None:
        """Hyperparameters (the names of `HYPERPARAMETER_RANGES`) are checked whenever
        they are set, by the constructor or later: `opt.lr = float("nan")` by hand, or by
        a schedule of one's own, fails there with the range, rather than as NaN weights
        a step later."""
        object.__setattr__(self, name, check_hyperparameter(name, value))

    def step(self) -> None:
        raise NotImplementedError

    def zero_grad(self) -> None:
        """Reset the gradient of every parameter to zero."""
        for p in self.params:
            p.zero_grad()

    def state_dict(self) -> dict[str, Any]:
        """Hyperparameters and copies of the per-parameter state arrays."""
        out: dict[str, Any] = {name: getattr(self, name) for name in self._hyper_names}
        out["param_count"] = len(self.params)  # (a state of other parameters is refused)
        for i, st in enumerate(self.state):
            for name, value in st.items():
                out[f"state.{i}.{name}"] = np.array(value, copy=True)
        return out

    def _check_complete(self, states: list[dict[str, np.ndarray]]) -> None:
        """Each parameter's state is empty (no step yet) or has every array `step` reads."""
        for i, st in enumerate(states):
            missing = [name for name in self._state_names if name not in st]
            if st and missing:
                raise ValueError(f"optimizer state of parameter {i} lacks {', '.join(missing)}")

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned; ValueError if it does not fit these parameters
        or a hyperparameter is out of its range (then nothing is changed)."""
        hyper = {}
        for name in self._hyper_names:
            if name in state:
                value = np.asarray(state[name])
                value = tuple(value.tolist()) if value.ndim else value.item()
                hyper[name] = check_hyperparameter(name, value)
        count = state.get("param_count", len(self.params))  # (absent from older files)
        if int(np.asarray(count)) != len(self.params):
            raise ValueError(
                f"optimizer state of {int(np.asarray(count))} parameters, but this optimiser "
                f"has {len(self.params)}"
            )
        new_state: list[dict[str, np.ndarray]] = [{} for _ in self.params]
        for key, value in state.items():
            if not key.startswith("state."):
                continue
            _, index, name = key.split(".", 2)
            i = int(index)
            if i >= len(self.params):
                raise ValueError(
                    f"optimizer state {key!r} names parameter {i}, but there are "
                    f"only {len(self.params)}"
                )
            value = np.asarray(value)
            if value.ndim and value.shape != self.params[i].shape:
                raise ValueError(
                    f"optimizer state {key!r} has shape {value.shape}, "
                    f"parameter {i} has shape {self.params[i].shape}"
                )
            if name not in self._state_names:
                kind = type(self).__name__
                raise ValueError(f"optimizer state {key!r}: {kind} keeps no {name!r}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"optimizer state {key!r} holds NaN or infinite values")
            if name in self._nonnegative_states and np.any(value < 0):
                raise ValueError(f"optimizer state {key!r} holds negative values")
            new_state[i][name] = value.astype(self.params[i].dtype) if value.ndim else value.copy()
        self._check_complete(new_state)
        for name, value in hyper.items():
            setattr(self, name, value)
        self.state = new_state

    def __repr__(self) -> str:
        hyper = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._hyper_names)
        return f"{type(self).__name__}({hyper})"
