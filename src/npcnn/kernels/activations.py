"""Fast ReLU: the reference's y = max(x, 0), dx = dy * [x > 0], on all cores.

Each pass is one elementwise loop split along the batch axis (`elementwise`),
into step arrays of the input's memory order (channels-last stays
channels-last). The other activations have no faster form than the
reference's (`npcnn.nn.functional.activations`), which the fast kernel set
uses as it is.
"""

from __future__ import annotations

import numpy as np

from npcnn.runtime import memory
from npcnn.runtime.threads import elementwise


def _relu_and_mask(x: np.ndarray, zeros: np.ndarray, mask: np.ndarray, out: np.ndarray) -> None:
    """out = max(x, 0) and mask = x > 0, in one pass over a chunk."""
    np.greater(x, 0, out=mask)
    np.maximum(x, zeros, out=out)


def relu_forward(x: np.ndarray, *, need_cache: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """y = max(x, 0). Returns (y, cache: the mask x > 0, or None with need_cache=False)."""
    zeros = memory.read_only_zeros(x)  # NumPy's loops run faster on two arrays than on x and 0
    if not need_cache:
        return elementwise(np.maximum, memory.empty_like(x), x, zeros), None
    mask = memory.empty_like(x, dtype=bool)
    return elementwise(_relu_and_mask, memory.empty_like(x), x, zeros, mask), mask


def relu_backward(dy: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """dx = dy where x > 0, else 0."""
    return elementwise(np.multiply, memory.empty_like(dy), dy, cache)
