"""The end-of-run report of ``npcnn train``: test metrics, pictures and metrics.json."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from npcnn.cli.common import check_finite, write_json

if TYPE_CHECKING:
    from npcnn.data import Dataset
    from npcnn.nn import Layer

METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion.png"
MISCLASSIFIED_FILE = "misclassified.png"


def write_report(
    run_dir: Path, model: Layer, data: Dataset, extra: dict[str, Any]
) -> dict[str, Any]:
    """Evaluate ``model`` on ``data``'s test split and write metrics.json and the two PNGs.

    ``extra`` (arguments, seed, timings, ...) is merged into metrics.json.
    Returns what was written to metrics.json.
    """
    from npcnn import nn
    from npcnn.metrics import classification_report
    from npcnn.plots import plot_confusion_matrix, plot_misclassified
    from npcnn.training import evaluate

    result = evaluate(model, data.test_images, data.test_labels, nn.CrossEntropyLoss())
    check_finite(result.probabilities, run_dir / "model.npz")
    report = classification_report(data.test_labels, result.predictions, data.classes)
    metrics = {
        "test": {
            "loss": result.loss,
            "accuracy": result.accuracy,
            "correct": int(report.confusion.trace()),
            "count": len(data.test_labels),
        },
        **report.to_dict(),
        **extra,
    }
    write_json(run_dir / METRICS_FILE, metrics)
    plot_confusion_matrix(
        report.confusion,
        data.classes,
        run_dir / CONFUSION_FILE,
        title=f"{data.name} test: accuracy {100 * result.accuracy:.2f}%",
    )
    plot_misclassified(
        data.test_images,
        data.test_labels,
        result.predictions,
        data.classes,
        run_dir / MISCLASSIFIED_FILE,
        probabilities=result.probabilities,
    )
    return metrics
