"""Softmax, log-softmax and the softmax cross-entropy loss, without overflow.

    softmax(z)_k     = exp(z_k) / sum_j exp(z_j)
    log_softmax(z)_k = z_k - logsumexp(z),  logsumexp(z) = m + log(sum_j exp(z_j - m)),  m = max(z)
Every exponent z_j - m is <= 0, so nothing overflows, even for logits of 1e4.

Cross-entropy of logits z (N, K) and integer labels t (N,), mean over the batch,
with label smoothing e in [0, 1) (PyTorch's; e = 0 is the plain loss):
    q_n   = (1 - e) * onehot(t_n) + e / K             the smoothed target
    L     = -1/N * sum_n sum_k q_nk * log_softmax(z_n)_k
    dL/dz = (softmax(z) - q) / N
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


def check_label_smoothing(value: float) -> float:
    """`value` as a float in [0, 1), or ValueError."""
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {value}")
    return value


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
    logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0
) -> tuple[np.floating, tuple[np.ndarray, np.ndarray]]:
    """L = -mean_n sum_k q_nk log_softmax(logits)[n, k]: logits (N, K), labels (N,) ints
    in [0, K), q the targets smoothed by `label_smoothing` (the module docstring).

    Returns (L, a NumPy scalar of logits' dtype; cache: (softmax(logits), q)).
    Raises ValueError when logits are not (N, K), the labels are not N
    integers in [0, K), or label_smoothing is outside [0, 1).
    """
    if logits.ndim != 2:
        raise ValueError(f"cross-entropy expects logits of shape (N, K), got {logits.shape}")
    labels = check_labels(labels, *logits.shape)
    e, k = check_label_smoothing(label_smoothing), logits.shape[1]
    logp = log_softmax(logits)  # (N, K)
    targets = (1 - e) * np.eye(k, dtype=logp.dtype)[labels] + e / k  # q (N, K)
    loss = -(targets * logp).sum(axis=1).mean()
    return loss, (np.exp(logp), targets)


def softmax_cross_entropy_backward(
    dloss: float, cache: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """dL/dlogits = dloss * (softmax(logits) - q) / N, shape (N, K).

    dloss is the gradient flowing into the loss: 1.0 when L is what is minimised.
    """
    probs, targets = cache
    n = probs.shape[0]
    return probs.dtype.type(dloss) * (probs - targets) / n
