"""argparse value checkers: a bad value is a usage error with a clear message."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path

#: What every command that takes a model file (MODEL) accepts.
MODEL_HELP = "a model .npz or .onnx file, or a training checkpoint"


def add_model_or_preset(
    p: argparse.ArgumentParser, presets: Sequence[str], default: str, verb: str
) -> None:
    """The arguments of a command that works on a saved model or on a preset's network:
    MODEL (optional) and --preset, whose help says the command does `verb` to it."""
    p.add_argument("model", nargs="?", metavar="MODEL", help=f"{MODEL_HELP} (default: a preset)")
    p.add_argument(
        "--preset", choices=list(presets), help=f"{verb} this preset's network (default: {default})"
    )


def _int(text: str, expected: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _int(text, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


#: --threads at most: more would only take turns on the cores, and tens of thousands
#: of threads cannot even be started.
MAX_THREADS = 1024


def threads(text: str) -> int:
    """A number of threads inside the layers: from 1 to MAX_THREADS."""
    return int_in_range(1, MAX_THREADS)(text)


def int_in_range(low: int, high: int) -> Callable[[str], int]:
    """A checker for integers in [low, high]."""

    def check(text: str) -> int:
        value = _int(text, "an integer")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {value}")
        return value

    return check


def class_count(text: str) -> int:
    """A number of classes: an integer of at least 2."""
    value = _int(text, "a number of classes")
    if value < 2:
        raise argparse.ArgumentTypeError(f"a classifier needs at least 2 classes, got {value}")
    return value


def batch_size(text: str) -> int | str:
    """A positive integer, or "full" for full-batch gradient descent.

    "full" stays a string here: None means "not given" (take the preset's).
    """
    if text.strip().lower() == "full":
        return "full"
    return positive_int(text)


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value:g}")
    return value


def non_negative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value:g}")
    return value


def unit_interval(text: str) -> float:
    """A float in [0, 1): momentum, label smoothing."""
    value = _float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value:g}")
    return value


momentum = unit_interval


def seed(text: str) -> int:
    value = _int(text, "an integer seed")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def directory(text: str) -> Path:
    """A directory to write; an empty string (a shell variable left unset) is refused,
    rather than taken as the current directory."""
    if not text:
        raise argparse.ArgumentTypeError("expected a directory path, got an empty string")
    return Path(text)


def non_empty(text: str) -> str:
    """A file or data set named on the command line; an empty string (a shell variable
    left unset) is refused, rather than taken as the current directory."""
    if not text:
        raise argparse.ArgumentTypeError("expected a file path, got an empty string")
    return text


def file_path(text: str) -> Path:
    """`non_empty`, as a Path."""
    return Path(non_empty(text))
