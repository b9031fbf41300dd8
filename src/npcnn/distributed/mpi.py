"""The MPI world (mpi4py), with a watchdog for collectives that never finish.

MPI has no timeouts: a rank that waits in a collective for a rank that died
without ending the job, or that took another path, waits for ever. The
watchdog is a thread that looks every second at the collective the rank is
in (`World.set_activity` says at which step); past ``timeout`` seconds it
names both and ends the whole job with ``MPI_Abort``. mpi4py releases the
GIL inside blocking MPI calls, so the thread runs while the main one waits.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from npcnn.distributed.world import Pending, World

#: Seconds a rank may wait in one collective before the watchdog ends the job.
DEFAULT_TIMEOUT = 600.0


class Watchdog:
    """Ends the job when one collective blocks longer than ``timeout`` seconds."""

    def __init__(self, world: MPIWorld, timeout: float) -> None:
        self.world = world
        self.timeout = float(timeout)
        self.activity = "starting"
        self._waiting: tuple[str, float] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="npcnn-watchdog", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def waiting(self, what: str) -> Iterator[None]:
        self._waiting = (what, time.monotonic())
        try:
            yield
        finally:
            self._waiting = None

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.timeout / 4)):
            waiting = self._waiting
            if waiting is not None and time.monotonic() - waiting[1] > self.timeout:
                self._fire(*waiting)

    def _fire(self, what: str, since: float) -> None:
        world = self.world
        sys.stderr.write(
            f"npcnn: error: rank {world.rank} of {world.size} waited "
            f"{time.monotonic() - since:.0f} s in {what} ({self.activity}), longer than the "
            f"collective timeout of {self.timeout:g} s: another rank stopped, is stuck or "
            "took another path; ending the job\n"
        )
        sys.stderr.flush()
        world.abort(1)

    def stop(self) -> None:
        self._stop.set()


class _Request:
    def __init__(self, request: Any, watchdog: Watchdog, what: str) -> None:
        self._request, self._watchdog, self._what = request, watchdog, what

    def test(self) -> bool:
        return bool(self._request.Test())

    def wait(self) -> None:
        with self._watchdog.waiting(self._what):
            self._request.Wait()


class MPIWorld(World):
    """Every rank of an MPI communicator (default ``MPI.COMM_WORLD``)."""

    def __init__(self, comm: Any = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        from mpi4py import MPI

        self._mpi = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        host = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_size = host.Get_size()
        host.Free()
        self.name = " ".join(MPI.Get_library_version().split("\n")[0].split())
        # Only `all_stopping` uses this copy: its barrier can then never be matched
        # with a collective that other ranks call on `comm` meanwhile.
        self._stopping = self.comm.Dup()
        self.watchdog = Watchdog(self, timeout)

    def allreduce(self, array: np.ndarray, what: str) -> np.ndarray:
        send = np.ascontiguousarray(array)
        out = np.empty_like(send)
        with self.watchdog.waiting(what):
            self.comm.Allreduce(send, out, op=self._mpi.SUM)
        return out

    def allreduce_start(self, buffer: np.ndarray, what: str) -> Pending:
        request = self.comm.Iallreduce(self._mpi.IN_PLACE, buffer, op=self._mpi.SUM)
        return _Request(request, self.watchdog, what)

    def broadcast(self, array: np.ndarray, what: str) -> None:
        with self.watchdog.waiting(what):
            self.comm.Bcast(array, root=0)

    def allgather(self, obj: Any, what: str) -> list[Any]:
        with self.watchdog.waiting(what):
            return self.comm.allgather(obj)

    def barrier(self, what: str) -> None:
        with self.watchdog.waiting(what):
            self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        if self._mpi.Query_thread() < self._mpi.THREAD_MULTIPLE:
            super().abort(code)  # (the launcher ends the other ranks when one dies)
        self.comm.Abort(code)

    def all_stopping(self, seconds: float) -> bool:
        request = self._stopping.Ibarrier()
        deadline = time.monotonic() + seconds
        while not request.Test():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def set_activity(self, activity: str) -> None:
        self.watchdog.activity = activity

    def set_timeout(self, seconds: float) -> None:
        self.watchdog.timeout = float(seconds)

    def close(self) -> None:
        self.watchdog.stop()
