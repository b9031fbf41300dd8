"""``npcnn``: the argument parser and the error policy of every command.

Each command lives in its own module with ``add_parser(subparsers)`` and
``run(args) -> exit code``; heavy modules (matplotlib, Pillow, tqdm, the
training loop) are imported only inside ``run``, so ``npcnn --help`` is quick.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, TextIO

from npcnn.cli import evaluate, export, gradcheck, onnx_import, predict, summary, train
from npcnn.cli.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    CLIError,
    UsageError,
    missing_dependency,
    one_line,
    print_error,
)
from npcnn.cli.streams import pipe_safe_output
from npcnn.distributed.data_parallel import DistributedError
from npcnn.distributed.launch import LaunchError, abort_job, init_world, launcher_size
from npcnn.training.interrupts import interrupts_not_lost, terminate_as_interrupt

COMMANDS = (train, evaluate, predict, summary, gradcheck, export, onnx_import)
COMMAND_NAMES = ("train", "evaluate", "predict", "summary", "gradcheck", "export", "import")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``npcnn: error: ...``, exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


class SubParser(Parser):
    """A command's parser: abbreviated options (``--epoch``) are not guessed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    from npcnn import __version__

    parser = Parser(
        prog=PROG,
        allow_abbrev=False,
        description="Train and use convolutional networks written from scratch in NumPy.",
        epilog="Run 'npcnn COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=SubParser)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: sys.argv[1:]) and return the exit code.

    Warnings (NumPy's overflows, Pillow's, matplotlib's) print as one line
    each, ``npcnn: warning: ...``, so that they never bury a one-line error.
    Output to a pipe whose reader has gone is dropped, and the command goes on.
    A command whose printed output is its result (all but train, whose
    results are files) fails when that output could not be written (a full
    disk), rather than exit 0 with the result lost.
    """
    # Before SIGTERM becomes an exception: one that arrives while MPI starts then ends
    # the process as the system would, and the launcher the job, rather than leaving
    # the other ranks in MPI_Init for ever.
    join_early(list(sys.argv[1:] if argv is None else argv))
    with (
        pipe_safe_output() as stdout,
        one_line_warnings(),
        terminate_as_interrupt(),
        interrupts_not_lost() as lost,
    ):
        code = run_command_line(argv)
        if lost and code not in (128 + signal.SIGINT, 128 + signal.SIGTERM):
            code = report_interrupt(lost[0])  # what the command had no chance to see
            abort_job(code)  # (no stop the ranks agreed on)
        if code not in (EXIT_OK, 128 + signal.SIGINT, 128 + signal.SIGTERM):
            # A rank that leaves alone would keep the others waiting for ever; a stop
            # by Ctrl-C or SIGTERM in training is one every rank agreed on, at the same
            # step (one outside it is aborted where it is caught).
            abort_job(code)
        command = next(
            (a for a in (sys.argv[1:] if argv is None else argv) if a in COMMAND_NAMES), None
        )
        if code == 0 and stdout.failure is not None and command not in (None, "train"):
            print_error(f"cannot write the output: {stdout.failure.strerror or stdout.failure}")
            return EXIT_FAILURE
        return code


class OneLineWarnings:
    """`warnings.showwarning` for the command line: ``npcnn: warning: <first line>``, no
    source line. Of NumPy's floating-point warnings ("overflow encountered in exp",
    "invalid value encountered in matmul", ...) only the first is shown: the others
    follow from it, as NaN spreads through a network."""

    def __init__(self) -> None:
        self.floating_point_shown = False

    def __call__(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, RuntimeWarning) and " encountered in " in str(message):
            if self.floating_point_shown:
                return
            self.floating_point_shown = True
        print(f"{PROG}: warning: {one_line(message)}", file=sys.stderr if file is None else file)


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Show warnings with `OneLineWarnings` inside the block; the filters (which warning
    shows, how often) stay as they are and everything is restored after it."""
    with warnings.catch_warnings():
        warnings.showwarning = OneLineWarnings()
        yield


def run_command_line(argv: Sequence[str] | None = None) -> int:
    """`main` without its warning format: parse ``argv``, run the command, report errors."""
    parser = build_parser()
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        join_early(argv)
        args = parser.parse_args(argv)
        args.argv = argv  # the command line as given, for the run's record
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        if args.command != "train":
            refuse_launcher(args.command)
        return int(args.run(args))
    except SystemExit as exit_:  # --help and --version
        return exit_.code if isinstance(exit_.code, int) else EXIT_FAILURE
    except CLIError as err:
        print_error(err)
        return err.code
    except LaunchError as err:
        print_error(err)
        return EXIT_USAGE
    except ImportError as err:
        print_error(missing_dependency(err))
        return EXIT_FAILURE
    except KeyboardInterrupt as stop:  # outside training: a stop no other rank knows of
        code = report_interrupt(stop)
        abort_job(code)  # (the ranks that stop too, within seconds, each end alone)
        return code
    except MemoryError:
        print_error("out of memory: try a smaller --batch-size, or fewer --threads")
        return EXIT_FAILURE
    except (OSError, ValueError, DistributedError) as err:
        # Files the user named, data that does not fit the model, a full disk:
        # all reported in one line, as the user can act on each of them.
        print_error(err)
        return EXIT_FAILURE


def report_interrupt(stop: KeyboardInterrupt) -> int:
    """Say that Ctrl-C or SIGTERM stopped the command; the exit code of that signal."""
    signum = getattr(stop, "signal", signal.SIGINT)
    how = "interrupted" if signum == signal.SIGINT else f"stopped by {signum.name}"
    print(f"{PROG}: {how}", file=sys.stderr)
    return 128 + int(signum)


def refuse_launcher(command: str) -> None:
    """LaunchError for a command that runs in one process (all but train) when a launcher
    started several: each would do the same work and print the same report."""
    started, variable = launcher_size()
    if started > 1:
        raise LaunchError(
            f"{command} runs in one process, and {started} were started ({variable}="
            f"{started}): run it without mpiexec"
        )


def join_early(argv: Sequence[str]) -> None:
    """With --distributed, join MPI before anything can fail: a rank that left before
    joining would keep the others inside MPI_Init for ever, where no watchdog runs.
    Failing to join is left to the command to report (it joins again)."""
    if "--distributed" in argv:
        with contextlib.suppress(ImportError, LaunchError, RuntimeError):
            init_world(True, require_mpi=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
