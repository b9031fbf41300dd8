"""Training checkpoints: everything a run needs to continue bit for bit, in one .npz.

A checkpoint is a model file (:func:`npcnn.serialization.model_to_arrays`:
the architecture JSON and every parameter and buffer) plus

* ``__optimizer__.<key>``: each entry of ``optimizer.state_dict()`` (the
  hyperparameters and the per-parameter moment arrays);
* ``__history_steps__``: the History's per-step records as a float64 table
  (one row per step, columns :data:`~npcnn.training.history.STEP_KEYS`);
* ``__checkpoint__``: a 0-d unicode array holding JSON: where the run stands
  (``epoch`` completed epochs, ``step`` completed steps of the next epoch),
  the optimiser's class, the per-epoch History, the RNG states of the
  training batch iterator and of every ``numpy.random.Generator`` held by a
  layer (dropout masks), the partial sums of an unfinished epoch, and under
  ``extensions`` the state of every callback that has one, by its
  ``state_key`` (the scheduler's under ``"scheduler"``, a validation batch
  iterator's under ``"validation"``).

Format version 2; version 1 (the scheduler and validation states at the top
level of the record) is still read.

It is written atomically (temporary file, then rename) and read with
``allow_pickle=False``. :func:`npcnn.load` does not read it (the extra arrays
are not the model's); use ``load_checkpoint(path)["model"]``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from npcnn.nn import Layer
from npcnn.nn.random_state import jsonable
from npcnn.serialization import (
    ARCHITECTURE_KEY,
    load_arrays,
    model_from_arrays,
    model_to_arrays,
    save_arrays,
)
from npcnn.training.history import STEP_KEYS, History

CHECKPOINT_KEY = "__checkpoint__"
STEPS_KEY = "__history_steps__"
OPTIMIZER_PREFIX = "__optimizer__."
FORMAT_NAME = "npcnn-checkpoint"
FORMAT_VERSION = 2


def _steps_to_array(steps: list[Mapping[str, Any]]) -> np.ndarray:
    # One float64 row per step: a long run has ~10^5 steps, which as JSON in a
    # unicode array would take 4 bytes per character. float64 holds the ints exactly.
    rows = [[record[k] for k in STEP_KEYS] for record in steps]
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(STEP_KEYS))


def _steps_from_array(table: np.ndarray) -> list[dict[str, Any]]:
    if table.ndim != 2 or table.shape[1] != len(STEP_KEYS) or table.dtype.kind != "f":
        raise ValueError(f"the step table has shape {table.shape} and dtype {table.dtype}")
    whole = ("epoch", "step", "global_step")
    return [
        {k: int(v) if k in whole else float(v) for k, v in zip(STEP_KEYS, row, strict=True)}
        for row in table.tolist()
    ]


def save_checkpoint(
    path: str | os.PathLike[str],
    model: Layer,
    optimizer: Any,
    meta: Mapping[str, Any],
) -> Path:
    """Write ``model``, ``optimizer.state_dict()`` and the JSON-ready ``meta`` to ``path``.

    ``meta`` holds the run's position and states (see :class:`Trainer`); the
    format name, version and optimiser class are added here. Atomic.
    """
    record = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "optimizer": type(optimizer).__name__,
        **meta,
    }
    arrays = model_to_arrays(model)
    if "history" in record:
        history = dict(record["history"])
        arrays[STEPS_KEY] = _steps_to_array(history.pop("steps", []))
        record["history"] = history
    arrays[CHECKPOINT_KEY] = np.array(json.dumps(jsonable(record)))
    for key, value in optimizer.state_dict().items():
        arrays[OPTIMIZER_PREFIX + key] = np.asarray(value)
    return save_arrays(path, arrays)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :class:`Trainer` (or :func:`save_checkpoint`).

    Returns a dict with

    * ``model``: the rebuilt model (an :class:`npcnn.nn.Layer`), weights loaded;
    * ``model_state``: its state dict (name -> array);
    * ``architecture``: the model's description (``layer_spec`` output);
    * ``optimizer``: the optimiser's class name; ``optimizer_state``: the dict
      for ``optimizer.load_state_dict``;
    * ``epoch``: completed epochs; ``step``: completed steps of the next
      epoch (0 at an epoch boundary); ``global_step``; ``epochs``: the run's
      target epoch count;
    * ``history``: a :class:`History`;
    * ``extension_states``: each callback's state by its ``state_key``;
      ``scheduler_state`` (dict or None) and ``validation_data_state``
      (or None) are its "scheduler" and "validation" entries;
    * ``data_state``: the training batch iterator's RNG state (or None);
      ``epoch_lr``: the learning rate the unfinished epoch started with (None
      at an epoch boundary and in format 1);
      ``generator_states``: layer RNG states by dotted path;
    * ``totals``: partial sums of the unfinished epoch; ``data``: the
      training data's steps per epoch, examples and batch size;
    * ``run``: the run's settings as the Trainer's ``run_config`` gave them
      (data set, seed, recipe), or None.

    Raises FileNotFoundError for a missing file and ValueError for anything
    that is not an npcnn training checkpoint (including a plain model file).
    """
    source = str(path)
    arrays = load_arrays(path)
    record = _pop_record(arrays, source)
    step_table = arrays.pop(STEPS_KEY, np.zeros((0, len(STEP_KEYS))))
    optimizer_state = {
        key[len(OPTIMIZER_PREFIX) :]: arrays.pop(key)
        for key in list(arrays)
        if key.startswith(OPTIMIZER_PREFIX)
    }
    model = model_from_arrays(arrays, source=source)
    architecture = json.loads(str(arrays[ARCHITECTURE_KEY]))["model"]
    try:
        steps = _steps_from_array(step_table)
        extensions = _extension_states(record)
        return {
            "model": model,
            "model_state": {k: v for k, v in arrays.items() if k != ARCHITECTURE_KEY},
            "architecture": architecture,
            "optimizer": record["optimizer"],
            "optimizer_state": optimizer_state,
            "epoch": int(record["epoch"]),
            "step": int(record["step"]),
            "global_step": int(record["global_step"]),
            "epochs": record.get("epochs"),
            "history": History.from_dict({**record["history"], "steps": steps}),
            "extension_states": extensions,
            "scheduler_state": extensions.get("scheduler"),
            "data_state": record.get("data_state"),
            "epoch_lr": record.get("epoch_lr"),
            "validation_data_state": extensions.get("validation", {}).get("data_state"),
            "generator_states": dict(record.get("generators", {})),
            "totals": dict(record["totals"]),
            "data": dict(record.get("data", {})),
            "run": record.get("run"),
        }
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{source}: incomplete checkpoint record ({err!r})") from err


def _pop_record(arrays: dict[str, np.ndarray], source: str) -> dict[str, Any]:
    """Take the JSON record out of a checkpoint's arrays; ValueError if there is none
    of a format this version reads."""
    if CHECKPOINT_KEY not in arrays:
        what = "an npcnn model file" if ARCHITECTURE_KEY in arrays else "an npcnn file"
        raise ValueError(f"{source} is {what}, not a training checkpoint")
    try:
        record = json.loads(str(arrays.pop(CHECKPOINT_KEY)))
    except RecursionError:
        raise ValueError(f"{source}: the checkpoint record nests too deeply") from None
    except (json.JSONDecodeError, ValueError) as err:
        raise ValueError(f"{source}: the checkpoint record is not valid JSON ({err})") from err
    if not isinstance(record, dict) or record.get("format") != FORMAT_NAME:
        raise ValueError(f"{source} is not an npcnn training checkpoint")
    if record.get("version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{source} was written by a newer npcnn (checkpoint format {record['version']})"
        )
    return record


def _extension_states(record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The callbacks' states by key; format 1 kept the two it had at the top level."""
    if record.get("version", 1) >= 2:
        return {str(k): dict(v) for k, v in record.get("extensions", {}).items()}
    states: dict[str, dict[str, Any]] = {}
    if record.get("scheduler") is not None:
        states["scheduler"] = dict(record["scheduler"])
    if record.get("validation_data_state") is not None:
        states["validation"] = {"data_state": record["validation_data_state"]}
    return states
