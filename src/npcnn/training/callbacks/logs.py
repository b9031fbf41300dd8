"""Per-epoch text reports: a line on the console, a CSV file and a JSON file."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from npcnn.files import atomic_write_text
from npcnn.training.callbacks.base import Callback
from npcnn.training.history import EPOCH_KEYS


def format_epoch(record: dict[str, Any], epochs: int) -> str:
    """``epoch 3/50  loss 1.2345  acc 0.6120  val_loss 1.3000  val_acc 0.5900  lr 0.5  12.3s``;
    the validation fields are left out when there was no validation data.
    """
    parts = [
        f"epoch {record['epoch']}/{epochs}",
        f"loss {record['loss']:.4f}",
        f"acc {record['accuracy']:.4f}",
    ]
    if record.get("val_loss") is not None:
        parts.append(f"val_loss {record['val_loss']:.4f}")
    if record.get("val_accuracy") is not None:
        parts.append(f"val_acc {record['val_accuracy']:.4f}")
    parts.append(f"lr {record['lr']:.4g}")
    parts.append(f"{record['seconds']:.1f}s")
    return "  ".join(parts)


class EpochPrinter(Callback):
    """Print one line per epoch (see :func:`format_epoch`) through ``print_fn``."""

    def __init__(self, print_fn: Callable[[str], Any] = print) -> None:
        self.print_fn = print_fn

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        self.print_fn(format_epoch(logs, logs["epochs"]))


def _csv_row(record: dict[str, Any]) -> list[str]:
    # repr-exact floats; an empty cell for a missing value (no validation data).
    return ["" if record.get(k) is None else str(record[k]) for k in EPOCH_KEYS]


class CSVLogger(Callback):
    """A CSV file with a header (the History epoch keys) and one row per epoch.

    At the start of training the file is rewritten from the History so far
    (so a resumed run continues it instead of duplicating rows); each epoch
    then appends its row and flushes, so the file is current during training.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def on_train_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(EPOCH_KEYS)
        writer.writerows(_csv_row(r) for r in trainer.history.epochs)
        atomic_write_text(self.path, buffer.getvalue())

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        with self.path.open("a", newline="", encoding="utf-8") as f:
            csv.writer(f, lineterminator="\n").writerow(_csv_row(logs))


class JSONLogger(Callback):
    """A JSON file ``{"epochs": [...], "interrupted": bool}`` (plus ``"steps"`` with
    ``include_steps``), rewritten atomically after every epoch and at the end of training.
    """

    def __init__(self, path: str | os.PathLike[str], *, include_steps: bool = False) -> None:
        self.path = Path(path)
        self.include_steps = include_steps

    def _write(self, trainer: Any) -> None:
        data = trainer.history.to_dict()
        if not self.include_steps:
            del data["steps"]
        atomic_write_text(self.path, json.dumps(data, indent=2) + "\n")

    def on_train_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        self._write(trainer)

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        self._write(trainer)

    def on_train_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        self._write(trainer)
