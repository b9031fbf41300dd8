"""Where a training step's time goes: each step of the plan (a layer, or layers fused
into one kernel), forward and backward, timed inside a preset's training steps.

    python benchmarks/profile_step.py                       # the resnet preset, batch 128
    python benchmarks/profile_step.py --preset notebook --threads 1 --steps 50

Random images of the data set's shape; the preset's loss and optimiser. After
``--warmup`` untimed steps, ``--steps`` steps are timed whole and, through
`npcnn.nn.hooks.step_timer`, step by step. Blocks used as layers (a
ResNet's basic blocks) are containers: their time is that of the steps
inside them, listed on their own, so the table shows the innermost steps
only. Conv2D rows add their rate in GFLOP/s (2 * multiply-adds of the
products; the backward's are twice the forward's when it computes dL/dx).
``--by-layer`` gives a row to each step of the network instead of each kind.
Prints a table; nothing is written.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from typing import Any

import numpy as np

import npcnn
from npcnn import nn
from npcnn.models import PRESETS, get_preset
from npcnn.nn.hooks import step_timer

CONTAINERS = (nn.Model, nn.Sequential)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=list(PRESETS), default="resnet")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=npcnn.get_num_threads())
    p.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument(
        "--by-layer",
        action="store_true",
        help="a row per step of the network (named by its first layer) instead of per kind",
    )
    return p.parse_args()


def conv_flops(layer: nn.Conv2D, output_size: int) -> float:
    """2 * multiply-adds of a forward whose output has `output_size` values."""
    _, per_group, kh, kw = layer.weight.data.shape
    return 2.0 * output_size * per_group * kh * kw


def watch_convs(model: nn.Layer) -> dict[int, dict[str, Any]]:
    """For each Conv2D of `model` (by id), what its last pass saw: the size of one
    example's output ("size") and whether its backward computed dL/dx ("dx"). Its
    forward and backward are wrapped, on the instance, to record them."""
    seen: dict[int, dict[str, Any]] = {}
    for _, layer in model.named_layers():
        if not isinstance(layer, nn.Conv2D):
            continue
        info = seen[id(layer)] = {"size": 0, "dx": True}

        def forward(x, training=False, _run=layer.forward, _info=info):
            y = _run(x, training=training)
            _info["size"] = y[0].size
            return y

        def backward(dy, need_input_grad=True, _run=layer.backward, _info=info):
            _info["dx"] = need_input_grad
            return _run(dy, need_input_grad=need_input_grad)

        layer.forward, layer.backward = forward, backward
    return seen


class StepTable:
    """Seconds per (step name, phase), the number of such steps, and the conv FLOPs."""

    def __init__(
        self, convs: dict[int, dict[str, Any]], batch: int, names: dict[int, str] | None
    ) -> None:
        self.convs, self.batch, self.names = convs, batch, names
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.count: dict[tuple[str, str], int] = defaultdict(int)
        self.flops: dict[tuple[str, str], float] = defaultdict(float)
        self.recording = False

    def hear(self, step: Any, phase: str, seconds: float) -> None:
        if not self.recording or any(isinstance(layer, CONTAINERS) for layer in step.layers):
            return
        name = step.name
        if self.names is not None:
            name = f"{self.names[id(step.layers[0])]} ({name})"
        key = (name, phase)
        self.seconds[key] += seconds
        self.count[key] += 1
        info = self.convs.get(id(step.layers[0]))
        if info is not None:
            computes_dx = phase == "backward" and info["dx"]
            flops = conv_flops(step.layers[0], info["size"] * self.batch)
            self.flops[key] += flops * (2 if computes_dx else 1)


def main() -> None:
    args = parse_args()
    npcnn.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    model = preset.model(seed=0)
    loss_fn = preset.recipe.make_loss()
    optimizer = preset.recipe.make_optimizer(model.parameters())
    rng = np.random.default_rng(0)
    x = rng.random((args.batch_size, *getattr(model, "input_shape", (1, 28, 28))), "f4")
    y = rng.integers(0, 10, args.batch_size)
    names = {id(layer): name for name, layer in model.named_layers()} if args.by_layer else None
    table = StepTable(watch_convs(model), args.batch_size, names)

    def train_step() -> None:
        optimizer.zero_grad()
        loss_fn.forward(model.forward(x, training=True), y)
        model.backward(loss_fn.backward(), need_input_grad=False)
        start = time.perf_counter()
        optimizer.step()
        if table.recording:
            table.seconds[("optimiser", "step")] += time.perf_counter() - start
            table.count[("optimiser", "step")] += 1

    with step_timer(table.hear):
        for _ in range(args.warmup):
            train_step()
        table.recording = True
        start = time.perf_counter()
        for _ in range(args.steps):
            train_step()
        total = (time.perf_counter() - start) / args.steps
    print_table(args, table, total)


def print_table(args: argparse.Namespace, table: StepTable, total: float) -> None:
    """One row per (step, phase), the slowest first, then the sums."""
    print(
        f"{args.preset}: batch {args.batch_size}, {args.threads} thread(s), "
        f"{args.steps} timed steps: {total * 1e3:.1f} ms a step"
    )
    print(f"{'ms/step':>8}  {'share':>6}  {'phase':8}  {'steps':>5}  {'GFLOP/s':>7}  step")
    rows = sorted(table.seconds.items(), key=lambda item: -item[1])
    for (name, phase), seconds in rows:
        per_step = seconds / args.steps
        flops = table.flops.get((name, phase))
        rate = f"{flops / seconds / 1e9:7.1f}" if flops else " " * 7
        count = table.count[(name, phase)] // args.steps
        print(
            f"{per_step * 1e3:8.2f}  {per_step / total:6.1%}  {phase:8}  {count:5d}  {rate}  {name}"
        )
    timed = sum(table.seconds.values()) / args.steps
    share = f"{timed * 1e3:8.2f}  {timed / total:6.1%}"
    print(f"{share}  in the steps above (the rest: loss, zero_grad)")


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # the table piped into head: the rest is not wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
