"""Joining the job: which world this process is in, and the mistakes made when starting one.

`init_world(distributed)` returns `SingleProcess` when training is not
distributed, else an `MPIWorld`. It is where the launcher's mistakes are
caught, each with a message that says what to do:

- ``distributed`` without mpi4py: what to install, when a launcher started
  several processes or the caller asks for MPI (``require_mpi``, as
  ``npcnn train --distributed`` does); otherwise the world of one, with a
  warning that mpi4py is missing (a library script runs without mpiexec);
- an ``mpiexec`` of another MPI than mpi4py's: the launcher started K
  processes (its environment says so) but each one is "rank 0 of 1";
- K processes started without ``--distributed``: each would train the same
  model alone and write the same files.

The world it makes is the *active* one (`active_world`), which the command
line asks for to end every rank when one fails (`abort_job`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Mapping

from npcnn.distributed.world import SingleProcess, World

#: Environment variables through which launchers tell a process how many they started:
#: MPICH's Hydra (and Intel MPI), Open MPI, PMIx, and Slurm's srun.
LAUNCHER_SIZES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "SLURM_STEP_NUM_TASKS")
#: Seconds a failing rank waits for the others to fail too before it aborts the job.
AGREE_TO_STOP_SECONDS = 5.0

_active: World | None = None


class LaunchError(RuntimeError):
    """The job was started in a way that cannot train (see the module docstring)."""


def launcher_size(environ: Mapping[str, str] | None = None) -> tuple[int, str | None]:
    """How many processes a launcher says it started, and the variable that says it
    (1 and None outside any launcher)."""
    environ = os.environ if environ is None else environ
    for name in LAUNCHER_SIZES:
        value = environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            return int(value), name
    return 1, None


def init_world(
    distributed: bool, timeout: float | None = None, *, require_mpi: bool = False
) -> World:
    """The world this process trains in, made the active one (called again, the same
    MPI world, with the new ``timeout``). With ``distributed`` but no mpi4py and no
    launcher that started several processes, the world of one (warning that mpi4py
    is missing), unless ``require_mpi``.

    Raises:
        LaunchError: a launcher started several processes without ``distributed``, or
            its MPI is not mpi4py's. In the first case MPI is still joined when it
            can be, so that `abort_job` ends the ranks that did ask for it (they
            would otherwise wait for this one for ever).
        ImportError: ``distributed`` without mpi4py when a launcher started several
            processes or ``require_mpi`` (its message says what to install).
    """
    global _active
    started, variable = launcher_size()
    if not distributed:
        if started > 1:
            error = LaunchError(
                f"{started} processes were started ({variable}={started}) without "
                "--distributed: each would train alone and write the same files; "
                "add --distributed, or start one process"
            )
            with contextlib.suppress(ImportError, LaunchError):
                _active = _joined(timeout)
            raise error
        _active = SingleProcess()
        return _active
    try:
        world = _joined(timeout)
    except ImportError as err:
        if err.name != "mpi4py" or started > 1 or require_mpi:
            raise
        _active = _world_of_one_without_mpi4py()
        return _active
    if world.size == 1 and started > 1:
        world.close()
        raise LaunchError(
            f"the launcher started {started} processes ({variable}={started}) but each is "
            f"rank 0 of 1: that mpiexec belongs to another MPI than the one mpi4py uses "
            f"({world.name}); start the job with that MPI's mpiexec (for the mpich wheel, "
            f"{os.path.join(sys.prefix, 'bin', 'mpiexec')})"
        )
    _active = world
    return world


def _world_of_one_without_mpi4py() -> World:
    """The world of one, for a library script run without mpiexec and without mpi4py."""
    warnings.warn(
        "mpi4py is not installed: training in one process "
        "(pip install 'npcnn[distributed]' to train on several)",
        stacklevel=3,  # init_world's caller
    )
    return SingleProcess()


def _joined(timeout: float | None) -> World:
    """The MPI world: the active one if there is one (its watchdog given ``timeout``),
    else a new one, which ends the job on an uncaught exception."""
    from npcnn.distributed.mpi import DEFAULT_TIMEOUT, MPIWorld

    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    if isinstance(_active, MPIWorld):
        _active.set_timeout(timeout)
        return _active
    world = _mpi_world(timeout)
    if world.size > 1:
        _abort_on_uncaught_exceptions(world)
    return world


def _abort_on_uncaught_exceptions(world: World) -> None:
    """An exception that ends one rank's program ends the job (as ``python -m mpi4py``):
    its traceback is printed, then every rank is stopped, rather than left waiting."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, traceback: object) -> None:
        print(f"npcnn: rank {world.rank} of {world.size} failed:", file=sys.stderr)
        previous(kind, value, traceback)  # type: ignore[arg-type]
        world.abort(1)

    sys.excepthook = hook


def _mpi_world(timeout: float) -> World:
    """An MPIWorld, MPI initialised by npcnn once the launcher is known to be mpi4py's MPI's
    (MPI_Init itself aborts the process under another MPI's launcher, without a word
    anyone can act on)."""
    try:
        import mpi4py
    except ImportError:
        raise ImportError(
            "--distributed needs mpi4py and an MPI: pip install 'npcnn[distributed]'",
            name="mpi4py",
        ) from None
    if "mpi4py.MPI" not in sys.modules:
        mpi4py.rc.initialize = False  # (checked first, then initialised below)
        mpi4py.rc.finalize = True
    from mpi4py import MPI

    if not MPI.Is_initialized():
        check_launcher(MPI.Get_library_version())
        MPI.Init_thread(MPI.THREAD_MULTIPLE)
    from npcnn.distributed.mpi import MPIWorld

    return MPIWorld(timeout=timeout)


def check_launcher(library: str, environ: Mapping[str, str] | None = None) -> None:
    """LaunchError when the environment says the launcher of one MPI (Open MPI's, or a
    PMI one such as MPICH's Hydra) started this process and mpi4py uses another."""
    environ = os.environ if environ is None else environ
    library = " ".join(library.split("\n")[0].split())
    open_mpi_library = "Open MPI" in library
    if any(name.startswith("OMPI_COMM_WORLD") for name in environ):
        launcher = "Open MPI's mpiexec"
    elif "PMI_SIZE" in environ or "PMI_RANK" in environ:
        launcher = "a PMI launcher (MPICH's or Intel MPI's mpiexec)"
    else:
        return
    if open_mpi_library != launcher.startswith("Open MPI"):
        own = os.path.join(sys.prefix, "bin", "mpiexec")
        raise LaunchError(
            f"this process was started by {launcher}, but mpi4py uses {library}: start the "
            f"job with the mpiexec of that MPI (for the mpich wheel, {own})"
        )


def active_world() -> World | None:
    """The world `init_world` made last (None before)."""
    return _active


def abort_job(code: int) -> None:
    """End every rank of the active world when it has more than one (a rank that exits
    alone would leave the others waiting in a collective for ever), unless every rank
    fails within `AGREE_TO_STOP_SECONDS` (a mistake in the command line or the data that
    each rank meets): then each returns, to end with ``code`` after MPI_Finalize. An
    abort can lose the lines the ranks printed last, before the launcher forwards them."""
    if _active is not None and _active.size > 1:
        if not _active.all_stopping(AGREE_TO_STOP_SECONDS):
            _active.abort(code)
