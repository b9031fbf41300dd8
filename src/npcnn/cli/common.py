"""Shared steps of the commands: loading models and data, run directories, run records."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from npcnn.cli.errors import CLIError, UsageError
from npcnn.cli.rundir import RUN_RECORD
from npcnn.files import atomic_write_text, remove_stale_temporaries_in
from npcnn.shapes import name_batch_axis
from npcnn.text import clip, short_repr

if TYPE_CHECKING:
    import numpy as np

    from npcnn.data import Dataset, DatasetSplit
    from npcnn.nn import Layer


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
    """The model in a model file, or in a training checkpoint (said on stderr), with
    every failure a user can cause turned into a one-line CLIError."""
    from npcnn.serialization import load_arrays, model_from_arrays, split_records
    from npcnn.training.checkpoint import CHECKPOINT_KEY

    if Path(path).is_dir():
        raise CLIError(f"{path} is a directory, not a model file")
    if Path(path).suffix.lower() == ".onnx":
        return load_onnx_model(path)
    remove_stale_temporaries_in(Path(path).parent)  # of a write killed in that run
    try:
        arrays = load_arrays(path)
        model_arrays, records = split_records(arrays)
        if CHECKPOINT_KEY in records:
            # A checkpoint holds the whole model; its other records are the run's.
            print(f"note: {path} is a training checkpoint; using its model", file=sys.stderr)
            arrays = model_arrays
        return model_from_arrays(arrays, source=str(path))
    except FileNotFoundError:
        raise CLIError(f"no such model file: {path}") from None
    except PermissionError:
        raise CLIError(f"cannot read the model file {path}: permission denied") from None
    except ValueError as err:
        raise CLIError(str(err)) from None


def load_onnx_model(path: str | os.PathLike[str], allow_external_data: bool = False) -> Layer:
    """The npcnn model of an ONNX file, every failure a one-line CLIError."""
    from npcnn.onnx import OnnxMissingError, load

    try:
        return load(path, allow_external_data=allow_external_data)
    except FileNotFoundError:
        raise CLIError(f"no such model file: {path}") from None
    except PermissionError:
        raise CLIError(f"cannot read the model file {path}: permission denied") from None
    except (OnnxMissingError, ValueError) as err:
        raise CLIError(str(err)) from None


def check_model_fits(model: Layer, input_shape: tuple[int, ...], source: object) -> None:
    """Refuse a model whose layers do not fit images of ``input_shape`` (C, H, W).

    The model runs on a batch of 0 images, which every layer computes as
    empty arrays of the right shapes: a mismatch shows at once, before
    anything is allocated (a crafted padding would make one image gigabytes).
    The reference kernels run it: they allocate nothing for an empty batch,
    where the fast ones prepare per-channel tiles of the image size.
    """
    import numpy as np

    from npcnn import use_reference

    try:
        with use_reference():
            model.forward(np.zeros((0, *input_shape), np.float32))
    except (ValueError, TypeError, MemoryError) as err:
        size = "x".join(map(str, input_shape))
        reason = name_batch_axis(str(err), (0, *input_shape))
        raise CLIError(f"{source} does not take {size} images: {clip(reason, 120)}") from None


def check_finite(probabilities: np.ndarray, source: object) -> None:
    """Refuse outputs that are NaN or infinite (damaged weights or statistics)."""
    import numpy as np

    bad = int(np.count_nonzero(~np.isfinite(probabilities).all(axis=1)))
    if bad:
        raise CLIError(
            f"{source}: the model's outputs are NaN or infinite for {bad:,} of "
            f"{len(probabilities):,} images: its weights or batch-norm statistics are damaged"
        )


def load_data(name: str, num_classes: int | None = None) -> Dataset:
    """load_dataset(name, num_classes=...) with its failures turned into CLIErrors.

    ``num_classes`` (the --num-classes option) is for a directory of files;
    a named data set with another count of classes is a UsageError.
    """
    return _load(name, num_classes, None)


def load_test_split(name: str, num_classes: int | None = None) -> DatasetSplit:
    """load_split(name, "test", num_classes=...) with its failures turned into CLIErrors,
    as :func:`load_data`: only the test files are needed (and downloaded)."""
    return _load(name, num_classes, "test")


def _load(name: str, num_classes: int | None, split: str | None) -> Dataset | DatasetSplit:
    """The data set ``name`` (``split`` None) or one split of it, every failure a CLIError."""
    from npcnn.data import DataError, LabelError, dataset_spec, load_dataset, load_split

    spec = dataset_spec(name)
    if spec is not None and num_classes not in (None, len(spec.classes)):
        raise UsageError(
            f"--num-classes {num_classes}: the {spec.name!r} data set has "
            f"{len(spec.classes)} classes (the option is for a directory of IDX files)"
        )
    try:
        if split is None:
            return load_dataset(name, num_classes=num_classes)
        return load_split(name, split, num_classes=num_classes)
    except LabelError as err:
        hint = "; pass --num-classes N if the data set has more classes" if spec is None else ""
        raise CLIError(err.summary + hint) from None
    except DataError as err:
        raise CLIError(err.summary) from None
    except OSError as err:
        raise CLIError(f"cannot read the data set {name!r}: {err}") from None


def limit_splits(data: Dataset, limit_train: int | None, limit_test: int | None) -> Dataset:
    """The first ``limit_*`` examples of each split (None keeps all)."""
    return data.head(limit_train, limit_test)


#: The run record's settings that the commands read, and the type each must have.
_RECORD_TYPES = {
    "preset": str,
    "data": str,
    "seed": int,
    "num_classes": (int, type(None)),
    "tta": str,
}


def _record_path(model_path: str | os.PathLike[str]) -> Path:
    """The run.json beside a model or checkpoint file."""
    return Path(model_path).parent / RUN_RECORD


def _parse_run_record(record: Path) -> dict[str, Any] | None:
    """The contents of ``record`` with a dict of settings under "config", or None if
    there is none; a CLIError naming it if it is not JSON or has no settings."""
    try:
        text = record.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None  # none there, or unreadable: the commands work without it
    try:
        data = json.loads(text)
    except RecursionError:
        raise CLIError(f"{record}: damaged run record (nested too deeply)") from None
    except ValueError:
        if not text.strip():
            return None  # claimed by a run that has not written it yet
        raise CLIError(f"{record}: damaged run record (not JSON)") from None
    config = data.get("config") if isinstance(data, dict) else None
    if not isinstance(config, dict):
        raise CLIError(f"{record}: damaged run record (no settings)")
    return data


def _check_setting(record: Path, config: dict[str, Any], key: str) -> None:
    """Refuse a setting of the record that is there with the wrong type."""
    kind = _RECORD_TYPES[key]
    if key in config and (isinstance(config[key], bool) or not isinstance(config[key], kind)):
        raise CLIError(f"{record}: damaged run record ({key!r} is {short_repr(config[key])})")


def read_run_record(model_path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run.json next to a model or checkpoint file, or None if there is none.

    Raises CLIError for a run.json that is there but damaged (not JSON, too
    deeply nested, settings of the wrong type), naming the file.
    """
    record = _record_path(model_path)
    data = _parse_run_record(record)
    for key in _RECORD_TYPES if data is not None else ():
        _check_setting(record, data["config"], key)
    return data


def run_setting(model_path: str | os.PathLike[str], key: str, default: Any = None) -> Any:
    """One setting (``preset``, ``data``, ``num_classes``, ``tta``, ...) of the run
    record next to a model, or ``default`` when there is no record or it does not say.

    Only this setting is checked: a command reads the settings that the options it
    was given leave open, so a record damaged elsewhere does not stop it. Raises
    CLIError naming the file when the record is not JSON or this setting is damaged.
    """
    record = _record_path(model_path)
    data = _parse_run_record(record)
    if data is None or key not in data["config"]:
        return default
    _check_setting(record, data["config"], key)
    return data["config"][key]


def run_record_if_sound(model_path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run record next to a model, or None when there is none or it is damaged:
    for notes, which are not worth an error."""
    try:
        return read_run_record(model_path)
    except CLIError:
        return None


def run_tta(model_path: str | os.PathLike[str], given: str | None) -> tuple[str, str]:
    """The test-time augmentation to evaluate the model with, and where it comes from:
    ``given`` (the command line), else the run's (run.json next to the model), else "none".
    """
    from npcnn.training.evaluate import TTA_MODES

    if given is not None:
        return given, "--tta"
    recorded = run_setting(model_path, "tta", "none")
    if recorded not in TTA_MODES:
        record = _record_path(model_path)
        raise CLIError(f"{record}: damaged run record ('tta' is {short_repr(recorded)})")
    return recorded, "the run's, from run.json" if recorded != "none" else "none"


def gone_data_folder(name: str) -> str | None:
    """Why the data folder a run recorded (by its absolute path) cannot be read now, "no
    longer exists" (moved or deleted since training) or "is not a folder"; None when it
    is there, or `name` is a named data set or a relative path."""
    from npcnn.data import dataset_spec

    folder = Path(name)
    if dataset_spec(name) is not None or not folder.is_absolute() or folder.is_dir():
        return None
    return "is not a folder" if folder.exists() else "no longer exists"


def run_data_section(record: dict[str, Any] | None) -> dict[str, Any]:
    """The "data" section of a run record (what the run's data held: its classes, how
    many test images, ...), or {} when there is no record, or no such section, or it is
    not a mapping (a damaged record: the facts in it are then simply unknown)."""
    section = (record or {}).get("data")
    return section if isinstance(section, dict) else {}


def run_classes(model_path: str | os.PathLike[str]) -> list[str] | None:
    """The class names the run record next to a model lists, or None when there is no
    record or it lists none. Only they are read: a record damaged elsewhere does not
    matter; one that is not JSON is a CLIError naming it."""
    classes = run_data_section(_parse_run_record(_record_path(model_path))).get("classes")
    if isinstance(classes, list) and all(isinstance(c, str) for c in classes):
        return classes
    return None


def run_data_name(model_path: str | os.PathLike[str]) -> str | None:
    """The name of the data set the run next to a model trained on (its record's "data"
    section), or None when there is no record or it does not say."""
    name = run_data_section(_parse_run_record(_record_path(model_path))).get("name")
    return name if isinstance(name, str) else None


def class_names(model_path: str | os.PathLike[str], data: str | None, count: int) -> list[str]:
    """Names of the model's ``count`` classes.

    From ``data`` (a data set name or a directory: their classes are known
    without loading the images) if given, else from the run record next to
    the model, else the class indices "0", "1", ...
    """
    classes: list[str] | None = None
    if data is not None:
        from npcnn.data import DataError, dataset_spec, directory_classes

        spec = dataset_spec(data)
        if spec is not None:
            classes = list(spec.classes)
        elif Path(data).expanduser().is_dir():
            try:
                classes = directory_classes(Path(data).expanduser(), num_classes=count)
            except DataError as err:
                raise CLIError(f"the model has {count} outputs but {err.summary}") from None
        else:
            classes = list(load_data(data).classes)
    else:
        classes = run_classes(model_path)
    if classes is None:
        return [str(i) for i in range(count)]
    if len(classes) != count:
        raise CLIError(f"the model has {count} outputs but the data set has {len(classes)} classes")
    return classes


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
