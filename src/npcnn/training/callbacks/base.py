"""The callback protocol: the loop hands each event's numbers to small report objects."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from npcnn.training.trainer import Trainer


class Callback:
    """Base class of the reports; override the events you need (each does nothing here).

    Every event gets the :class:`~npcnn.training.Trainer` (``trainer.model``,
    ``trainer.optimizer``, ``trainer.history``, ``trainer.epochs``; set
    ``trainer.stop_training = True`` to stop after the current epoch) and a
    ``logs`` dict:

    * ``on_train_begin``: ``epochs`` (target), ``initial_epoch`` (completed
      epochs, > 0 when resuming), ``steps_per_epoch``, ``examples_per_epoch``
      (None if unknown);
    * ``on_epoch_begin``: ``epoch`` (1-based), ``epochs``, ``steps``,
      ``examples``, ``initial_step``/``initial_examples`` (already done when
      resuming mid-epoch), ``lr``;
    * ``on_step_end``: ``epoch``, ``epochs``, ``step`` (1-based), ``steps``,
      ``global_step``, ``size`` (batch size), ``loss``/``accuracy`` (this
      batch, training mode), ``mean_loss``/``mean_accuracy`` (the epoch so
      far, weighted by batch size), ``lr``;
    * ``on_test_begin``: ``epoch`` and ``examples`` (the test images, None
      if unknown), before the end-of-epoch evaluation; ``on_test_batch_end``:
      ``size`` (images in the batch just evaluated); ``on_test_end``:
      ``loss`` and ``accuracy`` (Keras' names for the same events);
    * ``on_epoch_end``: the epoch's History record (``epoch``, ``loss``,
      ``accuracy``, ``val_loss``, ``val_accuracy``, ``lr``, ``seconds``,
      ``images_per_second``) and ``epochs``;
    * ``on_train_end``: ``status`` ("completed", "stopped" by a callback,
      "interrupted" by Ctrl-C, "failed" by an exception), ``epochs``,
      ``history``. Called however the run ends.
    """

    def on_train_begin(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        pass

    def on_epoch_begin(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        pass

    def on_step_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        pass

    def on_test_begin(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        pass

    def on_test_batch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        pass

    def on_test_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        pass

    def on_train_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        pass


class CallbackList(Callback):
    """Calls each callback in order for every event."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be Callback instances, got {cb!r}")

    def on_train_begin(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(trainer, logs)

    def on_epoch_begin(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_begin(trainer, logs)

    def on_step_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_step_end(trainer, logs)

    def on_test_begin(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_test_begin(trainer, logs)

    def on_test_batch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_test_batch_end(trainer, logs)

    def on_test_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_test_end(trainer, logs)

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(trainer, logs)

    def on_train_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_train_end(trainer, logs)
