"""Checkpoints and resume: exact continuation, Ctrl-C, non-finite losses, determinism."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

import npcnn
from npcnn import nn, optim
from npcnn.serialization import model_to_arrays, save_arrays
from npcnn.training import (
    NonFiniteLossError,
    Trainer,
    TrainingInterrupted,
    callbacks,
    load_checkpoint,
)
from test_training_helpers import (
    assert_same_state,
    batches,
    make_trainer,
    validation,
    without_times,
)


@pytest.fixture(autouse=True)
def default_sigint_handler():
    """Python's own Ctrl-C handler, whatever the test runner inherited.

    A shell starts background jobs with SIGINT ignored, and the Trainer
    rightly leaves an ignored SIGINT alone; these tests are about the usual
    case, an interactive Ctrl-C.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


class InterruptAt(callbacks.Callback):
    """Raise KeyboardInterrupt after global step `step` (as Ctrl-C at that moment would)."""

    def __init__(self, step: int, *, real_signal: bool = False) -> None:
        self.step = step
        self.real_signal = real_signal

    def on_step_end(self, trainer, logs) -> None:
        if logs["global_step"] == self.step:
            if self.real_signal:
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise KeyboardInterrupt


@pytest.mark.parametrize("adam", [False, True])
def test_resume_after_two_epochs_equals_four_straight(tmp_path, adam) -> None:
    straight = make_trainer(adam=adam)
    full = straight.fit(batches(), 4, validation=validation())

    ckpt = tmp_path / "ckpt.npz"
    make_trainer(adam=adam, checkpoint_path=ckpt).fit(batches(), 2, validation=validation())
    # Fresh objects with other seeds: everything must come from the checkpoint.
    resumed = make_trainer(seed=7, adam=adam, checkpoint_path=ckpt)
    history = resumed.fit(batches(seed=99), 4, validation=validation(), resume_from=ckpt)

    assert_same_state(straight, resumed)
    assert resumed.optimizer.lr == straight.optimizer.lr
    assert resumed.scheduler.last_epoch == straight.scheduler.last_epoch == 4
    assert without_times(history.epochs) == without_times(full.epochs)
    assert history.steps == full.steps


def test_a_resume_with_more_epochs_anneals_over_the_new_length(tmp_path) -> None:
    """The cosine schedule given to the resuming Trainer (t_max 6, not the checkpoint's 4)
    sets every rate after the resume, the first one included."""
    first = make_trainer(adam=True, checkpoint_path=tmp_path / "ckpt.npz")
    first.fit(batches(), 4)
    longer = make_trainer(adam=True)
    sched = longer.scheduler
    sched.t_max = 6
    history = longer.fit(batches(), 6, resume_from=tmp_path / "ckpt.npz")
    base, eta_min = first.scheduler.base_lr, first.scheduler.eta_min
    planned = [eta_min + (base - eta_min) * (1 + np.cos(np.pi * t / 6)) / 2 for t in (4, 5)]
    np.testing.assert_allclose([e["lr"] for e in history.epochs[4:]], planned, rtol=1e-12)
    assert sched.t_max == 6 and sched.last_epoch == 6


def test_checkpoint_holds_the_run_state(tmp_path) -> None:
    ckpt = tmp_path / "ckpt.npz"
    trainer = make_trainer(checkpoint_path=ckpt)
    trainer.fit(batches(), 3)
    loaded = load_checkpoint(ckpt)
    assert (loaded["epoch"], loaded["step"], loaded["global_step"]) == (3, 0, 15)
    assert loaded["optimizer"] == "SGD"
    assert loaded["scheduler_state"]["last_epoch"] == 3
    assert loaded["history"].epochs == trainer.history.epochs
    assert loaded["data_state"] == trainer._train.get_state()  # the next epoch's shuffle
    assert set(loaded["generator_states"]) == {"5.rng"}
    want = trainer.optimizer.state_dict()
    assert loaded["optimizer_state"].keys() == want.keys()
    for key, value in want.items():
        assert np.array_equal(loaded["optimizer_state"][key], value)
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    assert np.array_equal(loaded["model"].forward(x), trainer.model.forward(x))


def test_same_seed_same_results() -> None:
    a, b = make_trainer(), make_trainer()
    ha = a.fit(batches(), 3, validation=validation())
    hb = b.fit(batches(), 3, validation=validation())
    assert_same_state(a, b)
    assert without_times(ha.epochs) == without_times(hb.epochs)
    assert ha.steps == hb.steps
    c = make_trainer()
    c.fit(batches(seed=1), 3)  # another shuffle order: different weights
    assert not np.array_equal(a.model.state_dict()["6.weight"], c.model.state_dict()["6.weight"])


@pytest.mark.parametrize("real_signal", [False, True])
def test_ctrl_c_mid_epoch_checkpoints_the_last_step_and_resumes_exactly(
    tmp_path, real_signal
) -> None:
    straight = make_trainer()
    full = straight.fit(batches(), 3, validation=validation())

    ckpt = tmp_path / "ckpt.npz"
    trainer = make_trainer(
        checkpoint_path=ckpt, callbacks=[InterruptAt(8, real_signal=real_signal)]
    )
    with pytest.raises(TrainingInterrupted) as info:
        trainer.fit(batches(), 3, validation=validation())
    assert info.value.checkpoint_path == ckpt
    assert (info.value.epoch, info.value.step) == (1, 3)  # 5 steps per epoch: 5 + 3
    assert info.value.history.interrupted
    assert isinstance(info.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    loaded = load_checkpoint(ckpt)
    assert (loaded["epoch"], loaded["step"], loaded["global_step"]) == (1, 3, 8)
    assert len(loaded["history"].steps) == 8

    resumed = make_trainer(seed=3, checkpoint_path=ckpt)
    history = resumed.fit(batches(seed=5), 3, validation=validation(), resume_from=ckpt)
    assert_same_state(straight, resumed)
    assert not history.interrupted
    assert without_times(history.epochs) == without_times(full.epochs)
    assert history.steps == full.steps


def test_interrupt_inside_a_step_keeps_the_last_epoch_checkpoint(tmp_path) -> None:
    ckpt = tmp_path / "ckpt.npz"
    trainer = make_trainer(checkpoint_path=ckpt)
    real_forward = trainer.loss_fn.forward
    calls = []

    def forward(logits, y):
        calls.append(1)
        if len(calls) == 7:  # the second step of epoch 2, after BN statistics moved
            raise KeyboardInterrupt
        return real_forward(logits, y)

    trainer.loss_fn.forward = forward
    with pytest.raises(TrainingInterrupted) as info:
        trainer.fit(batches(), 3)
    assert info.value.checkpoint_path == ckpt
    loaded = load_checkpoint(ckpt)
    assert (loaded["epoch"], loaded["step"]) == (1, 0)  # not the half-updated state


def test_second_ctrl_c_stops_mid_step_without_writing(tmp_path) -> None:
    ckpt = tmp_path / "ckpt.npz"
    trainer = make_trainer(checkpoint_path=ckpt)
    real_forward = trainer.loss_fn.forward
    calls = []

    def forward(logits, y):
        calls.append(1)
        if len(calls) == 7:
            os.kill(os.getpid(), signal.SIGINT)  # deferred: the step would finish
            os.kill(os.getpid(), signal.SIGINT)  # the second one raises at once
        return real_forward(logits, y)

    trainer.loss_fn.forward = forward
    with pytest.raises(TrainingInterrupted) as info:
        trainer.fit(batches(), 3)
    assert len(calls) == 7
    assert info.value.checkpoint_path == ckpt
    assert load_checkpoint(ckpt)["step"] == 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_interrupt_without_checkpoint_path_reports_none() -> None:
    trainer = make_trainer(callbacks=[InterruptAt(2)])
    with pytest.raises(TrainingInterrupted) as info:
        trainer.fit(batches(), 2)
    assert info.value.checkpoint_path is None
    assert trainer.history.interrupted
    assert len(trainer.history.steps) == 2


class ExplodeAfterFirstEpoch(callbacks.Callback):
    def on_epoch_end(self, trainer, logs) -> None:
        trainer.optimizer.lr = 1e30


def test_non_finite_loss_stops_and_keeps_the_previous_checkpoint(tmp_path) -> None:
    # No batch norm here: it would renormalise the exploding activations.
    model = nn.Sequential(nn.Flatten(), nn.Dense(64, 16, rng=0), nn.ReLU(), nn.Dense(16, 3, rng=1))
    ckpt = tmp_path / "ckpt.npz"
    before: bytes | None = None

    class Snapshot(callbacks.Callback):
        def on_epoch_end(self, trainer, logs) -> None:
            nonlocal before
            before = ckpt.read_bytes()

    trainer = Trainer(
        model,
        nn.CrossEntropyLoss(),
        optim.SGD(model.parameters(), lr=0.05),
        callbacks=[Snapshot(), ExplodeAfterFirstEpoch()],
        checkpoint_path=ckpt,
    )
    with pytest.raises(NonFiniteLossError) as info, np.errstate(over="ignore", invalid="ignore"):
        trainer.fit(batches(), 3)
    message = str(info.value)
    assert info.value.epoch == 2 and info.value.step >= 2
    assert f"epoch 2, step {info.value.step}" in message
    assert "smaller learning rate" in message
    assert str(ckpt) in message
    assert len(trainer.history.steps) == 5 + info.value.step - 1
    assert ckpt.read_bytes() == before
    assert load_checkpoint(ckpt)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]  # no temporary files left


def test_load_checkpoint_rejects_other_files(tmp_path) -> None:
    model_file = npcnn.save(make_trainer().model, tmp_path / "model.npz")
    with pytest.raises(ValueError, match="model file, not a training checkpoint"):
        load_checkpoint(model_file)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(ValueError):
        load_checkpoint(junk)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.npz")
    arrays = model_to_arrays(make_trainer().model)
    arrays["__checkpoint__"] = np.array("{not json")
    save_arrays(tmp_path / "bad.npz", arrays)
    with pytest.raises(ValueError, match="not valid JSON"):
        load_checkpoint(tmp_path / "bad.npz")


def test_resume_refuses_a_checkpoint_of_another_setup(tmp_path) -> None:
    ckpt = tmp_path / "ckpt.npz"
    make_trainer(checkpoint_path=ckpt).fit(batches(), 1)
    with pytest.raises(ValueError, match="Adam"):
        make_trainer(adam=True).fit(batches(), 2, resume_from=ckpt)
    other = make_trainer()
    other.scheduler = None
    with pytest.raises(ValueError, match="StepLR"):
        other.fit(batches(), 2, resume_from=ckpt)


def test_resume_mid_epoch_needs_the_same_batches(tmp_path) -> None:
    ckpt = tmp_path / "ckpt.npz"
    with pytest.raises(TrainingInterrupted):
        make_trainer(checkpoint_path=ckpt, callbacks=[InterruptAt(2)]).fit(batches(), 2)
    with pytest.raises(ValueError, match="same data and batch size"):
        make_trainer().fit(batches(batch_size=32), 2, resume_from=ckpt)


def test_a_sigterm_python_dropped_before_fit_stops_it_at_the_first_safe_point() -> None:
    # Its handler ran inside a weakref callback, where an exception cannot propagate.
    import weakref

    from npcnn.training.interrupts import Terminated, interrupts_not_lost

    class Anything:
        pass

    def callback(_ref) -> None:
        raise Terminated

    trainer = make_trainer()
    with interrupts_not_lost() as lost:
        thing = Anything()
        probe = weakref.ref(thing, callback)
        del thing
        assert probe() is None and len(lost) == 1
        with pytest.raises(TrainingInterrupted) as info:
            trainer.fit(batches(), 2)
    assert info.value.signal == signal.SIGTERM
    assert len(trainer.history.steps) <= 1  # the first step's end is a safe point
    make_trainer().fit(batches(), 1)  # after the block, nothing is left to stop for
