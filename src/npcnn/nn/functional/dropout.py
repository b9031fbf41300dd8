"""Inverted dropout: zero each value with probability p while training, scale the rest by 1/(1-p).

    keep ~ Bernoulli(1 - p), elementwise     y = x * keep / (1 - p)     dx = dy * keep / (1 - p)

Scaling at training time keeps E[y] = x, so inference is the identity. With
p = 1 everything is dropped and the scale is taken as 0 (not 1/0).
"""

from __future__ import annotations

import numpy as np


def dropout_forward(
    x: np.ndarray,
    p: float,
    rng: np.random.Generator | None = None,
    mask: np.ndarray | None = None,
    training: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """y = x * keep / (1 - p): x of any shape -> y of x's shape. Returns (y, cache).

    `keep` is the boolean `mask` of x's shape if given (True = kept), else
    drawn from `rng` as rng.random(x.shape, dtype=float32) >= p, the draw
    the Dropout layer makes, so the same generator state gives the same mask.
    Inference (training=False), or p = 0 without a mask, returns x and draws
    nothing.
    Raises ValueError for p outside [0, 1], or when training with 0 < p and
    neither a Generator nor a mask of x's shape is given.
    """
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability must be between 0 and 1, got {p}")
    if not training or (p == 0 and mask is None):
        return x, np.ones((), dtype=x.dtype)
    if mask is None and not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"dropout needs a numpy Generator (rng=) or a mask (mask=) when training, "
            f"got rng={rng!r}"
        )
    keep = mask if mask is not None else rng.random(x.shape, dtype=np.float32) >= p
    if keep.shape != x.shape:
        raise ValueError(f"dropout mask has shape {keep.shape}, x has shape {x.shape}")
    scaled_keep = keep * x.dtype.type(0 if p == 1 else 1 / (1 - p))
    return x * scaled_keep, scaled_keep


def dropout_backward(dy: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """dx = dy * keep / (1 - p), with the forward's mask."""
    return dy * cache
