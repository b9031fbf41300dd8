"""The learning curves as a PNG: loss and accuracy, training against validation."""

from __future__ import annotations

import importlib.util
import io
import os
from pathlib import Path
from typing import Any

from npcnn.files import atomic_write_bytes
from npcnn.plots import plot_text
from npcnn.training.callbacks.base import Callback
from npcnn.training.history import History


def curves_figure(
    history: History, title: str | None = None, validation_label: str = "test"
) -> Any:
    """A matplotlib Figure of two panels over the epochs, loss and accuracy, each with
    a "train" curve and a ``validation_label`` curve (where measured).

    The epoch axis has integer ticks only. ``validation_label`` defaults to
    "test", which the command line validates on and prints; the title goes
    through :func:`npcnn.plots.plot_text`. Uses matplotlib's Agg canvas
    directly (no pyplot), so it neither needs a display nor changes the
    backend of a program that imported pyplot.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    epochs = history.metric("epoch")
    for ax, key in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
        ax.plot(epochs, history.metric(key), marker=".", label="train")
        pairs = [(e, v) for e, v in zip(epochs, history.metric(f"val_{key}"), strict=True)]
        pairs = [(e, v) for e, v in pairs if v is not None]
        if pairs:
            ax.plot(*zip(*pairs, strict=True), marker=".", label=plot_text(validation_label))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(plot_text(title))
    return fig


def render_curves(
    history: History, title: str | None = None, validation_label: str = "test"
) -> bytes:
    """PNG bytes of :func:`curves_figure`."""
    buffer = io.BytesIO()
    curves_figure(history, title, validation_label).savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


class PlotCurves(Callback):
    """Write :func:`render_curves` to ``path`` every ``every`` epochs and when training ends.

    Needs matplotlib (checked when built, imported only when drawing):
    ImportError otherwise.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        every: int = 1,
        title: str | None = None,
        validation_label: str = "test",
    ) -> None:
        if importlib.util.find_spec("matplotlib") is None:
            raise ImportError("PlotCurves needs matplotlib (pip install matplotlib)")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.path = Path(path)
        self.every = every
        self.title = title
        self.validation_label = validation_label

    def _draw(self, trainer: Any) -> None:
        if trainer.history.epochs:
            png = render_curves(trainer.history, self.title, self.validation_label)
            atomic_write_bytes(self.path, png)

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        if logs["epoch"] % self.every == 0:
            self._draw(trainer)

    def on_train_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        self._draw(trainer)
