"""Callbacks that hear what the containers' passes do, step by step.

Gradients ready: data-parallel training sums each bucket of gradients over
the processes as soon as the backward pass has finished every parameter in
it, while the rest of the pass runs (`npcnn.distributed`). The containers'
backward passes call `notify_gradients_ready(layers)` after each step; the
callback set by `gradients_ready_hook` (in this thread) hears it. A layer's
parameters are final once it is reported: nothing after it adds to them.

Step times: within `step_timer(callback)`, every step of a plan (a layer,
or layers fused into one kernel; `npcnn.nn.fusion`) that a container runs
is timed, and `callback(step, phase, seconds)` hears it after the step,
with phase "forward" or "backward". A step that is itself a container (a
block used as a layer) is reported after the steps inside it, with their
time included. Outside the block a step costs one context-variable read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from time import perf_counter
from typing import Any, TypeVar

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


T = TypeVar("T")
StepTimes = Callable[[Any, str, float], None]
_step_timer: ContextVar[StepTimes | None] = ContextVar("npcnn_step_timer", default=None)


@contextmanager
def step_timer(callback: StepTimes) -> Iterator[None]:
    """Within the block (this thread), `callback(step, phase, seconds)` hears the wall-clock
    time of every step's forward or backward (`phase`) that a container runs."""
    token = _step_timer.set(callback)
    try:
        yield
    finally:
        _step_timer.reset(token)


def timed_step(step: Any, phase: str, run: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`run(*args, **kwargs)`, the `phase` of `step`, timed for the `step_timer` callback
    if one is set."""
    callback = _step_timer.get()
    if callback is None:
        return run(*args, **kwargs)
    start = perf_counter()
    result = run(*args, **kwargs)
    callback(step, phase, perf_counter() - start)
    return result
