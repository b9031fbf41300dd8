"""How the command line reports failures: one line, a meaningful exit code.

Exit codes: 0 success, 1 a run-time failure the user can fix (missing
file, bad data, diverged training), 2 a usage error (bad option value,
unknown preset), 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

PROG = "npcnn"
INSTALL_HINT = 'pip install "npcnn[cli]"'


class CLIError(Exception):
    """A failure to report as ``npcnn: error: <message>`` and exit with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CLIError):
    """A bad option value or combination (exit code 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


def one_line(message: object) -> str:
    """The first line of a message (multi-line library errors keep their headline)."""
    text = str(message).strip()
    return text.splitlines()[0] if text else "unknown error"


def print_error(message: object) -> None:
    """``npcnn: error: <first line>``; in a job of several processes, after the rank."""
    from npcnn.distributed.launch import active_world

    world = active_world()
    where = f"rank {world.rank} of {world.size}: " if world is not None and world.size > 1 else ""
    # One write: the lines of several ranks, through mpiexec, stay whole.
    sys.stderr.write(f"{PROG}: error: {where}{one_line(message)}\n")
    sys.stderr.flush()


def missing_dependency(err: ImportError) -> CLIError:
    """A CLIError naming the missing optional package and how to install it."""
    text = str(err)
    if "pip install" not in text:
        name = getattr(err, "name", None) or "an optional package"
        text = f"{name} is not installed: {INSTALL_HINT}"
    return CLIError(text)
