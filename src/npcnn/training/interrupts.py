"""Ctrl-C and SIGTERM deferred to a safe point of the training loop."""

from __future__ import annotations

import signal
import threading
from typing import Any


class DeferredInterrupt:
    """While active, the first Ctrl-C (SIGINT) or SIGTERM only records the signal in
    ``requested`` (the loop stops at the next safe point); a second one raises
    KeyboardInterrupt at once.

    Installed only in the main thread and only over the default handlers
    (Python's for SIGINT, the system's for SIGTERM): a handler the program
    set itself, or an ignored signal, is left alone.
    """

    _DEFAULTS = ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL))

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            for signum, default in self._DEFAULTS:
                if signal.getsignal(signum) is default:
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
