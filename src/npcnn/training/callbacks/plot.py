"""The learning curves as a PNG: loss and accuracy, training against validation."""

from __future__ import annotations

import importlib.util
import io
import os
from pathlib import Path
from typing import Any

from npcnn.files import atomic_write_bytes
from npcnn.training.callbacks.base import Callback
from npcnn.training.history import History


def render_curves(history: History, title: str | None = None) -> bytes:
    """PNG bytes of two panels over the epochs: loss (train, validation) and
    accuracy (train, validation); the validation curves only where measured.

    Uses matplotlib's Agg canvas directly (no pyplot), so it neither needs a
    display nor changes the backend of a program that imported pyplot.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    epochs = history.metric("epoch")
    for ax, key, label in zip(
        fig.subplots(1, 2), ("loss", "accuracy"), ("loss", "accuracy"), strict=True
    ):
        ax.plot(epochs, history.metric(key), marker=".", label=f"train {label}")
        pairs = [(e, v) for e, v in zip(epochs, history.metric(f"val_{key}"), strict=True)]
        pairs = [(e, v) for e, v in pairs if v is not None]
        if pairs:
            ax.plot(*zip(*pairs, strict=True), marker=".", label=f"validation {label}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


class PlotCurves(Callback):
    """Write :func:`render_curves` to ``path`` every ``every`` epochs and when training ends.

    Needs matplotlib (checked when built, imported only when drawing):
    ImportError otherwise.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, every: int = 1, title: str | None = None
    ) -> None:
        if importlib.util.find_spec("matplotlib") is None:
            raise ImportError("PlotCurves needs matplotlib (pip install matplotlib)")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.path = Path(path)
        self.every = every
        self.title = title

    def _draw(self, trainer: Any) -> None:
        if trainer.history.epochs:
            atomic_write_bytes(self.path, render_curves(trainer.history, self.title))

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        if logs["epoch"] % self.every == 0:
            self._draw(trainer)

    def on_train_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        self._draw(trainer)
