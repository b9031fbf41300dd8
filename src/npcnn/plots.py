"""Pictures for a training report: a confusion matrix and a grid of mistakes.

matplotlib is imported lazily and drawn on an Agg canvas without pyplot, so
importing npcnn never needs it and no window ever opens.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from npcnn.files import atomic_path


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure on an Agg canvas; pyplot is never touched, so neither is
    the backend of a program that uses it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError('plotting needs matplotlib: pip install "npcnn[cli]"') from None
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_text(text: str) -> str:
    """``text`` as matplotlib can draw it: characters that no font of matplotlib's font
    family has become "?", and "$" is escaped.

    A data set or class name may be any directory name ("数字", an emoji);
    matplotlib would warn "Glyph ... missing from font(s) DejaVu Sans" and draw
    boxes for characters its fonts lack, and read text between two "$" as
    mathematics (or fail to parse it).
    """
    from matplotlib import rcParams

    fonts = _fonts(tuple(rcParams["font.family"]))
    drawable = (
        c if c.isspace() or any(f.get_char_index(ord(c)) for f in fonts) else "?" for c in text
    )
    return "".join(drawable).replace("$", r"\$")


@functools.cache
def _fonts(families: tuple[str, ...]) -> tuple[Any, ...]:
    """The installed fonts matplotlib falls back through for ``families`` (rcParams'
    font.family; a generic name such as "sans-serif" stands for its rcParams list)."""
    from matplotlib import font_manager, rcParams
    from matplotlib.ft2font import FT2Font

    paths: list[str] = []
    for family in families:
        for name in rcParams.get(f"font.{family}", [family]):
            try:
                props = font_manager.FontProperties(family=name)
                path = font_manager.findfont(props, fallback_to_default=False)
            except ValueError:  # not installed
                continue
            if path not in paths:
                paths.append(path)
    if not paths:  # none of them: matplotlib draws with its default font
        paths.append(font_manager.findfont(font_manager.FontProperties()))
    return tuple(FT2Font(path) for path in paths)


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write the figure to a temporary file and rename, so a crash leaves no half PNG."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return Path(path)


def plot_confusion_matrix(
    confusion: np.ndarray,
    classes: Sequence[str],
    path: str | os.PathLike[str],
    title: str = "Confusion matrix",
) -> Path:
    """Save a (K, K) confusion matrix (rows true, columns predicted) as a PNG heat map.

    Cells are coloured by the row-normalised rate (recall per true class) and
    labelled with the counts, so rare classes are as readable as common ones.
    Class names and title go through :func:`plot_text`.
    """
    confusion = np.asarray(confusion)
    classes = [plot_text(str(c)) for c in classes]
    k = confusion.shape[0]
    rows = confusion.sum(axis=1, keepdims=True)
    rate = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    side = max(4.0, 0.55 * k + 2.0)
    fig = _figure(side + 1.0, side)
    ax = fig.subplots()
    im = ax.imshow(rate, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class")
    ax.set_xticks(range(k), labels=classes, rotation=45, ha="right")
    ax.set_yticks(range(k), labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(plot_text(title))
    for t in range(k):
        for p in range(k):
            colour = "white" if rate[t, p] > 0.5 else "black"
            ax.text(p, t, str(confusion[t, p]), ha="center", va="center", color=colour, fontsize=8)
    return _save(fig, path)


def plot_misclassified(
    images: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    classes: Sequence[str],
    path: str | os.PathLike[str],
    probabilities: np.ndarray | None = None,
    max_images: int = 36,
) -> Path:
    """Save a grid of the first ``max_images`` misclassified images as a PNG.

    ``images``: (N, H, W) or (N, 1, H, W); ``labels``/``predictions``: (N,);
    ``probabilities``: optional (N, K) softmax outputs, to show the
    confidence of each wrong answer. Writes a note instead when there is no
    mistake. Class names go through :func:`plot_text`.
    """
    classes = [plot_text(str(c)) for c in classes]
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[:, 0]
    wrong = np.flatnonzero(np.asarray(labels) != np.asarray(predictions))[:max_images]
    cols = max(1, min(6, len(wrong)))
    nrows = max(1, -(-len(wrong) // cols))
    fig = _figure(1.9 * cols, 2.1 * nrows + 0.4)
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    if len(wrong) == 0:
        axes[0, 0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    for ax, i in zip(axes.ravel(), wrong, strict=False):
        ax.imshow(images[i], cmap="gray")
        caption = f"true {classes[labels[i]]}\npred {classes[predictions[i]]}"
        if probabilities is not None:
            caption += f" ({100 * probabilities[i, predictions[i]]:.0f}%)"
        ax.set_title(caption, fontsize=8)
    fig.suptitle(f"Misclassified test images (first {len(wrong)})")
    return _save(fig, path)
