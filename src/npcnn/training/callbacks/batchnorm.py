"""Batch-norm statistics recomputed for the weights an epoch ended with."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from npcnn.nn import update_bn
from npcnn.training.callbacks.base import Callback
from npcnn.training.evaluate import as_model_input

if TYPE_CHECKING:
    from npcnn.training.trainer import Trainer


class RecomputeBatchNorm(Callback):
    """After each epoch's training, before its validation, recompute every batch norm's
    running statistics on ``data`` (:func:`npcnn.nn.update_bn`).

    ``data``: images (N, H, W) / (N, C, H, W), fed in batches of
    ``batch_size`` through :func:`~npcnn.training.as_model_input` (a last
    batch of one image joins the one before: batch norm over features has no
    statistics of one image), or an iterable of batches. For short or
    full-batch runs, where the running average lags far behind weights that
    change fast. No state.
    """

    def __init__(self, data: Any, batch_size: int = 500) -> None:
        self.data = data
        self.batch_size = batch_size

    def _batches(self) -> Iterable[np.ndarray]:
        data, size = self.data, self.batch_size
        if isinstance(data, np.ndarray):
            starts = list(range(0, len(data), size))
            if len(starts) > 1 and len(data) - starts[-1] == 1:
                starts.pop()  # a last batch of one image joins the one before it
            ends = [*starts[1:], len(data)]
            return (as_model_input(data[a:b]) for a, b in zip(starts, ends, strict=True))
        return data

    def on_train_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        update_bn(trainer.model, self._batches())
