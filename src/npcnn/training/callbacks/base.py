"""The callback protocol: the loop fires events, small objects act on them.

A callback either reports (prints, logs, plots: it reads the numbers) or is
an *extension* of the training procedure (validation, batch-norm
recomputation, the learning-rate schedule, checkpoints, the non-finite loss
check: it acts on the model, the optimiser or the logs). Both are
:class:`Callback` objects; an extension with state returns it from
:meth:`Callback.state_dict`, and the Trainer's checkpoints save it under
:attr:`Callback.state_key` and restore it on resume (Chainer's extensions,
Keras' callbacks, PyTorch Lightning's callback state).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from npcnn.training.trainer import Trainer


class Callback:
    """Base class of reports and extensions; override the events you need (each does nothing here).

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
    * ``on_before_backward``: ``epoch``, ``step`` (1-based, the step being
      taken), ``loss`` (this batch) and ``lr``, after the forward pass and
      before the gradients and the update: raising here leaves the step
      unapplied;
    * ``on_step_end``: ``epoch``, ``epochs``, ``step`` (1-based), ``steps``,
      ``global_step``, ``size`` (batch size), ``loss``/``accuracy`` (this
      batch, training mode), ``mean_loss``/``mean_accuracy`` (the epoch so
      far, weighted by batch size), ``lr``;
    * ``on_train_epoch_end``: the epoch's steps are done; ``epoch``,
      ``epochs``, ``loss``, ``accuracy``, ``lr``, and ``val_loss`` and
      ``val_accuracy`` (None until an extension measures them). Extensions
      finish the epoch here, in order: they may change the model, the
      optimiser, their own state, and add entries to ``logs``;
    * ``on_test_begin``: ``epoch`` and ``examples`` (the test images, None
      if unknown), before the end-of-epoch evaluation; ``on_test_batch_end``:
      ``size`` (images in the batch just evaluated); ``on_test_end``:
      ``loss`` and ``accuracy`` (Keras' names for the same events);
    * ``on_epoch_end``: the epoch is recorded in the History and the run is
      at the epoch's boundary (the trainer's own checkpoint is written
      first); ``logs`` holds the History record (``epoch``, ``loss``,
      ``accuracy``, ``val_loss``, ``val_accuracy``, ``lr``, ``seconds``,
      ``images_per_second``), ``epochs``, and any entries extensions added;
    * ``on_train_end``: ``status`` ("completed", "stopped" by a callback,
      "interrupted" by Ctrl-C, "failed" by an exception), ``epochs``,
      ``history``. Called however the run ends, once it has begun: not when
      ``on_train_begin`` itself raised (the callbacks after the one that
      raised never began).

    State for resume: a checkpoint holds what ``state_dict()`` returned when
    it was written, so change state in ``on_step_end`` or
    ``on_train_epoch_end``, not in ``on_epoch_end`` (which runs after the
    trainer's checkpoint of the epoch).
    """

    @property
    def state_key(self) -> str:
        """The name this callback's state is saved under in a checkpoint (the class name)."""
        return type(self).__name__

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state a resumed run needs to continue exactly ({}: none, not saved)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (from a checkpoint, when resuming)."""

    def on_train_begin(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        pass

    def on_epoch_begin(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        pass

    def on_before_backward(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        pass

    def on_step_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        pass

    def on_train_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
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
    """Calls each callback in order for every event; gathers and restores their states."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be Callback instances, got {cb!r}")

    def state_dicts(self) -> dict[str, dict[str, Any]]:
        """``{state_key: state}`` of every callback whose :meth:`~Callback.state_dict` is not empty.

        Raises ValueError when two callbacks with state share a ``state_key``.
        """
        return {key: state for key, (_, state) in self._with_state().items()}

    def _with_state(self) -> dict[str, tuple[Callback, dict[str, Any]]]:
        found: dict[str, tuple[Callback, dict[str, Any]]] = {}
        for cb in self.callbacks:
            state = cb.state_dict()
            if not state:
                continue
            if cb.state_key in found:
                raise ValueError(
                    f"two callbacks save their state under {cb.state_key!r}: "
                    "give each a distinct state_key"
                )
            found[cb.state_key] = (cb, state)
        return found

    def check_state_dicts(
        self, states: Mapping[str, Mapping[str, Any]], source: str = "the checkpoint"
    ) -> None:
        """Raise ValueError unless ``states`` (:meth:`state_dicts` output) holds exactly the
        keys of the callbacks with state: a run resumes exactly only with the
        stateful extensions it was written with.
        """
        mine = self._with_state()
        if lost := sorted(states.keys() - mine.keys()):
            had = _describe(lost[0], states[lost[0]])
            raise ValueError(f"{source} was written with {had}, which this trainer lacks")
        if new := sorted(mine.keys() - states.keys()):
            has = _describe(new[0], mine[new[0]][1])
            raise ValueError(f"{source} was written without {has}, which this trainer has")

    def load_state_dicts(
        self, states: Mapping[str, Mapping[str, Any]], source: str = "the checkpoint"
    ) -> None:
        """Give each callback with state its entry of ``states`` (:meth:`state_dicts` output),
        after :meth:`check_state_dicts` (ValueError before any is loaded).
        """
        self.check_state_dicts(states, source)
        for key, (cb, _) in self._with_state().items():
            cb.load_state_dict(states[key])

    def on_train_begin(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(trainer, logs)

    def on_epoch_begin(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_begin(trainer, logs)

    def on_before_backward(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_before_backward(trainer, logs)

    def on_step_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_step_end(trainer, logs)

    def on_train_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_train_epoch_end(trainer, logs)

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


def _describe(key: str, state: Mapping[str, Any]) -> str:
    """``"scheduler StepLR"`` for a state that names its type, else ``"KEY state"``."""
    kind = state.get("type")
    return f"{key} {kind}" if isinstance(kind, str) else f"{key} state"
