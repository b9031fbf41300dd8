"""Learning-rate schedules: the closed forms, PyTorch's values, state round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest

from npcnn import nn, optim
from npcnn.training import CosineAnnealingLR, StepLR


def _optimizer(lr: float = 0.1) -> optim.SGD:
    return optim.SGD([nn.Parameter(np.zeros(2, dtype=np.float32))], lr=lr)


def _lrs(scheduler, epochs: int) -> list[float]:
    """The learning rate each of `epochs` epochs trains with (step after each)."""
    out = []
    for _ in range(epochs):
        out.append(scheduler.optimizer.lr)
        scheduler.step()
    return out


def test_step_lr_formula() -> None:
    lrs = _lrs(StepLR(_optimizer(0.1), step_size=3, gamma=0.5), 10)
    want = [0.1 * 0.5 ** (t // 3) for t in range(10)]
    assert lrs == want
    assert lrs[:4] == [0.1, 0.1, 0.1, 0.05]


def test_cosine_formula_and_end_points() -> None:
    sched = CosineAnnealingLR(_optimizer(0.2), t_max=8, eta_min=0.01)
    lrs = _lrs(sched, 12)
    want = [0.01 + 0.19 * (1 + math.cos(math.pi * t / 8)) / 2 for t in range(12)]
    np.testing.assert_allclose(lrs, want, rtol=1e-15)
    assert lrs[0] == 0.2
    assert sched.lr_at(8) == pytest.approx(0.01, abs=1e-15)
    assert sched.lr_at(4) == pytest.approx(0.105, rel=1e-12)
    assert lrs[9] > lrs[8]  # past t_max the cosine rises again, as in PyTorch


@pytest.mark.parametrize(
    ("ours", "theirs", "kwargs"),
    [
        ("StepLR", "StepLR", {"step_size": 3, "gamma": 0.3}),
        ("CosineAnnealingLR", "CosineAnnealingLR", {"t_max": 7, "eta_min": 0.002}),
    ],
)
def test_schedules_match_torch(ours, theirs, kwargs) -> None:
    torch = pytest.importorskip("torch")
    from npcnn.training import schedules

    epochs = 20
    mine = _lrs(getattr(schedules, ours)(_optimizer(0.4), **kwargs), epochs)
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=0.4)
    torch_kwargs = {("T_max" if k == "t_max" else k): v for k, v in kwargs.items()}
    sched = getattr(torch.optim.lr_scheduler, theirs)(opt, **torch_kwargs)
    reference = []
    for _ in range(epochs):
        reference.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(mine, reference, rtol=1e-12, atol=1e-15)


def test_state_dict_round_trip_restores_the_rate() -> None:
    a = CosineAnnealingLR(_optimizer(0.3), t_max=5)
    _lrs(a, 3)
    state = a.state_dict()
    assert state == {
        "type": "CosineAnnealingLR",
        "last_epoch": 3,
        "base_lr": 0.3,
        "t_max": 5,
        "eta_min": 0.0,
    }
    b = CosineAnnealingLR(_optimizer(0.9), t_max=1)
    b.load_state_dict(state)
    assert b.optimizer.lr == a.optimizer.lr == a.get_last_lr()
    assert _lrs(b, 4) == _lrs(a, 4)
    with pytest.raises(ValueError, match="StepLR"):
        b.load_state_dict(StepLR(_optimizer(), 2).state_dict())


def test_keep_settings_restores_the_position_only() -> None:
    a = CosineAnnealingLR(_optimizer(0.3), t_max=2, eta_min=0.01)
    _lrs(a, 2)
    b = CosineAnnealingLR(_optimizer(0.3), t_max=5, eta_min=0.01)
    b.load_state_dict(a.state_dict(), keep_settings=True)
    assert b.settings() == {"t_max": 5, "eta_min": 0.01} and b.last_epoch == 2
    fresh = CosineAnnealingLR(_optimizer(0.3), t_max=5, eta_min=0.01)
    assert _lrs(b, 3) == _lrs(fresh, 5)[2:]


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="step_size"):
        StepLR(_optimizer(), 0)
    with pytest.raises(ValueError, match="gamma"):
        StepLR(_optimizer(), 2, gamma=0)
    with pytest.raises(ValueError, match="t_max"):
        CosineAnnealingLR(_optimizer(), 0)
