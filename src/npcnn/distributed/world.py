"""The processes that train together: who they are and the collectives they call.

A `World` is K ranks running the same program. Training calls five
collectives, each by every rank in the same order (MPI matches them by call
order, not by name):

    allreduce(array)       the element-wise sum over the ranks (a new array)
    allreduce_start(buf)   the same in place, started now, finished by .wait()
    broadcast(array)       rank 0's values into every rank's array, in place
    allgather(obj)         a list of every rank's (picklable, small) object
    barrier()              wait until every rank is here

`SingleProcess` is the world of one, used whenever training is not
distributed: every collective returns at once with its own data.
`npcnn.distributed.mpi.MPIWorld` is the real one (mpi4py).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Protocol

import numpy as np


class Pending(Protocol):
    """A collective started and not yet finished."""

    def test(self) -> bool: ...

    def wait(self) -> None: ...


class _Done:
    def test(self) -> bool:
        return True

    def wait(self) -> None:
        return None


class World:
    """K ranks; see the module docstring for the collectives.

    ``what`` names a collective for the watchdog's message (which one blocked).
    """

    rank: int = 0
    size: int = 1
    local_size: int = 1  # ranks on this host
    name: str = "single process"

    @property
    def is_root(self) -> bool:
        """Whether this is rank 0, the one that prints and writes files."""
        return self.rank == 0

    def allreduce(self, array: np.ndarray, what: str) -> np.ndarray:
        raise NotImplementedError

    def allreduce_start(self, buffer: np.ndarray, what: str) -> Pending:
        raise NotImplementedError

    def broadcast(self, array: np.ndarray, what: str) -> None:
        raise NotImplementedError

    def allgather(self, obj: Any, what: str) -> list[Any]:
        raise NotImplementedError

    def barrier(self, what: str) -> None:
        raise NotImplementedError

    def abort(self, code: int = 1) -> None:
        """End every rank of the job now, with exit code ``code`` (never returns)."""
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    def all_stopping(self, seconds: float) -> bool:
        """Whether every rank calls this within ``seconds`` (each having met an error of its
        own, often the same one): then each can end alone with its exit code, and no rank
        is left waiting. False when some rank does not come (the job must be aborted)."""
        return self.size == 1

    def set_activity(self, activity: str) -> None:
        """Say what the rank is doing (e.g. "epoch 2, step 17"), for the watchdog."""

    def set_timeout(self, seconds: float) -> None:
        """How long one collective may block before the job is ended (no limit here)."""

    def close(self) -> None:
        """Stop the world's helpers (the watchdog); the collectives are not used after."""


class SingleProcess(World):
    """The world of one process: every collective returns its own data at once."""

    def allreduce(self, array: np.ndarray, what: str) -> np.ndarray:
        return np.array(array, copy=True)

    def allreduce_start(self, buffer: np.ndarray, what: str) -> Pending:
        return _Done()

    def broadcast(self, array: np.ndarray, what: str) -> None:
        return None

    def allgather(self, obj: Any, what: str) -> list[Any]:
        return [obj]

    def barrier(self, what: str) -> None:
        return None
