"""The per-epoch console line of ``npcnn train``, naming the test split as such."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from npcnn.training.callbacks import Callback


class EpochLine(Callback):
    """Print ``<unit> k/K  train loss L acc A  test loss L acc A  lr R  S s`` after each epoch.

    ``unit`` is "iteration" for full-batch training (one step per epoch, as
    the notebook counted) and "epoch" otherwise. The "test" figures are the
    trainer's validation data, which the command sets to the test split.
    """

    def __init__(self, unit: str = "epoch", print_fn: Callable[[str], Any] = print) -> None:
        self.unit = unit
        self.print_fn = print_fn

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        width = len(str(logs["epochs"]))
        parts = [
            f"{self.unit} {logs['epoch']:>{width}}/{logs['epochs']}",
            f"train loss {logs['loss']:.4f} acc {100 * logs['accuracy']:6.2f}%",
        ]
        if logs.get("val_loss") is not None:
            parts.append(f"test loss {logs['val_loss']:.4f} acc {100 * logs['val_accuracy']:6.2f}%")
        parts.append(f"lr {logs['lr']:.4g}")
        parts.append(f"{logs['seconds']:.1f}s")
        self.print_fn("  ".join(parts))
