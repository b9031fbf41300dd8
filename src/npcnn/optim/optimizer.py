"""What every optimiser shares: the parameter list, zero_grad and a flat state dict."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

from npcnn.nn.module import Parameter


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

    def __init__(self, params: Iterable[Parameter], lr: float) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        if not all(isinstance(p, Parameter) for p in self.params):
            raise TypeError("optimizer expects Parameter objects, e.g. model.parameters()")
        if lr < 0:
            raise ValueError(f"learning rate must be >= 0, got {lr}")
        self.lr = float(lr)
        # Per-parameter state, created lazily on the first step (as PyTorch does).
        self.state: list[dict[str, np.ndarray]] = [{} for _ in self.params]

    def step(self) -> None:
        raise NotImplementedError

    def zero_grad(self) -> None:
        """Reset the gradient of every parameter to zero."""
        for p in self.params:
            p.zero_grad()

    def state_dict(self) -> dict[str, Any]:
        """Hyperparameters and copies of the per-parameter state arrays."""
        out: dict[str, Any] = {name: getattr(self, name) for name in self._hyper_names}
        for i, st in enumerate(self.state):
            for name, value in st.items():
                out[f"state.{i}.{name}"] = np.array(value, copy=True)
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned; ValueError if it does not fit these parameters."""
        for name in self._hyper_names:
            if name in state:
                value = np.asarray(state[name])
                setattr(self, name, tuple(value.tolist()) if value.ndim else value.item())
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
            new_state[i][name] = value.astype(self.params[i].dtype) if value.ndim else value.copy()
        self.state = new_state

    def __repr__(self) -> str:
        hyper = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._hyper_names)
        return f"{type(self).__name__}({hyper})"
