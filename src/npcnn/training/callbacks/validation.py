"""Validation after every epoch: the model in inference mode on held-out data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from npcnn.training.callbacks.base import Callback
from npcnn.training.evaluate import check_tta, evaluate, evaluate_batches

if TYPE_CHECKING:
    from npcnn.training.trainer import Trainer

ValidationData = tuple[np.ndarray, np.ndarray] | Iterable[tuple[np.ndarray, np.ndarray]]


def is_array_pair(data: Any) -> bool:
    """(images, labels) arrays, as opposed to an iterable of batches."""
    return isinstance(data, tuple | list) and len(data) == 2 and isinstance(data[0], np.ndarray)


class Validation(Callback):
    """Measure ``val_loss`` and ``val_accuracy`` at the end of every epoch.

    ``data``: ``(images, labels)`` arrays, evaluated in batches of
    ``batch_size`` by :func:`~npcnn.training.evaluate` (uint8 images scaled
    by 1/255), or an iterable of ``(x, y)`` batches such as a
    :class:`npcnn.data.BatchIterator`. The model runs in inference mode; the
    loss is the trainer's ``loss_fn``, averaged over examples. ``tta``:
    test-time augmentation (``"flip"`` averages each image's logits with its
    mirror image's; :mod:`npcnn.training.evaluate`). Fires
    ``on_test_begin``, ``on_test_batch_end`` and ``on_test_end`` through
    ``trainer.extensions`` and writes the results into the epoch's logs.

    Data-parallel (``trainer.data_parallel``), each rank evaluates its share
    of the ``(images, labels)`` arrays and the counts are summed.

    State: a batch iterator's RNG state at the start of the next validation
    (``get_state``/``set_state``), so that a resumed run validates on the
    same batches; none for arrays.
    """

    def __init__(self, data: ValidationData, batch_size: int = 500, tta: str = "none") -> None:
        if isinstance(data, tuple) and len(data) == 2 and len(data[1]) == 0:
            # Its loss and accuracy would be NaN every epoch (the mean of nothing).
            raise ValueError("validation data is empty: pass some examples, or none at all")
        self.data = data
        self.batch_size = batch_size
        self.tta = check_tta(tta)
        self._next_state: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return "validation"

    def state_dict(self) -> dict[str, Any]:
        if not hasattr(self.data, "get_state"):
            return {}
        state = self.data.get_state() if self._next_state is None else self._next_state
        return {"data_state": state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._next_state = state.get("data_state")

    def on_train_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        data = self.data
        examples = len(data[0]) if is_array_pair(data) else getattr(data, "num_examples", None)
        trainer.extensions.on_test_begin(trainer, {"epoch": logs["epoch"], "examples": examples})

        def on_batch(n: int) -> None:
            trainer.extensions.on_test_batch_end(trainer, {"size": n})

        if trainer.data_parallel is not None:
            loss, accuracy = self._evaluate_shares(trainer, on_batch)
        elif is_array_pair(data):
            images, labels = data
            result = evaluate(
                trainer.model, images, labels, trainer.loss_fn, self.batch_size, on_batch, self.tta
            )
            loss, accuracy = result.loss, result.accuracy
        else:
            if self._next_state is not None and hasattr(data, "set_state"):
                data.set_state(self._next_state)  # a no-op unless resuming
            loss, accuracy = evaluate_batches(
                trainer.model, data, trainer.loss_fn, on_batch, self.tta
            )
            self._next_state = data.get_state() if hasattr(data, "get_state") else None
        trainer.extensions.on_test_end(trainer, {"loss": loss, "accuracy": accuracy})
        logs["val_loss"], logs["val_accuracy"] = loss, accuracy

    def _evaluate_shares(self, trainer: Trainer, on_batch: Any) -> tuple[float, float]:
        """(loss, accuracy) over every rank's share of the arrays, each image once."""
        if not is_array_pair(self.data):
            raise ValueError("data-parallel validation takes (images, labels) arrays")
        images, labels = self.data

        def evaluate_share(mine: slice) -> tuple[int, float, int]:
            x, y = images[mine], labels[mine]
            result = evaluate(
                trainer.model, x, y, trainer.loss_fn, self.batch_size, on_batch, self.tta
            )
            correct = int(np.count_nonzero(result.predictions == y))
            return len(y), (result.loss or 0.0) * len(y), correct

        return trainer.data_parallel.evaluate(evaluate_share, len(labels))
