"""Gradients ready: a callback told, during a backward pass, which layers are done.

Data-parallel training sums each bucket of gradients over the processes as
soon as the backward pass has finished every parameter in it, while the
rest of the pass runs (`npcnn.distributed`). The containers' backward
passes call `notify_gradients_ready(layers)` after each step; the callback
set by `gradients_ready_hook` (in this thread) hears it. A layer's
parameters are final once it is reported: nothing after it adds to them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

GradientsReady = Callable[[tuple[Any, ...]], None]
_listener: ContextVar[GradientsReady | None] = ContextVar("npcnn_gradients_ready", default=None)


@contextmanager
def gradients_ready_hook(callback: GradientsReady) -> Iterator[None]:
    """Within the block (this thread), `callback(layers)` hears every step of a backward
    pass that has finished the gradients of `layers`."""
    token = _listener.set(callback)
    try:
        yield
    finally:
        _listener.reset(token)


def notify_gradients_ready(layers: tuple[Any, ...]) -> None:
    """Tell the hook, if one is set, that `layers`' gradients are final."""
    callback = _listener.get()
    if callback is not None:
        callback(layers)
