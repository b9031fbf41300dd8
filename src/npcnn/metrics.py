"""Classification metrics: confusion matrix and per-class precision/recall.

For K classes the confusion matrix C is (K, K) with C[t, p] the number of
examples of true class t predicted as p. Per class k:
precision_k = C[k, k] / sum_t C[t, k] (of those predicted k, how many are k),
recall_k = C[k, k] / sum_p C[k, p] (of the true k, how many were found);
both are 0 when their denominator is 0 (no prediction / no example of k).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from npcnn.text import cut, display_width, pad


def confusion_matrix(
    labels: np.ndarray, predictions: np.ndarray, num_classes: int | None = None
) -> np.ndarray:
    """(K, K) int64 counts, rows = true class, columns = predicted class.

    ``labels``, ``predictions``: (N,) integers in [0, K); K defaults to one
    more than the largest value seen.
    """
    labels = np.asarray(labels).reshape(-1)
    predictions = np.asarray(predictions).reshape(-1)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} differ")
    if num_classes is None:
        num_classes = int(max(labels.max(initial=-1), predictions.max(initial=-1))) + 1
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{name} must lie in [0, {num_classes}), got [{values.min()}, {values.max()}]"
            )
    flat = labels.astype(np.int64) * num_classes + predictions.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.zeros(numerator.shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


@dataclass
class ClassReport:
    """Per-class precision, recall and support (true examples per class) of a confusion matrix."""

    classes: list[str]
    confusion: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    support: np.ndarray

    @property
    def accuracy(self) -> float:
        total = self.confusion.sum()
        return float(np.trace(self.confusion) / total) if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: per-class rows and the confusion matrix as nested lists."""
        return {
            "classes": list(self.classes),
            "per_class": [
                {
                    "class": name,
                    "precision": float(p),
                    "recall": float(r),
                    "support": int(s),
                }
                for name, p, r, s in zip(
                    self.classes, self.precision, self.recall, self.support, strict=True
                )
            ],
            "confusion_matrix": self.confusion.tolist(),
        }

    def format_table(self) -> str:
        """A fixed-width text table: one row per class, precision and recall in percent."""
        width = max(8, *(display_width(c) for c in self.classes)) + 2
        lines = [f"{'class':<{width}}{'precision':>10}{'recall':>10}{'support':>9}"]
        for name, p, r, s in zip(
            self.classes, self.precision, self.recall, self.support, strict=True
        ):
            lines.append(f"{pad(name, width)}{100 * p:>9.1f}%{100 * r:>9.1f}%{s:>9d}")
        return "\n".join(lines)

    def format_confusion(self) -> str:
        """The confusion matrix as text: rows true class, columns predicted class."""
        labels = [cut(c, 6) for c in self.classes]
        cell = max(5, *(len(str(v)) for v in self.confusion.reshape(-1))) + 1
        first = max(len("true\\pred"), *(display_width(c) for c in labels)) + 1
        lines = ["true\\pred".ljust(first) + "".join(pad(c, cell, right=True) for c in labels)]
        for name, row in zip(labels, self.confusion, strict=True):
            lines.append(pad(name, first) + "".join(f"{v:>{cell}d}" for v in row))
        return "\n".join(lines)


def classification_report(
    labels: np.ndarray, predictions: np.ndarray, classes: Sequence[str]
) -> ClassReport:
    """Confusion matrix and per-class precision/recall for ``len(classes)`` classes."""
    cm = confusion_matrix(labels, predictions, len(classes))
    correct = np.diag(cm).astype(np.float64)
    return ClassReport(
        classes=[str(c) for c in classes],
        confusion=cm,
        precision=_safe_divide(correct, cm.sum(axis=0).astype(np.float64)),
        recall=_safe_divide(correct, cm.sum(axis=1).astype(np.float64)),
        support=cm.sum(axis=1),
    )
