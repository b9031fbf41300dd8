"""Train a few steps, on one process or on every rank of ``mpiexec -n K``; rank 0 saves
the weights. Run by tests/test_distributed.py:

    python train_steps.py OUT.npz NET STEPS BATCH EXAMPLES (sync|local|single) [dtype]

NET: "notebook" (the notebook preset) or "residual" (a small graph with a
projection shortcut). The data: EXAMPLES random images with random labels,
seed 0, shuffled with seed 1. "single": no DataParallel at all.
"""

from __future__ import annotations

import sys

import numpy as np

from npcnn import nn, optim
from npcnn.data import BatchIterator
from npcnn.distributed import DataParallel, init_world
from npcnn.models import get_preset
from npcnn.training import Trainer


def residual(rng: np.random.Generator) -> nn.Model:
    x = nn.Input((1, 12, 12))
    y = nn.ReLU()(nn.BatchNorm2D(4)(nn.Conv2D(1, 4, 3, padding=1, rng=rng)(x)))
    main = nn.BatchNorm2D(8)(nn.Conv2D(4, 8, 3, stride=2, padding=1, rng=rng)(y))
    shortcut = nn.BatchNorm2D(8)(nn.Conv2D(4, 8, 1, stride=2, bias=False, rng=rng)(y))
    y = nn.ReLU()(nn.Add()([main, shortcut]))
    return nn.Model(x, nn.Dense(8, 10, rng=rng)(nn.GlobalAvgPool2D()(y)))


def main() -> None:
    out, net, steps, batch, examples, mode = sys.argv[1:7]
    dtype = np.dtype(sys.argv[7]) if len(sys.argv) > 7 else np.dtype(np.float32)
    steps, batch, examples = int(steps), int(batch), int(examples)
    rng = np.random.default_rng(0)
    if net == "notebook":
        model, size = get_preset("notebook").model(seed=0), 28
    else:
        model, size = residual(rng), 12
    model = model.astype(dtype)
    images = rng.integers(0, 256, (examples, size, size), dtype=np.uint8)
    labels = rng.integers(0, 10, examples)
    world = init_world(distributed=mode != "single")
    parallel = (
        None if mode == "single" else DataParallel(world, sync_bn=mode == "sync", check_every=5)
    )
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    trainer = Trainer(model, nn.CrossEntropyLoss(), opt, data_parallel=parallel)
    train = BatchIterator(images, labels, batch, rng=1)
    epochs = -(-steps // len(train))
    trainer.fit(train, epochs=epochs)
    if world.is_root:
        np.savez(out, **model.state_dict(), losses=[s["loss"] for s in trainer.history.steps])


if __name__ == "__main__":
    main()
