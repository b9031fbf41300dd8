"""Inverted dropout: zero each input with probability p while training, scale the rest by 1/(1-p).

The scaling at training time keeps E[y] = x, so inference is the identity
and needs no rescaling.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from npcnn.nn.module import Layer, NoForwardError, keeps_cache


class Dropout(Layer):
    """y = x * mask / (1 - p) with mask ~ Bernoulli(1 - p) in training; y = x at inference.

    Backward: dx = dy * mask / (1 - p).

    Args:
        p: probability of zeroing an element, 0 <= p <= 1.
        rng: seed or Generator for the masks (no global random state).
    """

    def __init__(self, p: float = 0.5, *, rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout probability must be between 0 and 1, got {p}")
        self.p = float(p)
        self.rng = np.random.default_rng(rng)
        self._scaled_mask: np.ndarray | None = None

    def reset_parameters(self, rng: np.random.Generator | int | None = None) -> None:
        # Draw a child seed so that re-seeding a model also fixes its dropout masks.
        self.rng = np.random.default_rng(np.random.default_rng(rng).integers(2**63))

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if not training or self.p == 0.0:
            self._scaled_mask = np.ones((), dtype=x.dtype) if keeps_cache(training) else None
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
        scale = 0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p)
        self._scaled_mask = keep * x.dtype.type(scale)
        return x * self._scaled_mask

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._scaled_mask is None:
            raise NoForwardError(self)
        return dy * self._scaled_mask

    def config(self) -> dict[str, Any]:
        return {"p": self.p}
