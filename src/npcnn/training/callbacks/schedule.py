"""The learning-rate schedule as an extension: one scheduler step after every epoch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from npcnn.training.callbacks.base import Callback
from npcnn.training.schedules import LRScheduler

if TYPE_CHECKING:
    from npcnn.training.trainer import Trainer


class LRSchedule(Callback):
    """Call ``scheduler.step()`` once at the end of every epoch, after its validation.

    Epoch e (1-based) thus trains with lr_{e-1} of the schedule (see
    :mod:`npcnn.training.schedules`). State: ``scheduler.state_dict()``,
    saved under "scheduler"; restoring it sets the optimiser's rate. A resume
    keeps the settings this scheduler was built with (``t_max`` set to a new
    number of epochs, say) and takes the position from the checkpoint.
    """

    def __init__(self, scheduler: LRScheduler) -> None:
        self.scheduler = scheduler

    @property
    def state_key(self) -> str:
        return "scheduler"

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.scheduler.load_state_dict(state, keep_settings=True)

    def on_train_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        self.scheduler.step()
