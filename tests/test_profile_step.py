"""benchmarks/profile_step.py: the step table's times and convolution FLOPs."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import load_benchmark_module
from npcnn import nn
from npcnn.nn.hooks import step_timer

profile = load_benchmark_module("profile_step")


def _profile(model: nn.Layer, x: np.ndarray, by_layer: bool = False):
    names = {id(layer): name for name, layer in model.named_layers()} if by_layer else None
    table = profile.StepTable(profile.watch_convs(model), len(x), names)
    table.recording = True
    with step_timer(table.hear):
        y = model.forward(x, training=True)
        model.backward(np.ones_like(y), need_input_grad=False)
    return table


def test_conv_flops_count_the_products_and_the_backward_of_dx_twice(rng) -> None:
    first = nn.Conv2D(3, 8, 3, padding=1, rng=rng)  # no dL/dx: the network's first layer
    second = nn.Conv2D(8, 4, 3, stride=2, groups=2, rng=rng)  # (8/2) * 3 * 3 per output
    model = nn.Sequential([first, nn.ReLU(), second])
    table = _profile(model, rng.random((2, 3, 9, 9)), by_layer=True)
    forward_first = 2.0 * (2 * 8 * 9 * 9) * 3 * 3 * 3
    forward_second = 2.0 * (2 * 4 * 4 * 4) * 4 * 3 * 3
    assert table.flops[("0 (Conv2D)", "forward")] == forward_first
    assert table.flops[("0 (Conv2D)", "backward")] == forward_first
    assert table.flops[("2 (Conv2D)", "forward")] == forward_second
    assert table.flops[("2 (Conv2D)", "backward")] == 2 * forward_second
    assert ("1 (ReLU)", "forward") in table.seconds and ("1 (ReLU)", "forward") not in table.flops


def test_blocks_are_left_out_and_steps_of_a_kind_are_added_up(rng) -> None:
    x = nn.Input((4, 6, 6))
    block = nn.Model(x, nn.ReLU()(nn.Add()([nn.Conv2D(4, 4, 3, padding=1, rng=rng)(x), x])))
    blocks = [block, nn.Model.from_config(block.config())]
    table = _profile(nn.Sequential(blocks), rng.random((2, 4, 6, 6)))
    assert ("Model", "forward") not in table.seconds
    assert table.count[("Conv2D", "forward")] == 2 and table.count[("Add", "backward")] == 2
    one = 2.0 * (2 * 4 * 6 * 6) * 4 * 3 * 3
    assert table.flops[("Conv2D", "forward")] == pytest.approx(2 * one)
    # The first block's conv reads the network's input, whose gradient nobody needs.
    assert table.flops[("Conv2D", "backward")] == pytest.approx(one + 2 * one)
