"""Softmax, log-softmax and the cross-entropy loss, computed without overflow.

log_softmax(z)_k = z_k - logsumexp(z), with logsumexp(z) = m + log(sum(exp(z - m)))
and m = max(z): every exponent is <= 0, so nothing overflows even for logits of 1e4.
"""

from __future__ import annotations

import numpy as np

from npcnn.nn.module import NoForwardError


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """log of softmax(logits) along `axis`, stable for any finite logits."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Probabilities exp(z_k) / sum_j exp(z_j) along `axis`; rows sum to 1."""
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def check_labels(y: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    """Return `y` as int64 class indices, or raise ValueError saying what is wrong."""
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and y.size and np.all(np.mod(y, 1) == 0):
            raise ValueError(
                f"labels must be integers, got dtype {y.dtype} (cast with .astype(int))"
            )
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match the logits, got {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got values from {y.min()} to {y.max()}"
        )
    return y.astype(np.int64, copy=False)


class CrossEntropyLoss:
    """Mean negative log-likelihood of the true classes under softmax(logits).

    forward: logits (N, K), y (N,) int -> L = -mean_n log_softmax(logits)[n, y_n]  (a float)
    backward: dL/dlogits = (softmax(logits) - onehot(y)) / N, shape (N, K)
    """

    def __init__(self) -> None:
        self._probs: np.ndarray | None = None
        self._y: np.ndarray | None = None

    def forward(self, logits: np.ndarray, y: np.ndarray) -> float:
        if logits.ndim != 2:
            raise ValueError(f"CrossEntropyLoss expects logits of shape (N, K), got {logits.shape}")
        y = check_labels(y, logits.shape[0], logits.shape[1])
        logp = log_softmax(logits)
        self._probs, self._y = np.exp(logp), y
        return float(-logp[np.arange(len(y)), y].mean(dtype=np.float64))

    __call__ = forward

    def backward(self) -> np.ndarray:
        if self._probs is None:
            raise NoForwardError(self)  # type: ignore[arg-type]
        grad = self._probs.copy()
        grad[np.arange(len(self._y)), self._y] -= 1
        grad /= len(self._y)
        return grad
