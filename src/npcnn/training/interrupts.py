"""Ctrl-C and SIGTERM deferred to a safe point of the training loop.

Outside the loop, SIGTERM kills a Python process without running any
cleanup; :func:`terminate_as_interrupt` turns it into a
:class:`Terminated` exception (a KeyboardInterrupt) instead, so that a
command can say what it left behind, and the training loop still defers it.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived where :func:`terminate_as_interrupt` was in force."""

    signal = signal.SIGTERM


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block (main thread only, over the system's default handler), SIGTERM
    raises :class:`Terminated` instead of killing the process."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


#: The interrupts that `interrupts_not_lost` kept from being dropped, oldest first.
_lost: list[KeyboardInterrupt] = []


@contextlib.contextmanager
def interrupts_not_lost() -> Iterator[list[KeyboardInterrupt]]:
    """Within the block, a KeyboardInterrupt (Ctrl-C, or SIGTERM's `Terminated`) that
    Python would drop, because its signal handler ran inside a weakref callback or a
    `__del__` ("Exception ignored in ..."), is kept in the list yielded (until the
    block ends) instead of printed. A training loop (`DeferredInterrupt`) then stops
    at its next safe point as for the signal itself; elsewhere the caller can still
    act on it when the work in hand is done (it cannot be raised again where it was
    lost)."""
    previous = sys.unraisablehook

    def keep_interrupts(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            _lost.append(unraisable.exc_value)
        else:
            previous(unraisable)

    _lost.clear()
    sys.unraisablehook = keep_interrupts
    try:
        yield _lost
    finally:
        sys.unraisablehook = previous
        _lost.clear()  # (they concern this block only: later training runs normally)


class DeferredInterrupt:
    """While active, the first Ctrl-C (SIGINT) or SIGTERM only records the signal in
    ``requested`` (the loop stops at the next safe point); a second one raises
    KeyboardInterrupt at once.

    Installed only in the main thread and only over the default handlers
    (Python's for SIGINT, the system's or :func:`terminate_as_interrupt`'s for
    SIGTERM): a handler the program set itself, or an ignored signal, is left alone.
    """

    _DEFAULTS = (
        (signal.SIGINT, (signal.default_int_handler,)),
        (signal.SIGTERM, (signal.SIG_DFL, _raise_terminated)),
    )

    def __init__(self) -> None:
        self._requested: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> int | None:
        """The signal that asked to stop (SIGINT or SIGTERM), or None: this block's own,
        else one that `interrupts_not_lost` kept from being dropped."""
        if self._requested is None and _lost:
            return int(getattr(_lost[0], "signal", signal.SIGINT))
        return self._requested

    @requested.setter
    def requested(self, signum: int | None) -> None:
        self._requested = signum

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            for signum, defaults in self._DEFAULTS:
                if signal.getsignal(signum) in defaults:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def check(self) -> None:
        """Raise KeyboardInterrupt if a signal arrived: call it where stopping is safe."""
        if self.requested is not None:
            raise KeyboardInterrupt
