"""Softmax, log-softmax and the cross-entropy loss, computed without overflow.

log_softmax(z)_k = z_k - logsumexp(z), with logsumexp(z) = m + log(sum(exp(z - m)))
and m = max(z): every exponent is <= 0, so nothing overflows even for logits of 1e4.
"""

from __future__ import annotations

import numpy as np

from npcnn.nn.functional.loss import check_labels, log_softmax
from npcnn.nn.module import NoForwardError


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
