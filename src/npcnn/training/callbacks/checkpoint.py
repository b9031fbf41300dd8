"""Resumable checkpoints written by a callback: every few epochs, or only the best."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from npcnn.training.callbacks.base import Callback


class ModelCheckpoint(Callback):
    """Write a full training checkpoint (``trainer.save_checkpoint``) after epochs.

    ``path`` may contain ``{epoch}`` (e.g. ``"ckpt-{epoch:03d}.npz"``) to keep
    one file per epoch; otherwise each write replaces the last (atomically).
    Every ``every`` epochs; with ``monitor`` (a History key such as
    ``"val_loss"`` or ``"val_accuracy"``) only when that value improved, in
    the direction ``mode`` ("min" or "max"). ``best`` holds the best value.
    The files load with :func:`npcnn.training.load_checkpoint` and resume
    with ``Trainer.fit(..., resume_from=path)``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        every: int = 1,
        monitor: str | None = None,
        mode: str = "min",
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.path = str(path)
        self.every = every
        self.monitor = monitor
        self.mode = mode
        self.best: float | None = None
        self.last_path: Path | None = None

    def _improved(self, value: float | None) -> bool:
        if value is None or not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        if logs["epoch"] % self.every:
            return
        if self.monitor is not None:
            value = logs.get(self.monitor)
            if not self._improved(value):
                return
            self.best = value
        self.last_path = trainer.save_checkpoint(self.path.format(epoch=logs["epoch"]))
