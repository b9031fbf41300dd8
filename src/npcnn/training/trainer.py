"""The training loop: mini-batch steps, validation after each epoch, callbacks, resume.

One epoch (e, 1-based) is

    for each batch (x, y):  zero_grad; logits = model(x, training=True);
                            L = loss(logits, y); backward; optimizer.step()
    validation in inference mode; scheduler.step(); History record; checkpoint

and everything it reports goes through callbacks. Ctrl-C and SIGTERM are
deferred to the end of the current step, so the checkpoint it writes is a state the
uninterrupted run also passed through, and resuming from it ends with the
same weights bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from npcnn.nn import Layer, Sequential, update_bn
from npcnn.serialization import layer_spec
from npcnn.training.callbacks import Callback, CallbackList
from npcnn.training.checkpoint import (
    generator_states,
    load_checkpoint,
    save_checkpoint,
    set_generator_states,
)
from npcnn.training.errors import NonFiniteLossError, TrainingInterrupted
from npcnn.training.evaluate import (
    LossFn,
    as_model_input,
    count_correct,
    evaluate,
    evaluate_batches,
)
from npcnn.training.history import History
from npcnn.training.schedules import LRScheduler

Validation = tuple[np.ndarray, np.ndarray] | Iterable[tuple[np.ndarray, np.ndarray]] | None


@dataclass
class _Progress:
    """Where the run stands after the last completed step: the resumable position."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed steps of epoch `epoch + 1`
    global_step: int = 0
    data_state: dict[str, Any] | None = None  # train RNG state at the start of epoch `epoch + 1`
    validation_data_state: dict[str, Any] | None = None  # at the start of the next validation
    totals: dict[str, float] = field(default_factory=lambda: dict(_EMPTY_TOTALS))


# Partial sums of the unfinished epoch: sum(n_b * loss_b), correct predictions,
# examples, and seconds spent so far (in total and in training steps).
_EMPTY_TOTALS = {"loss_sum": 0.0, "correct": 0, "count": 0, "seconds": 0.0, "train_seconds": 0.0}


class _DeferredInterrupt:
    """While active, the first Ctrl-C (SIGINT) or SIGTERM only records the signal in
    ``requested`` (the loop stops at the next safe point); a second one raises
    KeyboardInterrupt at once.

    Installed only in the main thread and only over the default handlers
    (Python's for SIGINT, the system's for SIGTERM): a handler the program
    set itself, or an ignored signal, is left alone.
    """

    _DEFAULTS = ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL))

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            for signum, default in self._DEFAULTS:
                if signal.getsignal(signum) is default:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()


def _is_array_pair(data: Any) -> bool:
    """(images, labels) arrays, as opposed to an iterable of batches."""
    return isinstance(data, tuple | list) and len(data) == 2 and isinstance(data[0], np.ndarray)


def _data_state(data: Any) -> dict[str, Any] | None:
    return data.get_state() if hasattr(data, "get_state") else None


def _examples_per_epoch(train: Any) -> int | None:
    n, size = getattr(train, "num_examples", None), getattr(train, "batch_size", None)
    if n is None or size is None:
        return None
    return len(train) * size if getattr(train, "drop_last", False) else n


class Trainer:
    """Train ``model`` with ``loss_fn`` and ``optimizer``; report through ``callbacks``.

    Args:
        model: a :class:`npcnn.nn.Layer` mapping (B, C, H, W) floats to (B, K) logits.
        loss_fn: ``forward(logits, y) -> float`` (the batch mean) and
            ``backward() -> dlogits``, e.g. :class:`npcnn.nn.CrossEntropyLoss`.
        optimizer: any :mod:`npcnn.optim` optimiser over ``model.parameters()``.
        scheduler: an :class:`~npcnn.training.schedules.LRScheduler`, stepped
            after every epoch (None: constant learning rate).
        callbacks: :class:`~npcnn.training.callbacks.Callback` objects.
        checkpoint_path: if given, a resumable checkpoint is written there
            (atomically) after every epoch and when Ctrl-C stops training.
        eval_batch_size: batch size for validation arrays.
        bn_data: images (N, H, W) / (N, C, H, W), or an iterable of batches: if
            given, every batch norm's running statistics are recomputed on it
            (:func:`npcnn.nn.update_bn`) after each epoch's training, before
            validation. For short or full-batch runs, where the running
            average lags far behind weights that change fast.
        run_config: JSON-ready settings of the run (data set, seed, recipe...),
            stored in every checkpoint under ``"run"`` so that the checkpoint
            alone says how to continue it (:func:`load_checkpoint` returns it).

    Attributes during and after :meth:`fit`: ``history``, ``epochs`` (the
    target), ``stop_training`` (a callback sets it to stop after the epoch).
    """

    def __init__(
        self,
        model: Layer,
        loss_fn: LossFn,
        optimizer: Any,
        *,
        scheduler: LRScheduler | None = None,
        callbacks: Iterable[Callback] = (),
        checkpoint_path: str | os.PathLike[str] | None = None,
        eval_batch_size: int = 500,
        bn_data: Any = None,
        run_config: Mapping[str, Any] | None = None,
    ) -> None:
        if scheduler is not None and scheduler.optimizer is not optimizer:
            raise ValueError("the scheduler was built for a different optimiser")
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.callbacks = CallbackList(callbacks)
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.eval_batch_size = eval_batch_size
        self.bn_data = bn_data
        self.run_config = None if run_config is None else dict(run_config)
        self.history = History()
        self.epochs = 0
        self.stop_training = False
        self._progress = _Progress()
        self._train: Any = None
        self._validation: Validation = None
        self._interrupt: _DeferredInterrupt | None = None
        self._safe = True  # False while model/optimiser state is mid-update
        self._last_checkpoint: Path | None = None

    # --- the loop -----------------------------------------------------------
    def fit(
        self,
        train: Any,
        epochs: int,
        validation: Validation = None,
        resume_from: str | os.PathLike[str] | None = None,
    ) -> History:
        """Train until ``epochs`` epochs are complete (counting those of ``resume_from``).

        Args:
            train: a :class:`npcnn.data.BatchIterator` (any re-iterable of
                (x (B, C, H, W) float, y (B,) int) batches with ``len()``; exact
                resume needs its ``get_state``/``set_state``).
            epochs: the total number of epochs; when resuming from a checkpoint
                after epoch k, epochs k+1..``epochs`` are run.
            validation: ``(images, labels)`` arrays (uint8 images are scaled by
                1/255, as :func:`~npcnn.training.evaluate` does), a
                BatchIterator, or None. Evaluated after every epoch in inference mode.
            resume_from: a checkpoint written by a Trainer with the same model
                architecture, optimiser type and scheduler type; the model,
                optimiser, scheduler, History, data order and dropout RNGs are
                restored, so the result equals that of an uninterrupted run.

        Returns:
            The :class:`History` (also ``self.history``); each call without
            ``resume_from`` starts a new one.

        Raises:
            TrainingInterrupted: on Ctrl-C or SIGTERM, after writing a checkpoint
                of the last completed step to ``checkpoint_path`` (if set). The
                first signal lets the current step finish; a second one stops at
                once and writes nothing (the last epoch's checkpoint stays).
                A KeyboardInterrupt subclass: let it propagate or turn it into
                exit code 130.
            NonFiniteLossError: when a batch loss is NaN or infinite (that
                step is not applied; earlier checkpoints are left untouched).
            ValueError: bad arguments, or a checkpoint that does not fit.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
        if len(train) == 0:
            raise ValueError("the training data yields no batches")
        self._train, self._validation = train, validation
        self.epochs, self.stop_training = epochs, False
        self.history, self._last_checkpoint = History(), None
        self._progress = _Progress(
            data_state=_data_state(train), validation_data_state=_data_state(validation)
        )
        if resume_from is not None:
            self._resume(resume_from)
        self.callbacks.on_train_begin(
            self,
            {
                "epochs": epochs,
                "initial_epoch": self._progress.epoch,
                "steps_per_epoch": len(train),
                "examples_per_epoch": _examples_per_epoch(train),
            },
        )
        status = "failed"
        try:
            with _DeferredInterrupt() as self._interrupt:
                while self._progress.epoch < epochs and not self.stop_training:
                    self._run_epoch()
            status = "stopped" if self._progress.epoch < epochs else "completed"
        except KeyboardInterrupt:
            status = "interrupted"
            self.history.interrupted = True
            path = self._checkpoint_on_interrupt()
            p = self._progress
            signum = self._interrupt.requested if self._interrupt is not None else None
            raise TrainingInterrupted(
                path, self.history, p.epoch, p.step, signum or signal.SIGINT
            ) from None
        finally:
            self._interrupt = None
            self.callbacks.on_train_end(
                self, {"status": status, "epochs": epochs, "history": self.history}
            )
        return self.history

    def _run_epoch(self) -> None:
        p, train = self._progress, self._train
        epoch, steps = p.epoch + 1, len(train)
        if p.data_state is not None:
            train.set_state(p.data_state)  # a no-op unless resuming
        batches = iter(train)
        for _ in range(p.step):  # resuming mid-epoch: these were trained already
            next(batches)
        lr = self.optimizer.lr
        examples = _examples_per_epoch(train)
        self.callbacks.on_epoch_begin(
            self,
            {
                "epoch": epoch,
                "epochs": self.epochs,
                "steps": steps,
                "examples": examples,
                "initial_step": p.step,
                "initial_examples": p.totals["count"],
                "lr": lr,
            },
        )
        t = p.totals
        start, before = time.perf_counter(), t["seconds"]
        for x, y in batches:
            self._safe = False
            loss, correct = self._train_step(x, y, epoch, p.step + 1)
            n = len(y)
            p.step += 1
            p.global_step += 1
            t["loss_sum"] += n * loss
            t["correct"] += correct
            t["count"] += n
            t["train_seconds"] = t["seconds"] = before + time.perf_counter() - start
            record = {
                "epoch": epoch,
                "step": p.step,
                "global_step": p.global_step,
                "loss": loss,
                "accuracy": correct / n,
            }
            self.history.steps.append(record)
            self._safe = True
            self.callbacks.on_step_end(
                self,
                {
                    **record,
                    "epochs": self.epochs,
                    "steps": steps,
                    "size": n,
                    "mean_loss": t["loss_sum"] / t["count"],
                    "mean_accuracy": t["correct"] / t["count"],
                    "lr": lr,
                },
            )
            self._check_interrupt()
        if self.bn_data is not None:
            update_bn(self.model, self._bn_batches())
        val_loss, val_accuracy = self._validate()
        record = {
            "epoch": epoch,
            "loss": t["loss_sum"] / t["count"],
            "accuracy": t["correct"] / t["count"],
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "lr": lr,
            "seconds": before + time.perf_counter() - start,
            "images_per_second": t["count"] / max(t["train_seconds"], 1e-9),
        }
        self._safe = False
        if self.scheduler is not None:
            self.scheduler.step()
        self.history.epochs.append(record)
        self._progress = _Progress(
            epoch=epoch,
            global_step=p.global_step,
            data_state=_data_state(train),
            validation_data_state=_data_state(self._validation),
        )
        self._safe = True
        if self.checkpoint_path is not None:
            self._last_checkpoint = self.save_checkpoint(self.checkpoint_path)
        self.callbacks.on_epoch_end(self, {**record, "epochs": self.epochs})
        self._check_interrupt()

    def _train_step(self, x: np.ndarray, y: np.ndarray, epoch: int, step: int) -> tuple[float, int]:
        """One optimiser step on a batch; returns (batch loss, correct predictions)."""
        self.optimizer.zero_grad()
        logits = self.model.forward(x, training=True)
        loss = float(self.loss_fn.forward(logits, y))
        if not math.isfinite(loss):
            raise NonFiniteLossError(epoch, step, loss, self.optimizer.lr, self._last_checkpoint)
        grad = self.loss_fn.backward()
        if isinstance(self.model, Sequential):
            # Nothing needs dL/dx of the images: skip the first layer's input gradient.
            self.model.backward(grad, need_input_grad=False)
        else:
            self.model.backward(grad)
        self.optimizer.step()
        return loss, count_correct(logits, y)

    def _bn_batches(self) -> Iterable[np.ndarray]:
        data = self.bn_data
        if isinstance(data, np.ndarray):
            size = self.eval_batch_size
            return (as_model_input(data[i : i + size]) for i in range(0, len(data), size))
        return data

    def _validate(self) -> tuple[float | None, float | None]:
        data = self._validation
        if data is None:
            return None, None
        examples = len(data[0]) if _is_array_pair(data) else getattr(data, "num_examples", None)
        epoch = self._progress.epoch + 1
        self.callbacks.on_test_begin(self, {"epoch": epoch, "examples": examples})

        def on_batch(n: int) -> None:
            self.callbacks.on_test_batch_end(self, {"size": n})

        if _is_array_pair(data):
            images, labels = data
            result = evaluate(
                self.model, images, labels, self.loss_fn, self.eval_batch_size, on_batch
            )
            loss, accuracy = result.loss, result.accuracy
        else:
            if self._progress.validation_data_state is not None and hasattr(data, "set_state"):
                data.set_state(self._progress.validation_data_state)  # a no-op unless resuming
            loss, accuracy = evaluate_batches(self.model, data, self.loss_fn, on_batch)
        self.callbacks.on_test_end(self, {"loss": loss, "accuracy": accuracy})
        return loss, accuracy

    def _check_interrupt(self) -> None:
        if self._interrupt is not None and self._interrupt.requested is not None:
            raise KeyboardInterrupt

    # --- checkpoints ----------------------------------------------------------
    def save_checkpoint(self, path: str | os.PathLike[str]) -> Path:
        """Write a resumable checkpoint of the current position to ``path`` (atomically).

        Valid between steps (from callbacks, or after :meth:`fit`); see
        :mod:`npcnn.training.checkpoint` for the contents.
        """
        p = self._progress
        train = self._train
        meta = {
            "epoch": p.epoch,
            "step": p.step,
            "global_step": p.global_step,
            "epochs": self.epochs,
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "history": self.history.to_dict(),
            "data_state": p.data_state,
            "validation_data_state": p.validation_data_state,
            "generators": generator_states(self.model),
            "run": self.run_config,
            "totals": dict(p.totals),
            "data": {
                "steps_per_epoch": None if train is None else len(train),
                "examples_per_epoch": None if train is None else _examples_per_epoch(train),
                "batch_size": getattr(train, "batch_size", None),
            },
        }
        return save_checkpoint(path, self.model, self.optimizer, meta)

    def _checkpoint_on_interrupt(self) -> Path | None:
        if self.checkpoint_path is None:
            return None
        # Mid-step the weights, statistics or optimiser state may be half
        # updated: keep the last checkpoint rather than write that.
        if self._safe:
            self._last_checkpoint = self.save_checkpoint(self.checkpoint_path)
        return self._last_checkpoint

    def _resume(self, path: str | os.PathLike[str]) -> None:
        ckpt = load_checkpoint(path)
        source = str(path)
        if json.dumps(ckpt["architecture"]) != json.dumps(layer_spec(self.model)):
            raise ValueError(f"{source} was written for a different model architecture")
        if ckpt["optimizer"] != type(self.optimizer).__name__:
            raise ValueError(
                f"{source} was written with {ckpt['optimizer']}, "
                f"not {type(self.optimizer).__name__}"
            )
        saved_schedule = ckpt["scheduler_state"]
        if (saved_schedule is None) != (self.scheduler is None):
            had = saved_schedule["type"] if saved_schedule else "no scheduler"
            now = type(self.scheduler).__name__ if self.scheduler else "none"
            raise ValueError(f"{source} was written with {had}, but the trainer has {now}")
        steps_then = ckpt["data"].get("steps_per_epoch")
        if ckpt["step"] and steps_then != len(self._train):
            raise ValueError(
                f"{source} stopped mid-epoch with {steps_then} steps per epoch, but the "
                f"training data now gives {len(self._train)}: resume with the same data "
                "and batch size"
            )
        self.model.load_state_dict(ckpt["model_state"])
        self.optimizer.load_state_dict(ckpt["optimizer_state"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved_schedule)
        set_generator_states(self.model, ckpt["generator_states"])
        self.history = ckpt["history"]
        self.history.interrupted = False
        self._progress = _Progress(
            epoch=ckpt["epoch"],
            step=ckpt["step"],
            global_step=ckpt["global_step"],
            data_state=ckpt["data_state"],
            validation_data_state=ckpt["validation_data_state"],
            totals={**_EMPTY_TOTALS, **ckpt["totals"]},
        )
        if self._progress.data_state is not None and not hasattr(self._train, "set_state"):
            raise ValueError("resuming needs training data with set_state(), e.g. a BatchIterator")
        self._last_checkpoint = Path(path)

    def __repr__(self) -> str:
        state = asdict(self._progress)
        return (
            f"Trainer(optimizer={self.optimizer!r}, scheduler={self.scheduler!r}, "
            f"epoch={state['epoch']}, step={state['step']})"
        )
