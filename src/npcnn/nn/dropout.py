"""Inverted dropout: zero each input with probability p while training, scale the rest by 1/(1-p).

The scaling at training time keeps E[y] = x, so inference is the identity
and needs no rescaling.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from npcnn.nn.backend import active_kernels
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
        self.register_generator("rng", np.random.default_rng(rng))
        self._cache: tuple | None = None  # (kernel set, scaled mask) of a training forward

    def reset_parameters(self, rng: np.random.Generator | int | None = None) -> None:
        # Draw a child seed so that re-seeding a model also fixes its dropout masks.
        self.rng = np.random.default_rng(np.random.default_rng(rng).integers(2**63))

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """x of any shape -> y of x's shape; x itself at inference."""
        kernels = active_kernels()
        y, cache = kernels.dropout_forward(x, self.p, rng=self.rng, training=training)
        # An inference forward drops a training forward's cache: it holds big arrays.
        self._cache = (kernels, cache) if keeps_cache(training) else None
        return y

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """dy of the input's shape -> dx (None with need_input_grad=False)."""
        if self._cache is None:
            raise NoForwardError(self)
        kernels, cache = self._cache
        return kernels.dropout_backward(dy, cache) if need_input_grad else None

    def config(self) -> dict[str, Any]:
        return {"p": self.p}
