"""``npcnn train --distributed``: the command line's side of data-parallel training.

Every rank parses the same command line, loads the same data and builds
the same model; rank 0 chooses the run directory and alone prints and
writes files (run.json, logs, curves, checkpoints, the final report). The
other ranks train in silence and leave when training ends. A rank that
fails ends the whole job (`npcnn.distributed.abort_job`, from `main`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from npcnn.cli import options
from npcnn.cli.errors import EXIT_OK, UsageError

if TYPE_CHECKING:
    from npcnn.distributed import DataParallel, World


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("distributed training (under mpiexec -n K; see the README)")
    g.add_argument(
        "--distributed",
        action="store_true",
        help="train on every process mpiexec started, each on its share of every batch "
        "(--batch-size is the global batch); needs the 'distributed' extra",
    )
    g.add_argument(
        "--sync-bn",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --distributed: batch statistics over the global batch, as one process "
        "would compute them (default: each process's own, as PyTorch's DDP; a resumed run "
        "keeps its choice)",
    )
    g.add_argument(
        "--collective-timeout",
        type=_timeout,
        default=None,
        metavar="SECONDS",
        help="with --distributed: end the job when a process waits this long for the "
        "others (default: 600, at least 1)",
    )


def _timeout(text: str) -> float:
    seconds = options.positive_float(text)
    if seconds < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 second, got {text}")
    return seconds


def join_world(args: argparse.Namespace) -> tuple[World, int | None]:
    """This process's world, and the threads each rank should use unless --threads says:
    with several ranks, the host's cores divided by its ranks, so that they do not
    oversubscribe the machine (a warning on rank 0 when they do all the same)."""
    import warnings

    from npcnn.cli.common import available_cores
    from npcnn.distributed import init_world

    if (args.sync_bn is not None or args.collective_timeout) and not args.distributed:
        raise UsageError("--sync-bn and --collective-timeout go with --distributed")
    world = init_world(args.distributed, timeout=args.collective_timeout, require_mpi=True)
    if world.size == 1:
        return world, None
    cores = available_cores()
    threads = args.threads or max(1, cores // world.local_size)
    if world.is_root and world.local_size * threads > cores:
        warnings.warn(
            f"{world.local_size} processes on this host with {threads} thread(s) each are "
            f"more than its {cores} cores: they take turns on them, which slows every step",
            stacklevel=2,
        )
    return world, threads


def data_parallel(
    args: argparse.Namespace, world: World, config: dict[str, Any], previous: dict[str, Any] | None
) -> DataParallel | None:
    """With --distributed, the DataParallel of the run, recorded in ``config`` under
    "distributed" (processes, sync-BN, the MPI); --sync-bn defaults to the resumed run's."""
    if not args.distributed:
        return None
    from npcnn.distributed import DataParallel

    before = (previous or {}).get("distributed") or {}
    sync_bn = args.sync_bn if args.sync_bn is not None else bool(before.get("sync_bn", False))
    config["distributed"] = {"processes": world.size, "sync_bn": sync_bn, "mpi": world.name}
    return DataParallel(world, sync_bn=sync_bn)


def preflight(
    parallel: DataParallel, model: Any, batches: Any, checkpoint: Any, config: dict[str, Any]
) -> None:
    """Every check that could fail on one rank, before rank 0 makes the run directory: the
    shares of the batches, and the ranks' fingerprints (the same model, data, position
    and recipe)."""
    from npcnn.cli.train_config import RECIPE_OPTIONS

    position = {"epoch": 0, "step": 0}
    if checkpoint is not None:
        position = {"epoch": checkpoint["epoch"], "step": checkpoint["step"]}
    recipe = {name: config.get(name) for name in ("seed", "data", *RECIPE_OPTIONS)}
    parallel.check(model, parallel.shard(batches, model), position, {"recipe": recipe})


def shared_run_directory(world: World, choose: Any) -> Path:
    """Rank 0's run directory (``choose()`` is called there only), on every rank."""
    chosen = str(choose()) if world.is_root else None
    return Path(world.allgather(chosen, "the choice of the run directory")[0])


def describe(parallel: DataParallel, threads: int) -> str:
    """The line that says how the run is spread."""
    world = parallel.world
    statistics = "global (--sync-bn)" if parallel.sync_bn else "per process"
    processes = "1 process" if world.size == 1 else f"{world.size} processes"
    return (
        f"distributed: {processes} ({world.name}), {threads} thread(s) each, "
        f"batch-norm statistics {statistics}"
    )


def train_other_rank(
    trainer: Any, batches: Any, config: dict[str, Any], args: Any, data: Any
) -> int:
    """A rank other than 0: train without a word; the exit code as rank 0's would be."""
    from npcnn.nn import use_reference
    from npcnn.training import TrainingInterrupted

    try:
        with use_reference(args.reference):
            trainer.fit(
                batches,
                config["epochs"],
                validation=(data.test_images, data.test_labels),
                resume_from=args.resume,
            )
    except TrainingInterrupted as stop:
        return 128 + int(stop.signal)
    return EXIT_OK
