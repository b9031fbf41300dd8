"""Stop at the first NaN or infinite training loss, before it reaches the weights."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from npcnn.training.callbacks.base import Callback
from npcnn.training.errors import NonFiniteLossError

if TYPE_CHECKING:
    from npcnn.training.trainer import Trainer


class FailOnNonFiniteLoss(Callback):
    """Raise :class:`~npcnn.training.NonFiniteLossError` when a batch loss is NaN or infinite.

    Checked before the backward pass, so that step is not applied and the
    trainer's last checkpoint (named in the error) is left untouched
    (Chainer's ``FailOnNonNumber``, Keras' ``TerminateOnNaN``). No state.
    """

    def on_before_backward(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        loss = logs["loss"]
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                logs["epoch"], logs["step"], loss, logs["lr"], trainer.last_checkpoint
            )
