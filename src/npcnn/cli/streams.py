"""Console output that outlives its reader: ``npcnn train | head -1`` keeps training.

Python ignores SIGPIPE, so once the reader of a pipe exits, every write
raises BrokenPipeError. For a long run that would end training at its next
``print``; instead, the first broken write silences the stream and the
command carries on, writing its files as usual. The same holds for a
console that cannot be written at all (a closed descriptor, ``> /dev/full``):
the console is a report, the files are the product.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO


class PipeSafeStream:
    """A text stream that drops its output, instead of raising, once its reader is gone.

    Everything but ``write`` and ``flush`` is the wrapped stream's
    (``isatty``, ``encoding``, ``fileno`` ...). ``reader_gone`` tells whether
    output is being dropped; ``failure`` holds the error of a write that
    failed for another reason than a reader that left (a full disk), for a
    command whose output is its result to report.
    """

    def __init__(self, stream: TextIO | None) -> None:
        # A descriptor closed at start-up (`>&-`) leaves Python no stream at all.
        self.stream = stream if stream is not None else open(os.devnull, "w")
        self.reader_gone = stream is None
        self.failure: OSError | None = None

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                return self.stream.write(text)
            except (OSError, ValueError) as err:  # a broken pipe, a full device, closed
                self._silence(err)
        return len(text)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self.stream.flush()
            except (OSError, ValueError) as err:
                self._silence(err)

    def _silence(self, err: Exception) -> None:
        self.reader_gone = True
        if isinstance(err, OSError) and not isinstance(err, BrokenPipeError):
            self.failure = err
        # The stream's buffer still holds what could not be written; pointing its
        # file descriptor at the null device lets the interpreter's last flush
        # succeed instead of printing "Exception ignored ... BrokenPipeError"
        # (and exiting with code 120).
        with contextlib.suppress(OSError, ValueError, AttributeError):
            fd = self.stream.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextlib.contextmanager
def pipe_safe_output() -> Iterator[PipeSafeStream]:
    """Within the block, sys.stdout and sys.stderr are :class:`PipeSafeStream` wrappers;
    yields the one of stdout."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = PipeSafeStream(sys.stdout), PipeSafeStream(sys.stderr)
    try:
        yield sys.stdout
    finally:
        for wrapper in (sys.stdout, sys.stderr):
            if isinstance(wrapper, PipeSafeStream):
                wrapper.flush()
        sys.stdout, sys.stderr = saved
        _point_at_null_if_closed()


def _point_at_null_if_closed() -> None:
    """Give the interpreter a writable stdout/stderr for its last flush when the
    process was started without one (``>&-``), so it exits with the command's code."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is None:
            with contextlib.suppress(OSError):
                os.fstat(fd)
                continue
            null = os.open(os.devnull, os.O_WRONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
