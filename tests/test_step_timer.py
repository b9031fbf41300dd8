"""npcnn.nn.hooks.step_timer: every step a container runs is timed and reported, in order."""

from __future__ import annotations

import time

import numpy as np

from conftest import build_notebook_model
from npcnn import nn
from npcnn.nn.hooks import step_timer


def _record(model: nn.Layer, x: np.ndarray) -> list[tuple[str, str, float]]:
    heard: list[tuple[str, str, float]] = []
    with step_timer(lambda step, phase, seconds: heard.append((step.name, phase, seconds))):
        y = model.forward(x, training=True)
        model.backward(np.ones_like(y), need_input_grad=False)
    return heard


def test_a_sequential_reports_its_plan_forward_then_backward_in_reverse(rng) -> None:
    model = build_notebook_model(rng)
    heard = _record(model, rng.random((4, 1, 28, 28), dtype=np.float32))
    names = [step.name for step in model.plan()]
    assert "BatchNorm2D+ReLU+MaxPool2D" in names  # fused steps are reported as one
    assert [(name, phase) for name, phase, _ in heard] == [
        *((name, "forward") for name in names),
        *((name, "backward") for name in reversed(names)),
    ]
    assert all(seconds >= 0 for _, _, seconds in heard)


def test_a_block_used_as_a_layer_is_reported_after_its_steps_with_their_time(rng) -> None:
    x = nn.Input((3, 8, 8))
    y = nn.Conv2D(3, 3, 3, padding=1, rng=rng)(x, name="conv")
    block = nn.Model(x, nn.ReLU()(nn.Add()([y, x])))
    model = nn.Sequential([block, nn.Flatten(), nn.Dense(192, 2, rng=rng)])
    heard = _record(model, rng.random((2, 3, 8, 8)))
    forward = [(name, seconds) for name, phase, seconds in heard if phase == "forward"]
    assert [name for name, _ in forward] == ["Conv2D", "Add", "ReLU", "Model", "Flatten+Dense"]
    inner = sum(seconds for name, seconds in forward[:3])
    assert forward[3][1] >= inner  # the block's own time includes its steps'
    backward = [name for name, phase, _ in heard if phase == "backward"]
    assert backward == ["Flatten+Dense", "ReLU", "Add", "Conv2D", "Model"]


def test_the_time_reported_is_the_steps_own(rng, monkeypatch) -> None:
    relu = nn.ReLU()
    original_forward = relu.forward

    def forward(x: np.ndarray, training: bool = False) -> np.ndarray:
        time.sleep(0.05)
        return original_forward(x, training=training)

    monkeypatch.setattr(relu, "forward", forward)
    heard = _record(nn.Sequential([nn.Dense(4, 4, rng=rng), relu]), rng.random((2, 4)))
    times = {(name, phase): seconds for name, phase, seconds in heard}
    assert times[("ReLU", "forward")] >= 0.05 > times[("Dense", "forward")]


def test_nothing_is_heard_outside_the_block(rng) -> None:
    heard: list[object] = []
    model = build_notebook_model(rng)
    with step_timer(heard.append):
        pass
    model.forward(rng.random((2, 1, 28, 28), dtype=np.float32), training=True)
    assert heard == []
