"""How a training run can end early: Ctrl-C, or a loss that is no longer a number."""

from __future__ import annotations

import signal
from pathlib import Path

from npcnn.training.history import History


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C or SIGTERM after a checkpoint was written.

    A subclass of KeyboardInterrupt, so code that knows nothing about it
    still treats it as an interrupt. Attributes:

    * ``checkpoint_path``: the checkpoint of the last completed step (or
      epoch) to pass as ``resume_from``, or None when the trainer has no
      ``checkpoint_path`` or the interrupt hit the middle of a step before any
      checkpoint was written;
    * ``history``: the History so far (``history.interrupted`` is True);
    * ``epoch``/``step``: completed epochs and completed steps of the next one;
    * ``signal``: the signal that stopped training (``signal.SIGINT`` for
      Ctrl-C, ``signal.SIGTERM`` for ``kill`` or a scheduler's time limit).
    """

    def __init__(
        self,
        checkpoint_path: Path | None,
        history: History,
        epoch: int,
        step: int,
        signum: int = signal.SIGINT,
    ) -> None:
        where = f"after {epoch} epoch(s)" + (f" and {step} step(s)" if step else "")
        saved = f"checkpoint: {checkpoint_path}" if checkpoint_path else "no checkpoint written"
        super().__init__(f"training interrupted {where}; {saved}")
        self.checkpoint_path = checkpoint_path
        self.history = history
        self.epoch = epoch
        self.step = step
        self.signal = signal.Signals(signum)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; training stopped before that step's update.

    ``epoch`` and ``step`` are 1-based; ``checkpoint_path`` is the last
    checkpoint written (from the last completed epoch, left untouched), or None.
    """

    def __init__(
        self, epoch: int, step: int, loss: float, lr: float, checkpoint_path: Path | None
    ) -> None:
        kept = f"; the last good checkpoint is {checkpoint_path}" if checkpoint_path else ""
        super().__init__(
            f"the training loss became {loss} at epoch {epoch}, step {step} with learning rate "
            f"{lr:g}; try a smaller learning rate{kept}"
        )
        self.epoch = epoch
        self.step = step
        self.loss = loss
        self.lr = lr
        self.checkpoint_path = checkpoint_path


class NonFiniteWeightsError(FloatingPointError):
    """A parameter or buffer became NaN or infinite during an epoch (an update that
    overflowed); training stopped before that epoch was evaluated or saved.

    ``epoch`` is 1-based; ``name`` the first non-finite array's dotted name;
    ``checkpoint_path`` the last checkpoint written (left untouched), or None.
    """

    def __init__(self, epoch: int, name: str, lr: float, checkpoint_path: Path | None) -> None:
        kept = f"; the last good checkpoint is {checkpoint_path}" if checkpoint_path else ""
        super().__init__(
            f"the weights became NaN or infinite during epoch {epoch} ({name!r}) with "
            f"learning rate {lr:g}; try a smaller learning rate{kept}"
        )
        self.epoch = epoch
        self.name = name
        self.lr = lr
        self.checkpoint_path = checkpoint_path
