"""``npcnn``: the argument parser and the error policy of every command.

Each command lives in its own module with ``add_parser(subparsers)`` and
``run(args) -> exit code``; heavy modules (matplotlib, Pillow, tqdm, the
training loop) are imported only inside ``run``, so ``npcnn --help`` is quick.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from npcnn.cli import evaluate, gradcheck, predict, summary, train
from npcnn.cli.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PROG,
    CLIError,
    UsageError,
    missing_dependency,
    print_error,
)
from npcnn.cli.streams import pipe_safe_output

COMMANDS = (train, evaluate, predict, summary, gradcheck)


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

    Output to a pipe whose reader has gone is dropped, and the command goes on.
    """
    with pipe_safe_output():
        return _run(argv)


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = parser.parse_args(argv)
        args.argv = argv  # the command line as given, for the run's record
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return int(args.run(args))
    except SystemExit as exit_:  # --help and --version
        return exit_.code if isinstance(exit_.code, int) else EXIT_FAILURE
    except CLIError as err:
        print_error(err)
        return err.code
    except ImportError as err:
        print_error(missing_dependency(err))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OSError, ValueError) as err:
        # Files the user named, data that does not fit the model, a full disk:
        # all reported in one line, as the user can act on each of them.
        print_error(err)
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
