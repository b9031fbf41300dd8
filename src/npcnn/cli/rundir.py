"""Run directories: each run gets a folder of its own, claimed atomically.

A run claims its directory by creating ``run.json`` in it with
``O_CREAT | O_EXCL``, which exactly one process can do; the record's
contents are written (atomically) later. Two runs started at once with the
same ``--out`` therefore never share a folder: the second one moves on to
``DIR-2``. A run that fails before its first checkpoint removes the folder
again, so a mistake leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

#: Written into every run directory when training starts: how the run was made
#: (arguments, preset, data set and its class names), so evaluate/predict and
#: --resume can find them next to model.npz or checkpoint.npz.
RUN_RECORD = "run.json"


def _claim(directory: Path) -> bool:
    """Create ``directory/run.json`` exclusively; False if another run has it."""
    try:
        fd = os.open(directory / RUN_RECORD, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def fresh_directory(path: Path) -> Path:
    """Create and claim ``path``, or ``path-2``, ``path-3``, ... if it is taken.

    A directory is free when it does not exist or is empty; it is claimed
    by creating its (empty) ``run.json``, so that of two processes choosing
    at the same moment only one gets it. Nothing already on disk is ever
    overwritten.
    """
    candidate, n = path, 1
    while True:
        try:
            candidate.mkdir(parents=True)
        except FileExistsError:
            free = candidate.is_dir() and not any(candidate.iterdir())
        except OSError as err:  # an unwritable parent, a folder of /proc, ...
            raise OSError(f"cannot create the run directory {candidate}: {reason(err)}") from None
        else:
            free = True
        try:
            if free and _claim(candidate):
                return candidate
        except OSError as err:
            raise OSError(f"cannot write in the run directory {candidate}: {reason(err)}") from None
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")


def reason(err: OSError) -> str:
    """An OSError's cause without its errno and path: "permission denied"."""
    return (err.strerror or str(err)).lower()


def default_run_directory(preset: str) -> Path:
    """runs/<preset>-<YYYYmmdd-HHMMSS> under the current directory."""
    return Path("runs") / f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}"


#: What a run writes that is worth keeping: with neither, its directory holds only
#: its record and logs of a start that failed (or of a resumed history).
RESULTS = ("checkpoint.npz", "model.npz")


def _holds_no_results(directory: Path) -> bool:
    """True if ``directory`` holds no checkpoint and no model."""
    return not any((directory / name).exists() for name in RESULTS)


@contextlib.contextmanager
def discarded_if_unused(directory: Path) -> Iterator[Path]:
    """Yield ``directory``; if the block fails before the run has written a checkpoint
    or a model, remove the directory with its record and logs, so that a failed start
    (a checkpoint that does not fit, data that cannot be read, a first epoch that
    diverges) leaves no folder. The directory was empty when the run claimed it,
    so everything in it is the run's.
    """
    try:
        yield directory
    except BaseException:
        with contextlib.suppress(OSError):
            if _holds_no_results(directory):
                for entry in directory.iterdir():
                    entry.unlink()
                directory.rmdir()
        raise
