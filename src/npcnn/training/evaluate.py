"""Inference over a whole data set, in batches: loss, accuracy, predictions and probabilities.

Test-time augmentation (``tta="flip"``): the logits of every image are the
mean of the model's logits for the image and for its mirror image (left and
right swapped), the cheap ensemble that suits data whose mirror images are
as likely as the images (clothes; not digits). It costs a second forward
pass and changes nothing in the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from npcnn.nn import Layer, log_softmax, softmax

LossFn = Any  # anything with forward(logits (N, K), y (N,)) -> float mean loss (and backward())

#: Test-time augmentations: "none", or "flip" (average with the mirror image).
TTA_MODES = ("none", "flip")


@dataclass(frozen=True)
class EvalResult:
    """What :func:`evaluate` measured.

    ``loss``: mean loss over the N examples (None without labels);
    ``accuracy``: fraction of examples whose arg-max class is the label
    (None without labels); ``predictions``: (N,) int64 arg-max classes;
    ``probabilities``: (N, K) softmax of the logits, in the model's dtype.
    """

    loss: float | None
    accuracy: float | None
    predictions: np.ndarray
    probabilities: np.ndarray


def as_model_input(images: np.ndarray) -> np.ndarray:
    """Images as the network expects them: (N, C, H, W) floats.

    (N, H, W) gains a channel axis. uint8 is divided by 255 in float32 (the
    conversion :class:`npcnn.data.BatchIterator` applies, so validation sees
    what training saw); float arrays are kept; other dtypes become float32.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, np.newaxis]
    elif images.ndim != 4:
        raise ValueError(f"images must be (N, H, W) or (N, C, H, W), got shape {images.shape}")
    if images.dtype == np.uint8:
        return np.divide(images.astype(np.float32), np.float32(255))
    if np.issubdtype(images.dtype, np.floating):
        return images
    return images.astype(np.float32)


def check_tta(tta: str) -> str:
    """``tta`` if it is one of TTA_MODES; ValueError otherwise."""
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
    return tta


def inference_logits(model: Layer, x: np.ndarray, tta: str = "none") -> np.ndarray:
    """Logits (N, K) of ``model`` in inference mode for ``x`` (N, C, H, W).

    With ``tta="flip"``: (model(x) + model(x mirrored along W)) / 2.
    """
    logits = model.forward(x, training=False)
    if check_tta(tta) == "none":
        return logits
    mirrored = model.forward(np.ascontiguousarray(x[..., ::-1]), training=False)
    return (logits + mirrored) / logits.dtype.type(2)


def batch_loss(loss_fn: LossFn | None, logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean loss of one batch: ``loss_fn.forward`` or, without one, softmax cross-entropy."""
    if loss_fn is not None:
        return float(loss_fn.forward(logits, labels))
    logp = log_softmax(logits.astype(np.float64, copy=False))
    return float(-logp[np.arange(len(labels)), labels].mean())


def count_correct(logits: np.ndarray, labels: np.ndarray) -> int:
    """How many rows of (N, K) ``logits`` have their arg-max at the label."""
    return int(np.count_nonzero(logits.argmax(axis=1) == labels))


def evaluate(
    model: Layer,
    images: np.ndarray,
    labels: np.ndarray | None = None,
    loss_fn: LossFn | None = None,
    batch_size: int = 500,
    on_batch: Callable[[int], None] | None = None,
    tta: str = "none",
) -> EvalResult:
    """Run ``model`` in inference mode over ``images`` in batches of ``batch_size``.

    ``images``: uint8 (N, H, W) or (N, C, H, W) (scaled by 1/255) or floats
    (used as given); ``labels``: (N,) ints or None (then loss and accuracy are
    None). ``loss_fn`` defaults to softmax cross-entropy. The loss is the
    mean over all N examples: ``sum_b(n_b * loss_b) / N``.

    Inference mode means batch norm uses its running statistics and dropout
    is the identity, so the result does not depend on ``batch_size`` (up to
    floating-point rounding) and the model's state is not changed.
    ``on_batch(n)``, if given, is called after each batch of n images (for
    a progress bar). ``tta``: test-time augmentation, one of TTA_MODES (the
    module docstring); the loss, accuracy and probabilities are those of the
    averaged logits.
    """
    check_tta(tta)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise ValueError(f"batch_size must be an int, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    images = np.asarray(images)
    n = images.shape[0]
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(
                f"labels must have shape ({n},) to match the images, got {labels.shape}"
            )
    chunks = (
        (
            as_model_input(images[start : start + batch_size]),
            None if labels is None else labels[start : start + batch_size],
        )
        for start in range(0, n, batch_size)
    )
    probabilities: list[np.ndarray] = []
    totals = _Totals()
    for x, y in chunks:
        logits = inference_logits(model, x, tta)
        probabilities.append(softmax(logits))
        if y is not None:
            totals.add(len(y), batch_loss(loss_fn, logits, y), count_correct(logits, y))
        if on_batch is not None:
            on_batch(len(x))
    if not probabilities:  # no images: the model's (0, classes), as for any batch
        probabilities.append(softmax(inference_logits(model, as_model_input(images), tta)))
    probs = np.concatenate(probabilities)
    return EvalResult(
        loss=totals.mean_loss if labels is not None else None,
        accuracy=totals.accuracy if labels is not None else None,
        predictions=probs.argmax(axis=1).astype(np.int64) if n else np.zeros(0, np.int64),
        probabilities=probs,
    )


def evaluate_batches(
    model: Layer,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    loss_fn: LossFn | None = None,
    on_batch: Callable[[int], None] | None = None,
    tta: str = "none",
) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` in inference mode over ``(x, y)`` batches.

    Each ``x`` goes through :func:`as_model_input`; the means are over
    examples, not batches. ``on_batch(n)`` and ``tta`` as in :func:`evaluate`.
    """
    check_tta(tta)
    totals = _Totals()
    for x, y in batches:
        logits = inference_logits(model, as_model_input(x), tta)
        totals.add(len(y), batch_loss(loss_fn, logits, y), count_correct(logits, y))
        if on_batch is not None:
            on_batch(len(y))
    if totals.count == 0:
        raise ValueError("the validation data is empty")
    return totals.mean_loss, totals.accuracy


class _Totals:
    """Running sums for example-weighted means: sum(n_b * loss_b), correct, count."""

    def __init__(self) -> None:
        self.loss_sum = 0.0
        self.correct = 0
        self.count = 0

    def add(self, n: int, loss: float, correct: int) -> None:
        self.loss_sum += n * loss
        self.correct += correct
        self.count += n

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / self.count if self.count else float("nan")

    @property
    def accuracy(self) -> float:
        return self.correct / self.count if self.count else float("nan")
