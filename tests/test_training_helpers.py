"""Shared builders for the training tests (no tests here): a tiny network and a toy data set.

8x8 single-channel images of three classes, each class a bright 3x3 square at
its own place plus noise, so a small convolutional network learns it within
a few epochs; the network has batch norm (buffers) and dropout (its own RNG),
the two kinds of state besides weights that a resume must restore.
"""

from __future__ import annotations

import numpy as np

from npcnn import nn, optim
from npcnn.data import BatchIterator
from npcnn.training import Trainer, schedules

NUM_CLASSES = 3
CORNERS = ((0, 0), (0, 5), (5, 2))


def toy_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 8, 8) uint8 images and (n,) int64 labels in [0, 3)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=n)
    images = rng.integers(0, 150, size=(n, 8, 8))
    for i, label in enumerate(labels):
        r, c = CORNERS[label]
        images[i, r : r + 3, c : c + 3] += 50
    return images.astype(np.uint8), labels.astype(np.int64)


def tiny_model(seed: int = 0) -> nn.Sequential:
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2D(1, 4, 3, padding=1, rng=rng),
        nn.BatchNorm2D(4),
        nn.ReLU(),
        nn.MaxPool2D(2),
        nn.Flatten(),
        nn.Dropout(0.25, rng=rng.integers(2**32)),
        nn.Dense(4 * 4 * 4, NUM_CLASSES, rng=rng),
    )


def make_trainer(
    seed: int = 0, *, callbacks=(), checkpoint_path=None, lr: float = 0.05, adam: bool = False
) -> Trainer:
    """A tiny model with SGD+momentum and StepLR (or Adam and cosine annealing)."""
    model = tiny_model(seed)
    if adam:
        opt = optim.Adam(model.parameters(), lr=lr / 10)
        sched = schedules.CosineAnnealingLR(opt, t_max=4, eta_min=lr / 100)
    else:
        opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        sched = schedules.StepLR(opt, step_size=2, gamma=0.5)
    return Trainer(
        model,
        nn.CrossEntropyLoss(),
        opt,
        scheduler=sched,
        callbacks=callbacks,
        checkpoint_path=checkpoint_path,
    )


def batches(seed: int = 0, n: int = 96, batch_size: int = 20) -> BatchIterator:
    images, labels = toy_data(n, seed=100)
    return BatchIterator(images, labels, batch_size, rng=seed)


def validation() -> tuple[np.ndarray, np.ndarray]:
    return toy_data(60, seed=200)


def assert_same_state(a: Trainer, b: Trainer) -> None:
    """Every model array and every optimiser entry bit-identical."""
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert np.array_equal(sa[key], sb[key]), key
    oa, ob = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert oa.keys() == ob.keys()
    assert any(k.startswith("state.") for k in oa)
    for key in oa:
        assert np.array_equal(np.asarray(oa[key]), np.asarray(ob[key])), key


def without_times(records: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k not in ("seconds", "images_per_second")} for r in records
    ]
