"""Softmax, log-softmax and the softmax cross-entropy loss, without overflow.

    softmax(z)_k     = exp(z_k) / sum_j exp(z_j)
    log_softmax(z)_k = z_k - logsumexp(z),  logsumexp(z) = m + log(sum_j exp(z_j - m)),  m = max(z)
Every exponent z_j - m is <= 0, so nothing overflows, even for logits of 1e4.

Cross-entropy of logits z (N, K) and integer labels t (N,), mean over the batch:
    L = -1/N * sum_n log_softmax(z_n)[t_n]
    dL/dz = (softmax(z) - onehot(t)) / N
"""

from __future__ import annotations

import numpy as np


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


def _as_float(logits: np.ndarray) -> np.ndarray:
    """Float logits as given; integers (which would wrap around) as float64."""
    logits = np.asarray(logits)
    return logits if logits.dtype.kind == "f" else logits.astype(np.float64)


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """z - logsumexp(z) along `axis`, stable for any finite logits; logits' shape."""
    logits = _as_float(logits)
    shifted = logits - logits.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """exp(z_k) / sum_j exp(z_j) along `axis`; logits' shape, sums to 1 along `axis`."""
    logits = _as_float(logits)
    e = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_cross_entropy_forward(
    logits: np.ndarray, labels: np.ndarray
) -> tuple[np.floating, tuple[np.ndarray, np.ndarray]]:
    """L = -mean_n log_softmax(logits)[n, labels[n]]: logits (N, K), labels (N,) ints in [0, K).

    Returns (L, a NumPy scalar of logits' dtype; cache: (softmax(logits), labels)).
    Raises ValueError when logits are not (N, K) or the labels are not N
    integers in [0, K).
    """
    if logits.ndim != 2:
        raise ValueError(f"cross-entropy expects logits of shape (N, K), got {logits.shape}")
    labels = check_labels(labels, *logits.shape)
    logp = log_softmax(logits)  # (N, K)
    loss = -logp[np.arange(len(labels)), labels].mean()
    return loss, (np.exp(logp), labels)


def softmax_cross_entropy_backward(
    dloss: float, cache: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """dL/dlogits = dloss * (softmax(logits) - onehot(labels)) / N, shape (N, K).

    dloss is the gradient flowing into the loss: 1.0 when L is what is minimised.
    """
    probs, labels = cache
    n, k = probs.shape
    onehot = np.eye(k, dtype=probs.dtype)[labels]  # (N, K)
    return probs.dtype.type(dloss) * (probs - onehot) / n
