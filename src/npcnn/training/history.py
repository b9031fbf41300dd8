"""What a training run measured: one record per epoch and one per step, like Keras' History."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The keys of every per-epoch record, in the order the logs write them.
EPOCH_KEYS = (
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "seconds",
    "images_per_second",
)
#: The keys of every per-step record.
STEP_KEYS = ("epoch", "step", "global_step", "loss", "accuracy")


@dataclass
class History:
    """Per-epoch and per-step metrics of a run (plain Python numbers, JSON-ready).

    ``epochs``: one dict per completed epoch with the keys of :data:`EPOCH_KEYS`:

    * ``epoch``: 1-based epoch number;
    * ``loss``/``accuracy``: the mean over the epoch's steps of the
      training-mode batch loss/accuracy, weighted by batch size (as Keras):
      ``sum_b(n_b * loss_b) / sum_b(n_b)``;
    * ``val_loss``/``val_accuracy``: on the validation data after the epoch,
      in inference mode (None without validation data);
    * ``lr``: the learning rate the epoch's steps used;
    * ``seconds``: wall time of the epoch including validation;
    * ``images_per_second``: training examples of the epoch / seconds spent
      on its training steps (excluding validation).

    ``steps``: one dict per optimiser step with the keys of :data:`STEP_KEYS`
    (``step`` is 1-based within its epoch, ``global_step`` 1-based over the run).

    ``interrupted``: True when the run ended by Ctrl-C (see
    :class:`npcnn.training.TrainingInterrupted`).
    """

    epochs: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False

    def __len__(self) -> int:
        return len(self.epochs)

    def metric(self, name: str) -> list[Any]:
        """The per-epoch values of one key, e.g. ``history.metric("val_loss")``."""
        if name not in EPOCH_KEYS:
            raise KeyError(f"unknown metric {name!r} (known: {', '.join(EPOCH_KEYS)})")
        return [record.get(name) for record in self.epochs]

    @property
    def last(self) -> dict[str, Any] | None:
        """The record of the last completed epoch, or None before the first."""
        return self.epochs[-1] if self.epochs else None

    def to_dict(self) -> dict[str, Any]:
        """A deep copy as ``{"epochs": [...], "steps": [...], "interrupted": bool}``."""
        return {
            "epochs": copy.deepcopy(self.epochs),
            "steps": copy.deepcopy(self.steps),
            "interrupted": self.interrupted,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        """Rebuild a History from :meth:`to_dict` output; ValueError if it is malformed."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a history must be a mapping, got {type(data).__name__}")
        epochs, steps = data.get("epochs", []), data.get("steps", [])
        if not isinstance(epochs, list) or not all(isinstance(r, Mapping) for r in epochs):
            raise ValueError("history 'epochs' must be a list of records")
        if not isinstance(steps, list) or not all(isinstance(r, Mapping) for r in steps):
            raise ValueError("history 'steps' must be a list of records")
        return cls(
            epochs=[dict(r) for r in epochs],
            steps=[dict(r) for r in steps],
            interrupted=bool(data.get("interrupted", False)),
        )
