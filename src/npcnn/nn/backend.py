"""Which kernels the layers run: the fast ones, or the reference ones for learning and debugging.

Every layer's forward asks `active_kernels()` once and calls its operation's
kernel from that set; the backward uses the set its forward used. The two
sets have the same functions with the same signatures:

- `FAST`: `npcnn.kernels` (threads, scratch memory, channels-last layout,
  fused kernels), and the reference kernels for the operations that have
  no faster form (leaky_relu, sigmoid, tanh, dropout, the loss);
- `REFERENCE`: `npcnn.nn.functional`, plain NCHW NumPy that mirrors the
  maths line by line. It has no fused kernels, so nothing is fused.

    with npcnn.use_reference():       # any model, on the reference kernels
        logits = model.forward(x, training=True)
        ...
        model.backward(dlogits)

Outputs and gradients agree with the fast path to rounding (float64: 1e-10).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import ModuleType, SimpleNamespace

from npcnn import kernels as fast_kernels
from npcnn.nn import functional


def _kernel_set(*modules: ModuleType) -> SimpleNamespace:
    """The public functions of `modules`, a later module's replacing an earlier one's."""
    return SimpleNamespace(**{n: getattr(m, n) for m in modules for n in m.__all__})


FAST = _kernel_set(functional, fast_kernels)
REFERENCE = _kernel_set(functional)

_reference: ContextVar[bool] = ContextVar("npcnn_use_reference", default=False)


def active_kernels() -> SimpleNamespace:
    """The kernel set in use: `REFERENCE` inside `use_reference()`, else `FAST`."""
    return REFERENCE if _reference.get() else FAST


def reference_active() -> bool:
    """Whether the layers run on the reference kernels (inside `use_reference()`)."""
    return _reference.get()


@contextmanager
def use_reference(enabled: bool = True) -> Iterator[None]:
    """Context manager: within the block, every layer runs on the reference kernels of
    `npcnn.nn.functional` (with `enabled=False` it changes nothing, for code that
    chooses at run time), and no layers are fused. Slow: for learning and debugging.
    The setting is a context variable: it holds in the calling thread (and asyncio
    task), not in threads started from it."""
    token = _reference.set(enabled or _reference.get())
    try:
        yield
    finally:
        _reference.reset(token)
