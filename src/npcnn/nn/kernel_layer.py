"""`KernelLayer`: the base of the parameterless layers that are one kernel pair.

Such a layer's forward is `<op>_forward(x, *args)` of the active kernel set
(`npcnn.nn.backend`) and its backward is `<op>_backward(dy, cache)` of the
set its forward used, with the cache that forward returned. The forward and
backward bookkeeping is the same for all of them, and lives here.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from npcnn.nn.backend import active_kernels
from npcnn.nn.module import Layer, NoForwardError, keeps_cache


class KernelLayer(Layer):
    """A layer without parameters computed by the kernel pair named `op`.

    Subclasses set `op` and call `kernel_forward` from `forward` (after their
    own checks of x). A forward that keeps caches (`keeps_cache`) records the
    kernel set and the kernel's cache; any other forward leaves a training
    forward's record in place.
    """

    op: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self._cache: tuple | None = None  # (kernel set, kernel cache) of a training forward

    def kernel_forward(self, x: np.ndarray, training: bool, *args: Any) -> np.ndarray:
        """y of the active kernel set's `<op>_forward(x, *args)`."""
        kernels = active_kernels()
        y, cache = getattr(kernels, f"{self.op}_forward")(x, *args)
        if keeps_cache(training):
            self._cache = (kernels, cache)
        return y

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """dy of the output's shape -> dx of the input's (None with need_input_grad=False).

        Raises NoForwardError before a training forward.
        """
        if self._cache is None:
            raise NoForwardError(self)
        kernels, cache = self._cache
        if not need_input_grad:
            return None
        return getattr(kernels, f"{self.op}_backward")(dy, cache)
