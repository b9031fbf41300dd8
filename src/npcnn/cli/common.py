"""Shared steps of the commands: loading models and data, run directories, run records."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from npcnn.cli.errors import CLIError
from npcnn.files import atomic_write_text

if TYPE_CHECKING:
    from npcnn.data import Dataset
    from npcnn.nn import Layer

#: Written into every run directory when training starts: how the run was made
#: (arguments, preset, data set and its class names), so evaluate/predict and
#: --resume can find them next to model.npz or checkpoint.npz.
RUN_RECORD = "run.json"


def set_threads(threads: int | None) -> None:
    """Use ``--threads`` threads inside the layers (None: leave the default, all cores).

    More threads than cores still runs, with a warning: the extra threads
    only take turns on the cores, and every parallel loop waits for its last.
    """
    if threads is None:
        return
    import npcnn

    cores = available_cores()
    if threads > cores:
        warnings.warn(
            f"--threads {threads} is more than the {cores} cores available; "
            "the extra threads only take turns on them, which slows every step",
            stacklevel=2,
        )
    npcnn.set_num_threads(threads)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_model(path: str | os.PathLike[str]) -> Layer:
    """npcnn.load with the two failures a user can cause turned into CLIErrors."""
    import npcnn

    if Path(path).is_dir():
        raise CLIError(f"{path} is a directory, not a model file")
    try:
        return npcnn.load(path)
    except FileNotFoundError:
        raise CLIError(f"no such model file: {path}") from None
    except PermissionError:
        raise CLIError(f"cannot read the model file {path}: permission denied") from None
    except ValueError as err:
        raise CLIError(f"{path} is not an npcnn model: {err}") from None


def load_data(name: str) -> Dataset:
    """load_dataset(name) with its failures turned into CLIErrors."""
    from npcnn.data import DataError, load_dataset

    try:
        data = load_dataset(name)
    except DataError as err:
        raise CLIError(err.summary) from None
    except OSError as err:
        raise CLIError(f"cannot read the data set {name!r}: {err}") from None
    return data


def limit_splits(data: Dataset, limit_train: int | None, limit_test: int | None) -> Dataset:
    """The first ``limit_*`` examples of each split (None keeps all)."""
    return data.head(limit_train, limit_test)


def read_run_record(model_path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run.json next to a model or checkpoint file, or None if there is none."""
    record = Path(model_path).parent / RUN_RECORD
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def class_names(model_path: str | os.PathLike[str], data: str | None, count: int) -> list[str]:
    """Names of the model's ``count`` classes.

    From ``data`` (a data set name; its spec knows the classes without
    loading it) if given, else from the run record next to the model, else
    the class indices "0", "1", ...
    """
    classes: list[str] | None = None
    if data is not None:
        from npcnn.data import DATASETS

        spec = DATASETS.get(data.strip().lower().replace("_", "-"))
        if spec is not None:
            classes = list(spec.classes)
        else:
            classes = list(load_data(data).classes)
    else:
        record = read_run_record(model_path) or {}
        found = record.get("data", {}).get("classes") if isinstance(record, dict) else None
        if isinstance(found, list) and all(isinstance(c, str) for c in found):
            classes = found
    if classes is None:
        return [str(i) for i in range(count)]
    if len(classes) != count:
        raise CLIError(f"the model has {count} outputs but the data set has {len(classes)} classes")
    return classes


def fresh_directory(path: Path) -> Path:
    """Create and return ``path``, or ``path-2``, ``path-3``, ... if it exists and is not empty.

    An existing empty directory is used as is; nothing that is already on
    disk is ever overwritten.
    """
    candidate, n = path, 1
    while True:
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            if candidate.is_dir() and not any(candidate.iterdir()):
                return candidate
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")


def default_run_directory(preset: str) -> Path:
    """runs/<preset>-<YYYYmmdd-HHMMSS> under the current directory."""
    return Path("runs") / f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}"


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
