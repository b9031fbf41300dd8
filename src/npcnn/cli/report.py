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


def _test_metrics(result: Any, correct: int) -> dict[str, Any]:
    """metrics.json's record of one evaluation (an EvalResult) with ``correct`` of its images."""
    return {
        "loss": result.loss,
        "accuracy": result.accuracy,
        "correct": correct,
        "count": len(result.predictions),
    }


def write_report(
    run_dir: Path, model: Layer, data: Dataset, extra: dict[str, Any], tta: str = "none"
) -> dict[str, Any]:
    """Evaluate ``model`` on ``data``'s test split and write metrics.json and the two PNGs.

    ``extra`` (arguments, seed, timings, ...) is merged into metrics.json.
    ``tta``: the run's test-time augmentation; the report is of its
    predictions, and metrics.json also gives ``test_without_tta``.
    Returns what was written to metrics.json.
    """
    from npcnn import nn
    from npcnn.metrics import classification_report
    from npcnn.plots import plot_confusion_matrix, plot_misclassified
    from npcnn.training import evaluate

    images, labels = data.test_images, data.test_labels
    result = evaluate(model, images, labels, nn.CrossEntropyLoss(), tta=tta)
    check_finite(result.probabilities, run_dir / "model.npz")
    report = classification_report(labels, result.predictions, data.classes)
    metrics = {"test": _test_metrics(result, int(report.confusion.trace())), "tta": tta}
    if tta != "none":
        plain = evaluate(model, images, labels, nn.CrossEntropyLoss())
        correct = int((plain.predictions == labels).sum())
        metrics["test_without_tta"] = _test_metrics(plain, correct)
    metrics.update(report.to_dict())
    metrics.update(extra)
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
