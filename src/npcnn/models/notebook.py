"""The network of the original notebook, and how it was trained.

conv 3x3 (1 -> 16, pad 1) - BN - ReLU - maxpool 2 -> (16, 14, 14)
conv 4x4 (16 -> 18, pad 1) - BN - ReLU            -> (18, 13, 13)
flatten (3042) - dense 20 (no bias) - BN - ReLU - dense 10

The convolutions and the first dense layer have no bias (batch norm's
beta plays that role). Every conv/dense weight is drawn from N(0, 0.1^2);
batch norm starts at gamma 1, beta 0 and the last bias at 0. Training:
plain full-batch gradient descent, learning rate 0.5, 50 iterations, on the
first 1,000 training and 1,000 test images. Batch-norm statistics for the
test set are recomputed on the training images after every step.
"""

from __future__ import annotations

import numpy as np

from npcnn import nn
from npcnn.models.recipe import Preset, Recipe

WEIGHT_STD = 0.1


def build_notebook(rng: np.random.Generator, num_classes: int = 10) -> nn.Sequential:
    """The notebook's network with its N(0, 0.1^2) initial weights."""
    model = nn.Sequential(
        nn.Conv2D(1, 16, 3, padding=1, bias=False),
        nn.BatchNorm2D(16),
        nn.ReLU(),
        nn.MaxPool2D(2),
        nn.Conv2D(16, 18, 4, padding=1, bias=False),
        nn.BatchNorm2D(18),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dense(18 * 13 * 13, 20, bias=False),
        nn.BatchNorm1D(20),
        nn.ReLU(),
        nn.Dense(20, num_classes),
    )
    for layer in model:
        if isinstance(layer, nn.Conv2D | nn.Dense):
            nn.init.normal_(layer.weight, rng, std=WEIGHT_STD)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return model


NOTEBOOK = Preset(
    name="notebook",
    description="the original notebook: 2 conv + 2 dense with batch norm, full-batch GD",
    build=build_notebook,
    recipe=Recipe(
        optimizer="sgd",
        lr=0.5,
        epochs=50,
        batch_size=None,
        train_limit=1000,
        test_limit=1000,
        # The notebook normalised the test set with the current weights'
        # statistics; after 10 steps a 0.1-momentum running average is still
        # far from them (test accuracy 32% instead of 75% at iteration 10).
        recompute_bn=True,
    ),
)
