"""Text in the pictures: any data set or class name draws without missing glyphs,
and the learning curves say what the command line says."""

from __future__ import annotations

import warnings

import numpy as np

from npcnn.plots import plot_confusion_matrix, plot_misclassified, plot_text
from npcnn.training.callbacks.plot import curves_figure, render_curves
from npcnn.training.history import History


def test_plot_text_replaces_what_no_font_can_draw_and_escapes_dollars() -> None:
    assert plot_text("Fashion-MNIST") == "Fashion-MNIST"
    assert plot_text("café Ωmega") == "café Ωmega"  # DejaVu Sans has these
    assert plot_text("数字 digits") == "?? digits"
    assert plot_text("\U0001f4e6 box") == "? box"
    assert plot_text("cost $5 to $6") == r"cost \$5 to \$6"


def _history(epochs: int) -> History:
    history = History()
    for e in range(1, epochs + 1):
        history.epochs.append(
            {"epoch": e, "loss": 1 / e, "accuracy": 1 - 1 / (e + 1), "val_loss": 1.1 / e}
            | {"val_accuracy": 0.9 - 1 / (e + 2), "lr": 0.1, "seconds": 1.0}
            | {"images_per_second": 10.0}
        )
    return history


def test_the_curves_say_train_and_test_over_whole_epochs() -> None:
    fig = curves_figure(_history(3), "small on 数字: train and test")
    fig.canvas.draw()
    for ax in fig.axes:
        assert ax.get_legend_handles_labels()[1] == ["train", "test"]
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert fig.get_suptitle() == "small on ??: train and test"


def test_a_library_user_may_call_the_validation_curve_otherwise() -> None:
    fig = curves_figure(_history(2), validation_label="validation")
    assert fig.axes[0].get_legend_handles_labels()[1] == ["train", "validation"]


def test_pictures_of_a_data_set_with_a_cjk_name_draw_without_warnings(tmp_path) -> None:
    classes = ["零", "一", "two"]
    confusion = np.array([[3, 1, 0], [0, 2, 1], [1, 0, 4]])
    images = np.random.default_rng(0).random((4, 28, 28))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Glyph ... missing from font(s)" would raise
        plot_confusion_matrix(confusion, classes, tmp_path / "c.png", title="数字 test: 80%")
        plot_misclassified(
            images, np.array([0, 1, 2, 0]), np.array([1, 1, 0, 2]), classes, tmp_path / "m.png"
        )
        png = render_curves(_history(2), "small on 数字 \U0001f4e6")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "m.png").stat().st_size > 0 and png[:4] == b"\x89PNG"
