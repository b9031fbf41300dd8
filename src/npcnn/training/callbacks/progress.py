"""A live progress bar (tqdm) per epoch: examples done, throughput, running loss and accuracy."""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import IO, Any

from npcnn.training.callbacks.base import Callback


def _import_tqdm() -> Any | None:
    """tqdm's bar class, or None when tqdm is not installed (it is an optional extra)."""
    try:
        return importlib.import_module("tqdm").tqdm
    except ImportError:
        return None


class ProgressBar(Callback):
    """One tqdm bar per epoch counting training images, so its rate is images per second;
    the postfix shows the epoch's running (batch-size weighted) loss and accuracy.
    The evaluation on the test images after each epoch gets a bar of its own.

    Shown only when ``file`` (default: sys.stderr at the time of training) is a
    terminal, unless ``force``; without tqdm installed it warns once and shows
    nothing. ``leave`` keeps each finished bar on screen.
    """

    def __init__(self, *, force: bool = False, file: IO[str] | None = None, leave: bool = False):
        self.force = force
        self.file = file
        self.leave = leave
        self._bar: Any = None
        self._tqdm: Any = None
        self._enabled = False

    def on_train_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        stream = self.file if self.file is not None else sys.stderr
        isatty = getattr(stream, "isatty", None)
        self._enabled = self.force or bool(isatty and isatty())
        if self._enabled:
            self._tqdm = _import_tqdm()
            if self._tqdm is None:
                warnings.warn(
                    "the progress bar needs tqdm (pip install tqdm); training without it",
                    stacklevel=2,
                )
                self._enabled = False

    def on_epoch_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        if not self._enabled:
            return
        self._close()
        total = logs.get("examples")
        self._bar = self._tqdm(
            total=total,
            initial=logs.get("initial_examples", 0) if total is not None else 0,
            desc=f"epoch {logs['epoch']}/{logs['epochs']}",
            unit="img",
            leave=self.leave,
            file=self.file if self.file is not None else sys.stderr,
            dynamic_ncols=True,
            mininterval=0.2,
        )

    def on_step_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        if self._bar is None:
            return
        self._bar.set_postfix(
            {"loss": f"{logs['mean_loss']:.4f}", "acc": f"{logs['mean_accuracy']:.4f}"},
            refresh=False,
        )
        self._bar.update(logs["size"])

    def on_test_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        if not self._enabled:
            return
        self._close()
        self._bar = self._tqdm(
            total=logs.get("examples"),
            desc=f"test {logs['epoch']}/{trainer.epochs}",
            unit="img",
            leave=False,
            file=self.file if self.file is not None else sys.stderr,
            dynamic_ncols=True,
            mininterval=0.2,
        )

    def on_test_batch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.update(logs["size"])

    def on_test_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        self._close()

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        self._close()

    def on_train_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
