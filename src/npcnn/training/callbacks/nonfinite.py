"""Stop at the first NaN or infinite training loss, before it reaches the weights,
and at the end of an epoch whose steps left NaN or infinite weights or statistics."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from npcnn.training.callbacks.base import Callback
from npcnn.training.errors import NonFiniteLossError, NonFiniteWeightsError

if TYPE_CHECKING:
    from npcnn.training.trainer import Trainer


class FailOnNonFiniteLoss(Callback):
    """Raise :class:`~npcnn.training.NonFiniteLossError` when a batch loss is NaN or infinite.

    Checked before the backward pass, so that step is not applied and the
    trainer's last checkpoint (named in the error) is left untouched
    (Chainer's ``FailOnNonNumber``, Keras' ``TerminateOnNaN``). A finite loss
    can still come with an update that overflows (a huge learning rate): the
    weights and buffers are checked when the epoch's steps are done, before
    anything is evaluated or saved (:class:`~npcnn.training.NonFiniteWeightsError`).
    No state.
    """

    def on_before_backward(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        loss = logs["loss"]
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                logs["epoch"], logs["step"], loss, logs["lr"], trainer.last_checkpoint
            )

    def on_train_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        model = trainer.model
        state = [(n, p.data) for n, p in model.named_parameters()] + list(model.named_buffers())
        for name, data in state:
            if data.dtype.kind == "f" and not np.isfinite(data).all():
                raise NonFiniteWeightsError(
                    logs["epoch"], name, logs["lr"], trainer.last_checkpoint
                )
