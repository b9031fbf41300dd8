"""Per-epoch learning-rate schedules with torch.optim.lr_scheduler's values.

A scheduler reads the optimiser's learning rate when it is built (the base
rate lr_0) and sets ``optimizer.lr`` from a closed-form formula of the epoch
count t (``last_epoch``). ``step()`` is called once after every epoch, so
epoch e (1-based) trains with lr_{e-1}:

    StepLR:             lr_t = lr_0 * gamma ** floor(t / step_size)
    CosineAnnealingLR:  lr_t = eta_min + (lr_0 - eta_min) * (1 + cos(pi * t / t_max)) / 2

(PyTorch computes the same values recursively; the closed forms agree to
rounding and make a schedule's state just ``last_epoch``.) One difference
follows: a rate set by hand between steps lasts until the next ``step()``,
which sets the formula's rate again, whereas PyTorch's recursion carries the
change on (StepLR halving the new rate, say). To change the course of a
schedule, build a new one on the optimiser.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from npcnn.optim import Optimizer


class LRScheduler:
    """Base class: subclasses implement :meth:`lr_at` and list their settings in ``_config``.

    After construction ``last_epoch`` is 0 and ``optimizer.lr`` is lr_0;
    each :meth:`step` adds one to ``last_epoch`` and sets
    ``optimizer.lr = lr_at(last_epoch)``.
    """

    _config: tuple[str, ...] = ()

    def __init__(self, optimizer: Optimizer) -> None:
        if not hasattr(optimizer, "lr"):
            raise TypeError(f"expected an optimiser with an lr attribute, got {optimizer!r}")
        self.optimizer = optimizer
        self.base_lr = float(optimizer.lr)
        self.last_epoch = 0

    def lr_at(self, epoch: int) -> float:
        """The learning rate after ``epoch`` calls of :meth:`step`."""
        raise NotImplementedError

    def step(self) -> float:
        """Advance one epoch and set the optimiser's learning rate; returns it."""
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)
        return self.optimizer.lr

    def get_last_lr(self) -> float:
        """The learning rate the schedule last set (lr_0 before any step)."""
        return self.lr_at(self.last_epoch)

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers: the type, ``last_epoch``, ``base_lr`` and the settings."""
        state = {
            "type": type(self).__name__,
            "last_epoch": self.last_epoch,
            "base_lr": self.base_lr,
        }
        state.update(self.settings())
        return state

    def load_state_dict(self, state: Mapping[str, Any], keep_settings: bool = False) -> None:
        """Restore :meth:`state_dict` output and set the optimiser's rate to match.

        As PyTorch, the saved settings (``t_max``, ``step_size``, ...) replace
        this scheduler's; with ``keep_settings`` only the position and base
        rate are restored, and the schedule goes on with the settings it was
        built with (a run resumed with more epochs anneals over its new length).
        Raises ValueError if the state belongs to another kind of schedule.
        """
        kind = state.get("type", type(self).__name__)
        if kind != type(self).__name__:
            raise ValueError(f"cannot load a {kind} state into a {type(self).__name__}")
        self.last_epoch = int(state["last_epoch"])
        self.base_lr = float(state["base_lr"])
        for name in () if keep_settings else self._config:
            if name in state:
                setattr(self, name, type(getattr(self, name))(state[name]))
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def settings(self) -> dict[str, Any]:
        """The schedule's settings (``t_max``, ``step_size``, ...), as in :meth:`state_dict`."""
        return {name: getattr(self, name) for name in self._config}

    def __repr__(self) -> str:
        settings = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._config)
        return f"{type(self).__name__}({settings}, last_epoch={self.last_epoch})"


class StepLR(LRScheduler):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs:
    lr_t = lr_0 * gamma ** floor(t / step_size).
    """

    _config = ("step_size", "gamma")

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"step_size must be a positive int, got {step_size!r}")
        if gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        super().__init__(optimizer)
        self.step_size = step_size
        self.gamma = float(gamma)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """Half a cosine from lr_0 down to ``eta_min`` over ``t_max`` epochs (SGDR without restarts):
    lr_t = eta_min + (lr_0 - eta_min) * (1 + cos(pi * t / t_max)) / 2.

    Past ``t_max`` the cosine continues (the rate rises again), as in PyTorch;
    set ``t_max`` to the number of epochs.
    """

    _config = ("t_max", "eta_min")

    def __init__(self, optimizer: Optimizer, t_max: int, eta_min: float = 0.0) -> None:
        if isinstance(t_max, bool) or not isinstance(t_max, int) or t_max < 1:
            raise ValueError(f"t_max must be a positive int, got {t_max!r}")
        if eta_min < 0:
            raise ValueError(f"eta_min must be >= 0, got {eta_min}")
        super().__init__(optimizer)
        self.t_max = t_max
        self.eta_min = float(eta_min)

    def lr_at(self, epoch: int) -> float:
        if epoch == 0:
            return self.base_lr
        cosine = (1 + math.cos(math.pi * epoch / self.t_max)) / 2
        return self.eta_min + (self.base_lr - self.eta_min) * cosine
