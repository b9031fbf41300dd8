"""Resumable checkpoints from callbacks: the run's own snapshot, every few epochs, the best."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from npcnn.training.callbacks.base import Callback

if TYPE_CHECKING:
    from npcnn.training.trainer import Trainer


class Snapshot(Callback):
    """The run's resumable checkpoint at ``path`` (Chainer's ``snapshot``).

    Rewritten (atomically) at the start of every ``on_epoch_end``, and at
    the end of training when Ctrl-C or SIGTERM stopped it between steps:
    then it holds the last completed step, which the uninterrupted run also
    passed through. Stopped in the middle of a step, or while an epoch's end
    was being applied, the state is half updated and the last checkpoint is
    kept instead. Each write sets ``trainer.last_checkpoint``. No state.
    Data-parallel, rank 0 writes it and every rank waits until it is written
    (a barrier), so a rank that fails after it leaves a whole checkpoint.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        self._write(trainer)

    def on_train_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if logs["status"] == "interrupted" and trainer.between_steps:
            self._write(trainer)

    def _write(self, trainer: Trainer) -> None:
        trainer.last_checkpoint = trainer.save_checkpoint(self.path)
        if trainer.data_parallel is not None:
            trainer.data_parallel.world.barrier("the barrier after the checkpoint")


class ModelCheckpoint(Callback):
    """Write a full training checkpoint (``trainer.save_checkpoint``) after epochs.

    ``path`` may contain ``{epoch}`` (e.g. ``"ckpt-{epoch:03d}.npz"``) to keep
    one file per epoch; otherwise each write replaces the last (atomically).
    Every ``every`` epochs; with ``monitor`` (``"loss"``, ``"accuracy"``,
    ``"val_loss"``, ``"val_accuracy"`` or an entry an extension adds to the
    epoch's logs) only when that value improved, in the direction ``mode``
    ("min" or "max"). ``best`` holds the best value; with ``monitor`` it is
    this callback's state (saved under ``"ModelCheckpoint:" + path``), so a
    resumed run compares against the best of the whole run. The files load
    with :func:`npcnn.training.load_checkpoint` and resume with
    ``Trainer.fit(..., resume_from=path)``.
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
        self._due = False

    @property
    def state_key(self) -> str:
        return f"ModelCheckpoint:{self.path}"

    def state_dict(self) -> dict[str, Any]:
        return {} if self.monitor is None else {"monitor": self.monitor, "best": self.best}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = state.get("best")

    def _improved(self, value: float | None) -> bool:
        if value is None or not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def on_train_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        # Decided (and `best` updated) here, before the epoch's snapshot
        # records this callback's state; written once the epoch is complete.
        self._due = logs["epoch"] % self.every == 0
        if self._due and self.monitor is not None:
            value = logs.get(self.monitor)
            self._due = self._improved(value)
            if self._due:
                self.best = value

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if self._due:
            self.last_path = trainer.save_checkpoint(self.path.format(epoch=logs["epoch"]))
            self._due = False
