"""The training loop: mini-batch steps and the events that extensions act on.

One epoch (e, 1-based) is

    for each batch (x, y):  zero_grad; logits = model(x, training=True);
                            L = loss(logits, y)     -> on_before_backward (non-finite check)
                            backward; optimizer.step()  -> on_step_end
    on_train_epoch_end:     extensions finish the epoch, in order: batch-norm
                            statistics, validation, the scheduler's step
    the History records the epoch; the run is at the epoch's boundary
    on_epoch_end:           the checkpoint (snapshot), then the reports

The loop does the steps and keeps the position (epoch, step, data order,
partial sums); everything else is a :class:`~npcnn.training.callbacks.Callback`
(Chainer's extensions, Keras' callbacks), whose ``state_dict()`` the
checkpoints save. Ctrl-C and SIGTERM are deferred to the end of the current
step, so the checkpoint it writes is a state the uninterrupted run also
passed through, and resuming from it ends with the same weights bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from npcnn.distributed import DataParallel
from npcnn.nn import Layer, generator_states, set_generator_states
from npcnn.serialization import layer_spec
from npcnn.text import clip
from npcnn.training.callbacks import (
    Callback,
    CallbackList,
    FailOnNonFiniteLoss,
    LRSchedule,
    RecomputeBatchNorm,
    Snapshot,
    Validation,
)
from npcnn.training.callbacks.validation import ValidationData
from npcnn.training.checkpoint import (
    load_checkpoint,
    save_checkpoint,
)
from npcnn.training.errors import TrainingInterrupted
from npcnn.training.evaluate import LossFn, check_tta, count_correct
from npcnn.training.history import EPOCH_KEYS, History
from npcnn.training.interrupts import DeferredInterrupt
from npcnn.training.schedules import LRScheduler


@dataclass
class _Position:
    """Where the run stands after the last completed step: the resumable position."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed steps of epoch `epoch + 1`
    global_step: int = 0
    data_state: dict[str, Any] | None = None  # train RNG state at the start of epoch `epoch + 1`
    lr: float | None = None  # the learning rate epoch `epoch + 1` started with, once started
    totals: dict[str, float] = field(default_factory=lambda: dict(_EMPTY_TOTALS))


# Partial sums of the unfinished epoch: sum(n_b * loss_b), correct predictions,
# examples, and seconds spent so far (in total and in training steps).
_EMPTY_TOTALS = {"loss_sum": 0.0, "correct": 0, "count": 0, "seconds": 0.0, "train_seconds": 0.0}


def _data_state(data: Any) -> dict[str, Any] | None:
    return data.get_state() if hasattr(data, "get_state") else None


def _examples_per_epoch(train: Any) -> int | None:
    n, size = getattr(train, "num_examples", None), getattr(train, "batch_size", None)
    if n is None or size is None:
        return None
    return len(train) * size if getattr(train, "drop_last", False) else n


class Trainer:
    """Train ``model`` with ``loss_fn`` and ``optimizer``; extend and report through ``callbacks``.

    Args:
        model: a :class:`npcnn.nn.Layer` mapping (B, C, H, W) floats to (B, K) logits.
        loss_fn: ``forward(logits, y) -> float`` (the batch mean) and
            ``backward() -> dlogits``, e.g. :class:`npcnn.nn.CrossEntropyLoss`.
        optimizer: any :mod:`npcnn.optim` optimiser over ``model.parameters()``.
        scheduler: an :class:`~npcnn.training.schedules.LRScheduler`, stepped
            after every epoch (None: constant learning rate); installs
            :class:`~npcnn.training.callbacks.LRSchedule`.
        callbacks: :class:`~npcnn.training.callbacks.Callback` objects,
            reports and extensions of your own; they act after the built-in
            extensions, in the order given.
        checkpoint_path: if given, a resumable checkpoint is written there
            (atomically) after every epoch and when Ctrl-C stops training;
            installs :class:`~npcnn.training.callbacks.Snapshot`.
        eval_batch_size: batch size for validation and ``bn_data`` arrays.
        tta: the validation's test-time augmentation: ``"none"``, or
            ``"flip"`` to average each image's logits with its mirror
            image's (:mod:`npcnn.training.evaluate`).
        bn_data: images (N, H, W) / (N, C, H, W), or an iterable of batches: if
            given, every batch norm's running statistics are recomputed on it
            (:func:`npcnn.nn.update_bn`) after each epoch's training, before
            validation. For short or full-batch runs, where the running
            average lags far behind weights that change fast; installs
            :class:`~npcnn.training.callbacks.RecomputeBatchNorm`.
        run_config: JSON-ready settings of the run (data set, seed, recipe...),
            stored in every checkpoint under ``"run"`` so that the checkpoint
            alone says how to continue it (:func:`load_checkpoint` returns it).
        data_parallel: a :class:`npcnn.distributed.DataParallel`: train on
            every rank of its world, each on its share of every global batch
            (``train``'s batch size is the global one), with the gradients
            summed over the ranks before each step; the validation is split
            over the ranks; only rank 0 writes checkpoints. Give the
            reporting callbacks to rank 0 alone.

    Every fit also installs :class:`~npcnn.training.callbacks.FailOnNonFiniteLoss`
    and, given validation data, :class:`~npcnn.training.callbacks.Validation`.

    Attributes during and after :meth:`fit`: ``history``, ``epochs`` (the
    target), ``stop_training`` (a callback sets it to stop after the epoch),
    ``extensions`` (a :class:`~npcnn.training.callbacks.CallbackList`: the
    built-in extensions, then ``callbacks``), ``last_checkpoint`` (the newest
    checkpoint the snapshot wrote, or ``resume_from``; None before either),
    ``between_steps`` (False while a step or an epoch's end is applied).
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
        tta: str = "none",
        bn_data: Any = None,
        run_config: Mapping[str, Any] | None = None,
        data_parallel: DataParallel | None = None,
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
        self.tta = check_tta(tta)
        self.bn_data = bn_data
        self.run_config = None if run_config is None else dict(run_config)
        self.data_parallel = data_parallel
        # Data-parallel: the signal a rank received, which every rank stops for at once.
        self._stop_agreed: int | None = None
        self.history = History()
        self.epochs = 0
        self.stop_training = False
        self.extensions = CallbackList(self.callbacks.callbacks)
        self.last_checkpoint: Path | None = None
        self._position = _Position()
        self._train: Any = None
        self._interrupt = DeferredInterrupt()
        self._between_steps = True
        self._clock = (0.0, 0.0)  # (perf_counter at the epoch's start, seconds done before)

    @property
    def between_steps(self) -> bool:
        """True when the model, optimiser and position are those after a completed step."""
        return self._between_steps

    # --- the loop -----------------------------------------------------------
    def fit(
        self,
        train: Any,
        epochs: int,
        validation: ValidationData | None = None,
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
                architecture, optimiser type, scheduler type and extensions with
                state; the model, optimiser, extensions' states (scheduler,
                validation order, ...), History, data order and dropout RNGs are
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
        self._begin(train, epochs, validation, resume_from)
        status = "failed"
        try:
            status = self._run_epochs()
        finally:
            self.extensions.on_train_end(
                self, {"status": status, "epochs": epochs, "history": self.history}
            )
        if status == "interrupted":
            raise self._interrupted()
        return self.history

    def _begin(
        self,
        train: Any,
        epochs: int,
        validation: ValidationData | None,
        resume_from: str | os.PathLike[str] | None,
    ) -> None:
        """Check the arguments, install this fit's extensions, resume, fire on_train_begin."""
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
        if len(train) == 0:
            raise ValueError("the training data yields no batches")
        if self.data_parallel is not None:
            train = self.data_parallel.shard(train, self.model)
        self._train, self.epochs, self.stop_training = train, epochs, False
        self.history, self.last_checkpoint, self._stop_agreed = History(), None, None
        self.extensions = CallbackList([*self._built_in(validation), *self.callbacks.callbacks])
        self.extensions.state_dicts()  # two callbacks with one state_key: ValueError now
        self._position = _Position(data_state=_data_state(train))
        self._between_steps = True
        if resume_from is not None:
            self._resume(resume_from)
        if self.data_parallel is not None:
            p, settings = self._position, {"epochs": epochs, "optimizer": repr(self.optimizer)}
            position = {"epoch": p.epoch, "step": p.step}
            self.data_parallel.start(self.model, train, position, settings)
        self.extensions.on_train_begin(
            self,
            {
                "epochs": epochs,
                "initial_epoch": self._position.epoch,
                "steps_per_epoch": len(train),
                "examples_per_epoch": _examples_per_epoch(train),
            },
        )

    def _built_in(self, validation: ValidationData | None) -> list[Callback]:
        """The extensions the constructor's arguments and ``validation`` ask for, in order."""
        built: list[Callback] = [FailOnNonFiniteLoss()]
        if self.bn_data is not None:
            built.append(RecomputeBatchNorm(self.bn_data, self.eval_batch_size))
        if validation is not None:
            built.append(Validation(validation, self.eval_batch_size, self.tta))
        if self.scheduler is not None:
            built.append(LRSchedule(self.scheduler))
        if self.checkpoint_path is not None:
            built.append(Snapshot(self.checkpoint_path))
        return built

    def _run_epochs(self) -> str:
        """Epochs until the target, a callback's stop or Ctrl-C; returns the run's status."""
        try:
            with DeferredInterrupt() as self._interrupt:
                while self._position.epoch < self.epochs and not self.stop_training:
                    self._run_epoch()
        except KeyboardInterrupt:
            self.history.interrupted = True
            return "interrupted"
        return "stopped" if self._position.epoch < self.epochs else "completed"

    def _run_epoch(self) -> None:
        """A step on each of the epoch's remaining batches, then the epoch's end.

        A deferred Ctrl-C stops the run after the step (or the epoch's end) it arrived in.
        """
        for x, y in self._begin_epoch():
            self._end_step(*self._train_step(x, y))
            self._check_interrupt()
        self._end_epoch()
        if self.data_parallel is not None:
            self._stop_agreed = self.data_parallel.agreed_stop(self._interrupt.requested)
        self._check_interrupt()

    def _check_interrupt(self) -> None:
        """Raise KeyboardInterrupt if Ctrl-C or SIGTERM asked to stop. Data-parallel: if a
        rank asked by the step's totals (every rank stops at the same step)."""
        if self.data_parallel is None:
            self._interrupt.check()
        elif self._stop_agreed is not None:
            if self._interrupt.requested is None:  # (another rank received it)
                self._interrupt.requested = self._stop_agreed
            raise KeyboardInterrupt

    def _begin_epoch(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The epoch's batches not yet trained on (all of them unless resuming mid-epoch),
        after on_epoch_begin."""
        p, train = self._position, self._train
        if p.data_state is not None:
            train.set_state(p.data_state)  # a no-op unless resuming
        batches = iter(train)
        for _ in range(p.step):  # resuming mid-epoch: these were trained already
            next(batches)
        if p.lr is None:  # else resuming mid-epoch: the rate may have changed since
            p.lr = self.optimizer.lr
        self.extensions.on_epoch_begin(
            self,
            {
                "epoch": p.epoch + 1,
                "epochs": self.epochs,
                "steps": len(train),
                "examples": _examples_per_epoch(train),
                "initial_step": p.step,
                "initial_examples": p.totals["count"],
                "lr": p.lr,
            },
        )
        self._clock = (time.perf_counter(), p.totals["seconds"])
        return batches

    def _train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[int, float, int]:
        """One optimiser step on a batch; returns (examples, batch loss, correct predictions),
        over the global batch when data-parallel."""
        p, dp = self._position, self.data_parallel
        self._between_steps = False
        self.optimizer.zero_grad()
        if dp is not None:
            dp.world.set_activity(f"epoch {p.epoch + 1}, step {p.step + 1}")
        with dp.step_scope() if dp is not None else contextlib.nullcontext():
            logits = self.model.forward(x, training=True)
            n, loss = len(y), float(self.loss_fn.forward(logits, y))
            correct = count_correct(logits, y)
            if dp is not None:
                requested = self._interrupt.requested
                n, loss, correct, self._stop_agreed = dp.totals(n, loss, correct, requested)
            self.extensions.on_before_backward(
                self,
                {"epoch": p.epoch + 1, "step": p.step + 1, "loss": loss, "lr": self.optimizer.lr},
            )
            dlogits = self.loss_fn.backward()
            if n != len(y):  # this rank's share of the global batch's mean loss
                dlogits = dlogits * dlogits.dtype.type(len(y) / n)
            # Nothing needs dL/dx of the images: the first layer skips its input gradient.
            self.model.backward(dlogits, need_input_grad=False)
        if dp is not None:
            dp.reduce_gradients()
        self.optimizer.step()
        return n, loss, correct

    def _end_step(self, n: int, loss: float, correct: int) -> None:
        """Count the step of ``n`` examples, record it in the History, fire on_step_end."""
        p, t = self._position, self._position.totals
        p.step += 1
        p.global_step += 1
        t["loss_sum"] += n * loss
        t["correct"] += correct
        t["count"] += n
        t["train_seconds"] = t["seconds"] = self._elapsed()
        record = {
            "epoch": p.epoch + 1,
            "step": p.step,
            "global_step": p.global_step,
            "loss": loss,
            "accuracy": correct / n,
        }
        self.history.steps.append(record)
        if self.data_parallel is not None:
            self.data_parallel.check_weights(p.global_step)
        self._between_steps = True
        self.extensions.on_step_end(
            self,
            {
                **record,
                "epochs": self.epochs,
                "steps": len(self._train),
                "size": n,
                "mean_loss": t["loss_sum"] / t["count"],
                "mean_accuracy": t["correct"] / t["count"],
                "lr": p.lr,
            },
        )

    def _end_epoch(self) -> None:
        """Extensions finish the epoch (on_train_epoch_end); the History records it and the
        run moves to the epoch's boundary; then on_epoch_end (snapshot first, then reports)."""
        p, t = self._position, self._position.totals
        logs: dict[str, Any] = {
            "epoch": p.epoch + 1,
            "epochs": self.epochs,
            "loss": t["loss_sum"] / t["count"],
            "accuracy": t["correct"] / t["count"],
            "val_loss": None,
            "val_accuracy": None,
            "lr": p.lr,
        }
        # Until the boundary, extensions have changed state that the position
        # (still mid-epoch) does not account for: no checkpoint may be written.
        self._between_steps = False
        if self.data_parallel is not None:
            self.data_parallel.end_epoch(self.model)
        self.extensions.on_train_epoch_end(self, logs)
        record = {key: logs.get(key) for key in EPOCH_KEYS}
        record["seconds"] = self._elapsed()
        record["images_per_second"] = t["count"] / max(t["train_seconds"], 1e-9)
        self.history.epochs.append(record)
        self._position = _Position(
            epoch=p.epoch + 1, global_step=p.global_step, data_state=_data_state(self._train)
        )
        self._between_steps = True
        self.extensions.on_epoch_end(self, {**logs, **record})

    def _elapsed(self) -> float:
        """Seconds spent on the current epoch, including those before a resume."""
        started, before = self._clock
        return before + time.perf_counter() - started

    def _interrupted(self) -> TrainingInterrupted:
        """The exception that reports a stop by Ctrl-C or SIGTERM."""
        p = self._position
        snapshots = any(isinstance(cb, Snapshot) for cb in self.extensions.callbacks)
        return TrainingInterrupted(
            self.last_checkpoint if snapshots else None,
            self.history,
            p.epoch,
            p.step,
            self._interrupt.requested or signal.SIGINT,
        )

    # --- checkpoints ----------------------------------------------------------
    def save_checkpoint(self, path: str | os.PathLike[str]) -> Path:
        """Write a resumable checkpoint of the current position to ``path`` (atomically).

        It holds the model, the optimiser, the position and History, and each
        extension's ``state_dict()`` under its ``state_key`` (see
        :mod:`npcnn.training.checkpoint`). Valid between steps: from
        ``on_step_end``, ``on_epoch_end``, ``on_train_end`` or outside
        :meth:`fit`; RuntimeError while a step or an epoch's end is applied.
        Data-parallel, rank 0 writes it and the other ranks only return ``path``.
        """
        if not self._between_steps:
            raise RuntimeError(
                "a checkpoint can only be written between steps (from on_step_end, "
                "on_epoch_end or outside fit), not while a step or an epoch's end is applied"
            )
        p, train = self._position, self._train
        meta = {
            "epoch": p.epoch,
            "step": p.step,
            "global_step": p.global_step,
            "epochs": self.epochs,
            "extensions": self.extensions.state_dicts(),
            "history": self.history.to_dict(),
            "data_state": p.data_state,
            "epoch_lr": p.lr,
            "generators": generator_states(self.model),
            "run": self.run_config,
            "totals": dict(p.totals),
            "data": {
                "steps_per_epoch": None if train is None else len(train),
                "examples_per_epoch": None if train is None else _examples_per_epoch(train),
                "batch_size": getattr(train, "batch_size", None),
            },
        }
        if self.data_parallel is not None and not self.data_parallel.world.is_root:
            return Path(path)  # (rank 0 writes it)
        return save_checkpoint(path, self.model, self.optimizer, meta)

    def _resume(self, path: str | os.PathLike[str]) -> None:
        """Continue the run that wrote ``path``; ValueError, before anything changes, if
        it does not fit this trainer and data."""
        ckpt = load_checkpoint(path)
        self._check_resumable(ckpt, str(path))
        try:
            self._restore(ckpt, str(path))
        except (KeyError, TypeError, ValueError, IndexError, OverflowError) as err:
            # What load_checkpoint cannot see: states that do not fit their objects.
            cause = f"{type(err).__name__}: {clip(err, 100)}"
            raise ValueError(f"{path}: damaged checkpoint ({cause})") from None
        self.last_checkpoint = Path(path)

    def _restore(self, ckpt: Mapping[str, Any], source: str) -> None:
        """Load the checkpoint's states into the model, optimiser, extensions and data."""
        # The optimiser's saved rate, not one a scheduler recomputes, is the rate
        # the run had: restore it last.
        self.extensions.load_state_dicts(ckpt["extension_states"], source)
        self.model.load_state_dict(ckpt["model_state"])
        self.optimizer.load_state_dict(ckpt["optimizer_state"])
        if self._schedule_replanned(ckpt["extension_states"].get("scheduler")):
            self.optimizer.lr = self.scheduler.get_last_lr()  # the new schedule's rate
        set_generator_states(self.model, ckpt["generator_states"])
        if ckpt["data_state"] is not None:
            self._train.set_state(ckpt["data_state"])  # a state that does not fit fails here
        self.history = ckpt["history"]
        self.history.interrupted = False
        self._position = _Position(
            epoch=ckpt["epoch"],
            step=ckpt["step"],
            global_step=ckpt["global_step"],
            data_state=ckpt["data_state"],
            lr=ckpt["epoch_lr"],
            totals={**_EMPTY_TOTALS, **ckpt["totals"]},
        )

    def _schedule_replanned(self, saved: Mapping[str, Any] | None) -> bool:
        """Whether the scheduler's settings differ from those of the checkpoint's run."""
        if self.scheduler is None or saved is None:
            return False
        settings = self.scheduler.settings()
        return any(saved.get(name, value) != value for name, value in settings.items())

    def _check_resumable(self, ckpt: Mapping[str, Any], source: str) -> None:
        if json.dumps(ckpt["architecture"]) != json.dumps(layer_spec(self.model)):
            raise ValueError(f"{source} was written for a different model architecture")
        if ckpt["optimizer"] != type(self.optimizer).__name__:
            raise ValueError(
                f"{source} was written with {ckpt['optimizer']}, "
                f"not {type(self.optimizer).__name__}"
            )
        self.extensions.check_state_dicts(ckpt["extension_states"], source)
        steps_then = ckpt["data"].get("steps_per_epoch")
        if not 0 <= ckpt["step"] <= len(self._train) or ckpt["epoch"] < 0:
            raise ValueError(
                f"{source}: damaged checkpoint (epoch {ckpt['epoch']}, step {ckpt['step']} "
                f"of {len(self._train)})"
            )
        if ckpt["step"] and steps_then != len(self._train):
            raise ValueError(
                f"{source} stopped mid-epoch with {steps_then} steps per epoch, but the "
                f"training data now gives {len(self._train)}: resume with the same data "
                "and batch size"
            )
        if ckpt["data_state"] is not None and not hasattr(self._train, "set_state"):
            raise ValueError("resuming needs training data with set_state(), e.g. a BatchIterator")

    def __repr__(self) -> str:
        state = asdict(self._position)
        return (
            f"Trainer(optimizer={self.optimizer!r}, scheduler={self.scheduler!r}, "
            f"epoch={state['epoch']}, step={state['step']})"
        )
