"""Save and load models as data, never as code.

A model file is one .npz: the architecture as JSON (under a reserved key)
and every parameter and buffer under its dotted state-dict name. Loading
uses `allow_pickle=False`, so a file can never run code, and every way a
file can be wrong (not an .npz, not ours, an unknown layer, a missing or
misshapen array) is a `ValueError` that says which.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from npcnn.files import atomic_path
from npcnn.nn import LAYERS, Layer, Sequential

ARCHITECTURE_KEY = "__npcnn_architecture__"
FORMAT_NAME = "npcnn-model"
FORMAT_VERSION = 1


def layer_spec(layer: Layer) -> dict[str, Any]:
    """The JSON-ready description {"type", "config"} that rebuilds `layer` (recursive)."""
    return {"type": type(layer).__name__, "config": layer.config()}


def build_layer(spec: Mapping[str, Any]) -> Layer:
    """Rebuild a layer from `layer_spec` output; ValueError for an unknown type or bad config."""
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise ValueError(f"malformed layer description: {spec!r}")
    name = spec["type"]
    cls = LAYERS.get(name)
    if cls is None:
        raise ValueError(f"unknown layer type {name!r} (known: {', '.join(sorted(LAYERS))})")
    config = spec.get("config", {})
    if not isinstance(config, Mapping):
        raise ValueError(f"malformed configuration for {name}: {config!r}")
    config = dict(config)
    try:
        if cls is Sequential:
            return Sequential([build_layer(s) for s in config.get("layers", [])])
        return cls(**config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"cannot build {name} from {config}: {err}") from err


def model_to_arrays(model: Layer) -> dict[str, np.ndarray]:
    """Everything `save` writes: the architecture record and each named array."""
    dtype = next((p.dtype for p in model.parameters()), np.dtype(np.float32))
    record = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "dtype": str(dtype),
        "model": layer_spec(model),
    }
    arrays = {ARCHITECTURE_KEY: np.array(json.dumps(record))}
    arrays.update(model.state_dict())
    return arrays


def model_from_arrays(arrays: Mapping[str, np.ndarray], source: str = "the arrays") -> Layer:
    """Rebuild a model from `model_to_arrays` output or a loaded .npz.

    Raises:
        ValueError: naming what is wrong when the arrays are not an npcnn model
            or do not fit its architecture.
    """
    if ARCHITECTURE_KEY not in arrays:
        raise ValueError(f"{source} is not an npcnn model: it has no architecture record")
    try:
        record = json.loads(str(np.asarray(arrays[ARCHITECTURE_KEY])))
    except (json.JSONDecodeError, ValueError) as err:
        raise ValueError(f"{source}: the architecture record is not valid JSON ({err})") from err
    if not isinstance(record, dict) or record.get("format") != FORMAT_NAME:
        raise ValueError(f"{source} is not an npcnn model: unexpected architecture record")
    version = record.get("version")
    if not isinstance(version, int):
        raise ValueError(f"{source}: the architecture record has no valid format version")
    if version > FORMAT_VERSION:
        raise ValueError(f"{source} was written by a newer npcnn (format {version}); upgrade npcnn")
    dtype_name = record.get("dtype", "float32")
    if dtype_name not in ("float32", "float64"):
        raise ValueError(f"{source}: unsupported dtype {dtype_name!r} (float32 or float64)")
    model = build_layer(record.get("model", {}))
    if dtype_name == "float64":
        model.astype(np.float64)
    state = {k: np.asarray(v) for k, v in arrays.items() if k != ARCHITECTURE_KEY}
    for name, value in state.items():
        if value.dtype.kind not in "biuf":
            raise ValueError(f"{source}: array {name!r} has non-numeric dtype {value.dtype}")
    try:
        model.load_state_dict(state, strict=True)
    except ValueError as err:
        raise ValueError(f"{source}: the arrays do not fit the architecture: {err}") from err
    return model


def save_arrays(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> Path:
    """Write `arrays` to an .npz at `path` atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


def load_arrays(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read every array of an .npz without unpickling; ValueError if it is not a plain .npz."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, "rb") as f:
        # Every .npz is a zip archive; anything else (a .npy, a text file) is not ours,
        # and np.load would otherwise try it as a pickle.
        if f.read(4) != b"PK\x03\x04":
            raise ValueError(f"{path} is not an .npz archive")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except ValueError as err:
        if "pickle" in str(err):
            raise ValueError(
                f"{path} holds pickled objects; npcnn never unpickles (it could run code)"
            ) from None
        raise ValueError(f"{path} is not a readable .npz file: {err}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable .npz file ({err})") from None


def save(model: Layer, path: str | os.PathLike[str]) -> Path:
    """Save `model` (architecture and arrays) to the .npz at `path`; returns the path."""
    return save_arrays(path, model_to_arrays(model))


def load(path: str | os.PathLike[str]) -> Layer:
    """Load a model written by `save`.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file is not an npcnn model, or its arrays do not fit (says which).
    """
    return model_from_arrays(load_arrays(path), source=str(path))
