"""Softmax, log-softmax and the cross-entropy loss, computed without overflow.

log_softmax(z)_k = z_k - logsumexp(z), with logsumexp(z) = m + log(sum(exp(z - m)))
and m = max(z): every exponent is <= 0, so nothing overflows even for logits of 1e4.
"""

from __future__ import annotations

import numpy as np

from npcnn.nn.functional.loss import check_label_smoothing, check_labels, log_softmax
from npcnn.nn.module import NoForwardError


class CrossEntropyLoss:
    """Mean negative log-likelihood of the (smoothed) true classes under softmax(logits).

    With label_smoothing e in [0, 1) the target of sample n is q_n = (1 - e) onehot(y_n)
    + e / K (PyTorch's `label_smoothing`); e = 0 is the plain cross-entropy:

    forward: logits (N, K), y (N,) int -> L = -mean_n sum_k q_nk log_softmax(logits)[n, k]
    backward: dL/dlogits = (softmax(logits) - q) / N, shape (N, K)
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = check_label_smoothing(label_smoothing)
        self._probs: np.ndarray | None = None
        self._y: np.ndarray | None = None

    def forward(self, logits: np.ndarray, y: np.ndarray) -> float:
        if logits.ndim != 2:
            raise ValueError(f"CrossEntropyLoss expects logits of shape (N, K), got {logits.shape}")
        y = check_labels(y, logits.shape[0], logits.shape[1])
        logp = log_softmax(logits)
        self._probs, self._y = np.exp(logp), y
        e = self.label_smoothing
        nll = -logp[np.arange(len(y)), y].mean(dtype=np.float64)
        if e == 0:
            return float(nll)
        return float((1 - e) * nll - e * logp.mean(axis=1, dtype=np.float64).mean())

    __call__ = forward

    def backward(self) -> np.ndarray:
        if self._probs is None:
            raise NoForwardError(self)  # type: ignore[arg-type]
        e, k = self.label_smoothing, self._probs.shape[1]
        grad = self._probs.copy()
        if e:
            grad -= grad.dtype.type(e / k)
        grad[np.arange(len(self._y)), self._y] -= grad.dtype.type(1 - e)
        grad /= len(self._y)
        return grad
