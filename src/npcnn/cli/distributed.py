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
    from npcnn.distributed import World


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
        action="store_true",
        help="with --distributed: batch statistics over the global batch, as one process "
        "would compute them (default: each process's own, as PyTorch's DDP)",
    )
    g.add_argument(
        "--collective-timeout",
        type=options.positive_float,
        default=None,
        metavar="SECONDS",
        help="with --distributed: end the job when a process waits this long for the "
        "others (default: 600)",
    )


def join_world(args: argparse.Namespace) -> World:
    """This process's world; with more than one rank, --threads defaults to the host's
    cores divided by its ranks, so the ranks do not oversubscribe the machine."""
    from npcnn.cli.common import available_cores
    from npcnn.distributed import init_world

    if (args.sync_bn or args.collective_timeout) and not args.distributed:
        raise UsageError("--sync-bn and --collective-timeout go with --distributed")
    world = init_world(args.distributed, timeout=args.collective_timeout)
    if world.size > 1 and args.threads is None:
        args.threads = max(1, available_cores() // world.local_size)
    return world


def shared_run_directory(world: World, choose: Any) -> Path:
    """Rank 0's run directory (``choose()`` is called there only), on every rank."""
    chosen = str(choose()) if world.is_root else None
    return Path(world.allgather(chosen, "the choice of the run directory")[0])


def describe(world: World, sync_bn: bool, threads: int) -> str:
    """The line that says how the run is spread."""
    statistics = "global (--sync-bn)" if sync_bn else "per process"
    return (
        f"distributed: {world.size} processes ({world.name}), {threads} thread(s) each, "
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
