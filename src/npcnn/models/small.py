"""The default preset: a small, quick CNN for 28x28 grayscale images.

conv 3x3 (1 -> 16) - BN - ReLU - maxpool 2 -> (16, 14, 14)
conv 3x3 (16 -> 32) - BN - ReLU - maxpool 2 -> (32, 7, 7)
flatten (1568) - dense 64 - ReLU - dense 10

About 105k parameters; He-normal weights; Adam at 1e-3, batch 64.
"""

from __future__ import annotations

import numpy as np

from npcnn import nn
from npcnn.models.recipe import Preset, Recipe


def build_small(rng: np.random.Generator, num_classes: int = 10) -> nn.Sequential:
    """Two conv-BN-ReLU-pool blocks and a two-layer classifier."""
    return nn.Sequential(
        nn.Conv2D(1, 16, 3, padding=1, bias=False, rng=rng),
        nn.BatchNorm2D(16),
        nn.ReLU(),
        nn.MaxPool2D(2),
        nn.Conv2D(16, 32, 3, padding=1, bias=False, rng=rng),
        nn.BatchNorm2D(32),
        nn.ReLU(),
        nn.MaxPool2D(2),
        nn.Flatten(),
        nn.Dense(32 * 7 * 7, 64, rng=rng),
        nn.ReLU(),
        nn.Dense(64, num_classes, rng=rng),
    )


SMALL = Preset(
    name="small",
    description="small CNN (2 conv blocks + dense), Adam; the default",
    build=build_small,
    recipe=Recipe(optimizer="adam", lr=1e-3, epochs=5, batch_size=64),
)
