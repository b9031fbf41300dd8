"""The loop's extensions: their order, their state in checkpoints, exact resume with them."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

from npcnn.data import BatchIterator
from npcnn.serialization import load_arrays, save_arrays
from npcnn.training import TrainingInterrupted, callbacks, load_checkpoint, schedules
from test_training_helpers import (
    assert_same_state,
    batches,
    make_trainer,
    toy_data,
    validation,
    without_times,
)


@pytest.fixture(autouse=True)
def default_sigint_handler():
    """Python's own Ctrl-C handler, as in test_training_resume."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


class InterruptAt(callbacks.Callback):
    """Raise KeyboardInterrupt after global step `step`, as Ctrl-C at that moment would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, logs) -> None:
        if logs["global_step"] == self.step:
            raise KeyboardInterrupt


class LRJitter(callbacks.Callback):
    """A user's extension with state: after every step the rate becomes the epoch's rate
    times a factor in [0.5, 1.5) drawn from its own generator."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state) -> None:
        self.rng.bit_generator.state = state["rng"]

    def on_step_end(self, trainer, logs) -> None:
        trainer.optimizer.lr = logs["lr"] * (0.5 + self.rng.random())


def validation_batches(seed: int = 4) -> BatchIterator:
    images, labels = toy_data(60, seed=200)
    return BatchIterator(images, labels, 25, rng=seed)


def test_built_in_extensions_come_first_in_acting_order(tmp_path) -> None:
    images, _ = validation()
    report = callbacks.EpochPrinter(print_fn=lambda line: None)
    trainer = make_trainer(callbacks=[report], checkpoint_path=tmp_path / "c.npz")
    trainer.bn_data = images
    trainer.fit(batches(), 1, validation=validation())
    kinds = [type(cb) for cb in trainer.extensions.callbacks]
    assert kinds == [
        callbacks.FailOnNonFiniteLoss,
        callbacks.RecomputeBatchNorm,
        callbacks.Validation,
        callbacks.LRSchedule,
        callbacks.Snapshot,
        callbacks.EpochPrinter,
    ]


def test_the_epoch_ends_with_extensions_then_the_snapshot_then_reports(tmp_path) -> None:
    ckpt = tmp_path / "c.npz"
    seen: list[tuple] = []

    class Watch(callbacks.Callback):
        def on_before_backward(self, trainer, logs) -> None:
            seen.append(("before_backward", logs["epoch"], logs["step"], np.isfinite(logs["loss"])))

        def on_train_epoch_end(self, trainer, logs) -> None:
            # Validation and the scheduler's step acted before a callback of the user.
            seen.append(
                ("train_epoch_end", logs["val_loss"] is not None, trainer.scheduler.last_epoch)
            )
            with pytest.raises(RuntimeError, match="between steps"):
                trainer.save_checkpoint(tmp_path / "too-early.npz")

        def on_epoch_end(self, trainer, logs) -> None:
            seen.append(("epoch_end", load_checkpoint(ckpt)["epoch"], len(trainer.history.epochs)))

    make_trainer(callbacks=[Watch()], checkpoint_path=ckpt).fit(
        batches(), 2, validation=validation()
    )
    assert seen[0] == ("before_backward", 1, 1, True)
    ends = [event for event in seen if event[0] != "before_backward"]
    assert ends == [
        ("train_epoch_end", True, 1),
        ("epoch_end", 1, 1),
        ("train_epoch_end", True, 2),
        ("epoch_end", 2, 2),
    ]
    assert not (tmp_path / "too-early.npz").exists()


def test_extension_states_round_trip_through_json() -> None:
    trainer = make_trainer()
    best = callbacks.ModelCheckpoint("best.npz", monitor="val_loss")
    best.best = 0.25
    schedule = callbacks.LRSchedule(trainer.scheduler)
    for _ in range(3):
        schedule.on_train_epoch_end(trainer, {})
    check = callbacks.Validation(validation_batches())
    check.on_train_epoch_end(trainer, {"epoch": 1})
    states = json.loads(json.dumps(callbacks.CallbackList([best, schedule, check]).state_dicts()))
    assert set(states) == {"ModelCheckpoint:best.npz", "scheduler", "validation"}

    other = make_trainer()
    best2 = callbacks.ModelCheckpoint("best.npz", monitor="val_loss")
    schedule2 = callbacks.LRSchedule(other.scheduler)
    check2 = callbacks.Validation(validation_batches(seed=99))
    callbacks.CallbackList([best2, schedule2, check2]).load_state_dicts(states)
    assert best2.best == 0.25
    assert other.scheduler.last_epoch == 3 and other.optimizer.lr == trainer.optimizer.lr
    logs_a, logs_b = {"epoch": 2}, {"epoch": 2}
    check.on_train_epoch_end(trainer, logs_a)
    check2.on_train_epoch_end(trainer, logs_b)  # the same model: the same batches give the same
    assert logs_a == logs_b
    assert check.data.get_state() == check2.data.get_state()


def test_stateless_callbacks_save_nothing(tmp_path) -> None:
    stateless = [
        callbacks.FailOnNonFiniteLoss(),
        callbacks.RecomputeBatchNorm(validation()[0]),
        callbacks.Validation(validation()),
        callbacks.Snapshot("c.npz"),
        callbacks.ModelCheckpoint("e{epoch}.npz"),
        callbacks.CSVLogger("log.csv"),
    ]
    assert callbacks.CallbackList(stateless).state_dicts() == {}
    twins = callbacks.CallbackList([LRJitter(0), LRJitter(1)])
    with pytest.raises(ValueError, match="distinct state_key"):
        twins.state_dicts()
    trainer = make_trainer(checkpoint_path=tmp_path / "c.npz", callbacks=twins.callbacks)
    with pytest.raises(ValueError, match="distinct state_key"):
        trainer.fit(batches(), 1)
    assert not (tmp_path / "c.npz").exists()


def test_a_stateful_user_extension_resumes_exactly_mid_epoch(tmp_path) -> None:
    straight = make_trainer(callbacks=[LRJitter(0)])
    full = straight.fit(batches(), 3, validation=validation_batches())

    ckpt = tmp_path / "ckpt.npz"
    first = make_trainer(checkpoint_path=ckpt, callbacks=[LRJitter(0), InterruptAt(8)])
    with pytest.raises(TrainingInterrupted):
        first.fit(batches(), 3, validation=validation_batches())
    saved = load_checkpoint(ckpt)
    assert (saved["epoch"], saved["step"]) == (1, 3)
    assert set(saved["extension_states"]) == {"scheduler", "validation", "LRJitter"}

    # Other seeds everywhere: the jitter's generator, the optimiser's rate (which
    # the jitter had changed), the epoch's rate and the validation order must
    # all come from the checkpoint.
    resumed = make_trainer(seed=3, callbacks=[LRJitter(123)])
    history = resumed.fit(
        batches(seed=5), 3, validation=validation_batches(seed=6), resume_from=ckpt
    )
    assert_same_state(straight, resumed)
    assert resumed.optimizer.lr == straight.optimizer.lr
    assert without_times(history.epochs) == without_times(full.epochs)
    assert history.steps == full.steps


def test_model_checkpoint_keeps_its_best_across_a_resume(tmp_path) -> None:
    # mode="max" on the falling validation loss: the best stays epoch 1's, so a
    # resumed run that forgot it would take epoch 3's.
    def best_of(directory):
        return callbacks.ModelCheckpoint(directory / "best.npz", monitor="val_loss", mode="max")

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight_best = best_of(tmp_path / "a")
    make_trainer(callbacks=[straight_best]).fit(batches(), 3, validation=validation())

    ckpt = tmp_path / "ckpt.npz"
    make_trainer(checkpoint_path=ckpt, callbacks=[best_of(tmp_path / "b")]).fit(
        batches(), 2, validation=validation()
    )
    resumed_best = best_of(tmp_path / "b")
    make_trainer(callbacks=[resumed_best]).fit(
        batches(), 3, validation=validation(), resume_from=ckpt
    )
    assert resumed_best.best == straight_best.best
    assert load_checkpoint(tmp_path / "b" / "best.npz")["epoch"] == 1
    assert resumed_best.last_path is None  # nothing better after the resume


def test_resume_needs_the_extensions_with_state_it_was_written_with(tmp_path) -> None:
    ckpt = tmp_path / "ckpt.npz"
    make_trainer(checkpoint_path=ckpt, callbacks=[LRJitter(0)]).fit(batches(), 1)
    with pytest.raises(ValueError, match="written with LRJitter state, which this trainer lacks"):
        make_trainer().fit(batches(), 2, resume_from=ckpt)
    plain = tmp_path / "plain.npz"
    make_trainer(checkpoint_path=plain).fit(batches(), 1)
    trainer = make_trainer(callbacks=[LRJitter(0)])
    before = trainer.model.state_dict()
    with pytest.raises(ValueError, match="written without LRJitter state, which this trainer has"):
        trainer.fit(batches(), 2, resume_from=plain)
    for key, value in trainer.model.state_dict().items():  # refused before loading anything
        assert np.array_equal(value, before[key]), key
    without = make_trainer()
    without.scheduler = None
    with pytest.raises(ValueError, match="scheduler StepLR"):
        without.fit(batches(), 2, resume_from=plain)


def _as_format_1(path) -> None:
    """Rewrite a checkpoint's record as format 1 wrote it: the scheduler and validation
    states at the top level, no per-extension states, no epoch rate."""
    arrays = load_arrays(path)
    record = json.loads(str(arrays["__checkpoint__"]))
    states = record.pop("extensions")
    record.pop("epoch_lr")
    record["version"] = 1
    record["scheduler"] = states.pop("scheduler", None)
    record["validation_data_state"] = states.pop("validation", {}).get("data_state")
    assert not states
    arrays["__checkpoint__"] = np.array(json.dumps(record))
    save_arrays(path, arrays)


def test_a_format_1_checkpoint_still_resumes_exactly(tmp_path) -> None:
    straight = make_trainer(adam=True)
    full = straight.fit(batches(), 3, validation=validation_batches())

    ckpt = tmp_path / "ckpt.npz"
    with pytest.raises(TrainingInterrupted):
        make_trainer(adam=True, checkpoint_path=ckpt, callbacks=[InterruptAt(7)]).fit(
            batches(), 3, validation=validation_batches()
        )
    _as_format_1(ckpt)
    loaded = load_checkpoint(ckpt)
    assert loaded["scheduler_state"]["type"] == "CosineAnnealingLR"
    assert loaded["validation_data_state"] is not None

    resumed = make_trainer(seed=3, adam=True)
    history = resumed.fit(
        batches(seed=5), 3, validation=validation_batches(seed=6), resume_from=ckpt
    )
    assert_same_state(straight, resumed)
    assert without_times(history.epochs) == without_times(full.epochs)


def test_a_scheduler_given_as_an_extension_acts_like_the_argument(tmp_path) -> None:
    by_argument = make_trainer()
    by_argument.fit(batches(), 3)
    by_extension = make_trainer()
    sched = by_extension.scheduler
    by_extension.scheduler = None
    by_extension.callbacks = callbacks.CallbackList([callbacks.LRSchedule(sched)])
    by_extension.fit(batches(), 3)
    assert_same_state(by_argument, by_extension)
    assert isinstance(sched, schedules.StepLR) and sched.last_epoch == 3
