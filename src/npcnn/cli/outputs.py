"""The file ``export`` and ``import`` write: of the right kind, and never one that
exists unless ``--force`` says so (``train`` never overwrites either: it moves on
to a fresh run directory)."""

from __future__ import annotations

import argparse
from pathlib import Path

from npcnn.cli import options
from npcnn.cli.errors import CLIError, UsageError


def add_output_arguments(p: argparse.ArgumentParser, metavar: str, help: str) -> None:
    """The OUT positional argument (``metavar``, e.g. "OUT.onnx") and ``--force``."""
    p.add_argument("output", metavar=metavar, type=options.file_path, help=help)
    p.add_argument(
        "--force",
        action="store_true",
        help=f"overwrite {metavar} if it exists (default: refuse, and write nothing)",
    )


def check_output(path: Path, suffix: str, force: bool) -> None:
    """Refuse, before anything is read or written, an output that does not end in
    ``suffix`` (a usage error), is a directory, or exists without ``force``."""
    if path.suffix.lower() != suffix:
        raise UsageError(f"the output file should end in {suffix}, got {path}")
    if path.is_dir():
        raise CLIError(f"{path} is a directory")
    if (path.exists() or path.is_symlink()) and not force:
        raise CLIError(f"{path} exists; add --force to overwrite it")
