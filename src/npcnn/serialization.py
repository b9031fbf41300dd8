"""Save and load models as data, never as code.

A model file is one .npz: the architecture as JSON (under a reserved key)
and every parameter and buffer under its dotted state-dict name. Loading
uses `allow_pickle=False`, so a file can never run code, and every way a
file can be wrong (not an .npz, not ours, an unknown layer, a missing or
misshapen array, an array of another dtype, NaN weights, a training
checkpoint) is a `ValueError` of one short line that starts with the
file's name and says which.

A damaged or crafted file cannot make loading allocate what it claims:
the zip directory and each array's header are checked against the file's
size before anything is decompressed (`load_arrays`), and the architecture
against the arrays before any layer is built (`model_from_arrays`).
"""

from __future__ import annotations

import json
import math
import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from npcnn.files import atomic_path
from npcnn.nn import Layer, generator_states, set_generator_states
from npcnn.nn.module import RESERVED_PREFIX
from npcnn.nn.registry import build_layer, build_limits, check_saveable, layer_spec
from npcnn.text import clip, names_list, short_repr

__all__ = [
    "ARCHITECTURE_KEY",
    "RESERVED_PREFIX",
    "build_layer",
    "layer_spec",
    "load",
    "load_arrays",
    "model_from_arrays",
    "model_to_arrays",
    "save",
    "save_arrays",
    "split_records",
]

ARCHITECTURE_KEY = "__npcnn_architecture__"
FORMAT_NAME = "npcnn-model"
FORMAT_VERSION = 1

#: An .npz whose arrays would decompress to more than this many times the
#: file's size, plus the allowance, is refused unread: npcnn writes arrays
#: uncompressed, and float weights do not compress a hundredfold; zeros do
#: (a "zip bomb": gigabytes from a few megabytes).
MAX_COMPRESSION_RATIO = 100
UNCOMPRESSED_ALLOWANCE = 64 * 2**20


def model_to_arrays(model: Layer) -> dict[str, np.ndarray]:
    """Everything `save` writes: the architecture record and each named array.

    Raises ValueError for a model that could not be loaded back (an
    unregistered layer class, a config() its constructor does not take, or
    a config that is not JSON data).
    """
    check_saveable(model)
    dtype = next((p.dtype for p in model.parameters()), np.dtype(np.float32))
    record = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "dtype": str(dtype),
        "model": layer_spec(model),
        "generators": generator_states(model),
    }
    try:
        text = json.dumps(record)
    except (TypeError, ValueError) as err:
        raise ValueError(f"cannot save: a layer's config() is not JSON data ({err})") from None
    _check_untied(model)
    arrays = {ARCHITECTURE_KEY: np.array(text)}
    arrays.update(model.state_dict())
    bad = [
        name
        for name, value in arrays.items()
        if name != ARCHITECTURE_KEY and not _all_finite(value)
    ]
    if bad:  # load would refuse the file
        raise ValueError(
            f"cannot save: the model's weights contain NaN or infinity (in {names_list(bad)})"
        )
    return arrays


def _check_untied(model: Layer) -> None:
    """Refuse a model in which two layers hold one Parameter (tied weights): a file keeps
    each name's array apart, so the model loaded would train them apart, and an
    optimiser's state (one entry per distinct Parameter) would no longer fit it."""
    first: dict[int, str] = {}
    for name, param in model.named_parameters():
        if id(param) in first:
            raise ValueError(
                f"cannot save: {first[id(param)]} and {name} are one Parameter (tied "
                "weights), which a model file cannot keep tied"
            )
        first[id(param)] = name


def split_records(
    arrays: Mapping[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(the model's arrays with its architecture record, the other records): a
    training checkpoint's optimiser state and history have RESERVED_PREFIX names."""
    model, records = {}, {}
    for name, value in arrays.items():
        reserved = name.startswith(RESERVED_PREFIX) and name != ARCHITECTURE_KEY
        (records if reserved else model)[name] = value
    return model, records


def model_from_arrays(arrays: Mapping[str, np.ndarray], source: str = "the arrays") -> Layer:
    """Rebuild a model from `model_to_arrays` output or a loaded .npz.

    The architecture may claim no more parameter and buffer values than the
    arrays hold (checked before a layer allocates them, see `npcnn.nn.registry`).

    Raises:
        ValueError: naming what is wrong when the arrays are not an npcnn model,
            do not fit its architecture, or hold NaN or infinite weights.
    """
    record = _architecture(arrays, source)
    state = {k: np.asarray(v) for k, v in arrays.items() if k != ARCHITECTURE_KEY}
    _check_state(state, source)
    try:
        total = sum(value.size for value in state.values())
        with build_limits(total, {name: value.shape for name, value in state.items()}):
            model = build_layer(record.get("model", {}))
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    if record.get("dtype", "float32") == "float64":
        model.astype(np.float64)
    own = [name for name, _ in model.named_parameters()]
    own += [name for name, _ in model.named_buffers()]
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing:
        raise ValueError(f"{source}: arrays {names_list(missing)} are missing from the file")
    if unexpected:
        raise ValueError(f"{source}: arrays {names_list(unexpected)} are not in the architecture")
    _check_kinds(model, state, source)
    try:
        model.load_state_dict(state, strict=True)
    except ValueError as err:
        raise ValueError(f"{source}: the arrays do not fit the architecture: {err}") from None
    if "generators" in record:  # files of earlier versions have none: fresh generators
        try:
            set_generator_states(model, record["generators"])
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
    return model


def _architecture(arrays: Mapping[str, np.ndarray], source: str) -> dict[str, Any]:
    """The architecture record, checked to be ours and of a version we read."""
    if ARCHITECTURE_KEY not in arrays:
        raise ValueError(f"{source} is not an npcnn model: it has no architecture record")
    text = np.asarray(arrays[ARCHITECTURE_KEY])
    if text.dtype.kind != "U" or text.ndim != 0:
        raise ValueError(f"{source} is not an npcnn model: the architecture record is not text")
    try:
        record = json.loads(str(text))
    except RecursionError:
        raise ValueError(f"{source}: the architecture record nests too deeply") from None
    except ValueError as err:
        raise ValueError(
            f"{source}: the architecture record is not valid JSON ({clip(err)})"
        ) from None
    if not isinstance(record, dict) or record.get("format") != FORMAT_NAME:
        raise ValueError(f"{source} is not an npcnn model: unexpected architecture record")
    version = record.get("version")
    if not isinstance(version, int):
        raise ValueError(f"{source}: the architecture record has no valid format version")
    if version > FORMAT_VERSION:
        raise ValueError(f"{source} was written by a newer npcnn (format {version}); upgrade npcnn")
    dtype_name = record.get("dtype", "float32")
    if dtype_name not in ("float32", "float64"):
        raise ValueError(
            f"{source}: unsupported dtype {short_repr(dtype_name, 40)} (float32 or float64)"
        )
    return record


def _check_state(state: Mapping[str, np.ndarray], source: str) -> None:
    """Refuse what no model's state holds: a checkpoint's records, text, NaN or infinity."""
    records = split_records(state)[1]
    if records:
        raise ValueError(
            f"{source} is a training checkpoint or holds other records "
            f"({names_list(sorted(records), 2)}): use npcnn.training.load_checkpoint"
        )
    for name, value in state.items():
        if value.dtype.kind not in "iuf" or (
            value.dtype.kind == "f" and value.dtype not in (np.float32, np.float64)
        ):
            raise ValueError(
                f"{source}: array {clip(name, 60)!r} has dtype {value.dtype} "
                "(a model holds float32 or float64 weights and integer counters)"
            )
    bad = [(name, value) for name, value in state.items() if not _all_finite(value)]
    if bad:
        name, value = bad[0]
        more = f", and {len(bad) - 1} more arrays" if len(bad) > 1 else ""
        count = int(value.size - np.count_nonzero(np.isfinite(value)))
        raise ValueError(
            f"{source}: the model's weights contain NaN or infinity ({count:,} "
            f"value{'s' if count > 1 else ''} in {clip(name, 60)!r}{more})"
        )
    for name, value in state.items():  # a variance below 0: NaN in every output
        if name.rpartition(".")[2] == "running_var" and (value < 0).any():
            raise ValueError(f"{source}: the running variance {clip(name, 60)!r} is negative")


def _check_kinds(model: Layer, state: Mapping[str, np.ndarray], source: str) -> None:
    """Refuse an array that is not of the kind the model holds there: integers
    for a float weight (loaded silently, they would be a broken model), floats
    for an integer counter."""
    own = {name: p.data for name, p in model.named_parameters()}
    own.update(model.named_buffers())
    for name, target in own.items():
        value = state[name]
        if (value.dtype.kind == "f") != (target.dtype.kind == "f"):
            raise ValueError(
                f"{source}: array {clip(name, 60)!r} has dtype {value.dtype} "
                f"where the model holds {target.dtype}"
            )


def _all_finite(value: np.ndarray) -> bool:
    return value.dtype.kind != "f" or bool(np.isfinite(value).all())


def save_arrays(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> Path:
    """Write `arrays` to an .npz at `path` atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


def load_arrays(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read every array of an .npz, checking before it allocates anything that the
    archive is sane: its total size against the file's (see MAX_COMPRESSION_RATIO),
    and each array's header against the bytes it holds. Never unpickles.

    Raises:
        FileNotFoundError: no file at `path`.
        IsADirectoryError: `path` is a directory.
        ValueError: the file is not a plain, intact .npz, or is refused (says why).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a model file")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, "rb") as f:
        # Every .npz is a zip archive; anything else (a .npy, a text file) is not ours.
        if f.read(4) != b"PK\x03\x04":
            raise ValueError(f"{path} is not an npcnn model or checkpoint (not an .npz archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            _check_sizes(archive, path)
            return {
                _array_name(i.filename): _read_member(archive, i, path) for i in archive.infolist()
            }
    except (
        OSError,
        EOFError,
        RuntimeError,
        NotImplementedError,
        zipfile.BadZipFile,
        zlib.error,
    ) as err:
        raise ValueError(f"{path} is not a readable .npz file ({clip(err)})") from None


def _check_sizes(archive: zipfile.ZipFile, path: Path) -> None:
    """Refuse an archive whose members would decompress far beyond the file's size."""
    size = path.stat().st_size
    total = sum(info.file_size for info in archive.infolist())
    if total > MAX_COMPRESSION_RATIO * size + UNCOMPRESSED_ALLOWANCE:
        raise ValueError(
            f"{path}: refused, its arrays would decompress to {total:,} bytes from a "
            f"{size:,}-byte file (a zip bomb?)"
        )


def _array_name(member: str) -> str:
    return member[: -len(".npy")] if member.endswith(".npy") else member


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> np.ndarray:
    """One .npy member, once its header is checked against the bytes it holds."""
    name = clip(_array_name(info.filename), 60)
    with archive.open(info) as member:
        try:
            shape, dtype = _read_header(member)
        except ValueError as err:
            raise ValueError(
                f"{path}: member {name!r} is not a NumPy array ({clip(err)})"
            ) from None
        if dtype.hasobject:
            raise ValueError(
                f"{path} holds pickled objects ({name!r}); npcnn never unpickles: it could run code"
            )
        held = info.file_size - member.tell()
        claimed = math.prod(shape) * dtype.itemsize
        if held != claimed:
            raise ValueError(
                f"{path}: array {name!r} claims shape {short_repr(shape, 40)} "
                f"({claimed:,} bytes) but holds {held:,} bytes"
            )
        member.seek(0)
        return np.lib.format.read_array(member, allow_pickle=False)


def _read_header(member: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype in an .npy header (format 1.0 or 2.0), reading no data."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise ValueError(f".npy format {version} is not supported")
    return shape, dtype


def save(model: Layer, path: str | os.PathLike[str]) -> Path:
    """Save `model` (architecture and arrays) to the .npz at `path`; returns the path."""
    return save_arrays(path, model_to_arrays(model))


def load(path: str | os.PathLike[str]) -> Layer:
    """Load a model written by `save`.

    Raises:
        FileNotFoundError: no file at `path`; IsADirectoryError: `path` is a directory.
        ValueError: the file is not an npcnn model, or its arrays do not fit (says which).
    """
    return model_from_arrays(load_arrays(path), source=str(path))
