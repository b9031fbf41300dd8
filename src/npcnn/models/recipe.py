"""What a preset is: a seeded model builder plus the recipe that trains it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from npcnn import nn, optim
from npcnn.nn import Parameter
from npcnn.optim import Optimizer

if TYPE_CHECKING:
    from npcnn.data.augment import Augmentation
    from npcnn.training.schedules import LRScheduler

#: (rng, num_classes) -> a fresh model for (N, 1, 28, 28) float32 input.
Builder = Callable[[np.random.Generator, int], nn.Layer]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine")
AUGMENTATIONS = ("none", "flip", "crop", "flip-crop")


@dataclass(frozen=True)
class Recipe:
    """How a preset is trained; every field can be overridden from the command line.

    ``batch_size`` None means full-batch gradient descent (one step per epoch).
    ``train_limit``/``test_limit`` keep only the first N examples of a split
    (None: all). ``step_size``/``gamma`` drive the step schedule
    (lr *= gamma every ``step_size`` epochs); the cosine schedule anneals
    from ``lr`` to ``eta_min`` over the run's epochs. ``recompute_bn``:
    before each evaluation, recompute the batch-norm statistics on the
    training images under the current weights (for full-batch runs, where a
    running average lags far behind weights that change a lot every step).
    ``augment`` names a training-batch augmentation (one of AUGMENTATIONS).
    ``label_smoothing`` in [0, 1) smooths the cross-entropy's targets
    (`nn.CrossEntropyLoss`). ``tta`` is the test-time augmentation of the
    evaluations (`npcnn.training.evaluate`): "none", or "flip" to average
    each test image's logits with its mirror image's.
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    epochs: int = 5
    batch_size: int | None = 64
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "none"
    step_size: int = 5
    gamma: float = 0.1
    eta_min: float = 0.0
    train_limit: int | None = None
    test_limit: int | None = None
    recompute_bn: bool = False
    augment: str = "none"
    label_smoothing: float = 0.0
    tta: str = "none"

    def __post_init__(self) -> None:
        from npcnn.training.evaluate import check_tta

        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {self.augment!r}")
        nn.CrossEntropyLoss(self.label_smoothing)  # ValueError outside [0, 1)
        check_tta(self.tta)

    def make_loss(self) -> nn.CrossEntropyLoss:
        """The training loss: cross-entropy with this recipe's label smoothing."""
        return nn.CrossEntropyLoss(label_smoothing=self.label_smoothing)

    def make_optimizer(self, params: Iterable[Parameter]) -> Optimizer:
        """The optimiser this recipe names, over `params`."""
        params = list(params)
        if self.optimizer == "sgd":
            return optim.SGD(
                params, self.lr, momentum=self.momentum, weight_decay=self.weight_decay
            )
        kind = optim.Adam if self.optimizer == "adam" else optim.AdamW
        return kind(params, lr=self.lr, weight_decay=self.weight_decay)

    def make_augmentation(self) -> Augmentation | None:
        """The training batches' augmentation this recipe names; None for "none"."""
        from npcnn.data import augment

        return {
            "flip": augment.random_flip,
            "crop": augment.random_crop,
            "flip-crop": augment.random_flip_and_crop,
        }.get(self.augment)

    def make_scheduler(self, optimizer: Optimizer, epochs: int | None = None) -> LRScheduler | None:
        """The recipe's learning-rate schedule over `epochs` (default: the recipe's epochs).

        None for a constant learning rate.
        """
        from npcnn.training import schedules

        if self.schedule == "step":
            return schedules.StepLR(optimizer, self.step_size, self.gamma)
        if self.schedule == "cosine":
            return schedules.CosineAnnealingLR(optimizer, epochs or self.epochs, self.eta_min)
        return None


@dataclass(frozen=True)
class Preset:
    """A named architecture (``build``) and its training ``recipe``."""

    name: str
    description: str
    build: Builder
    recipe: Recipe = field(default_factory=Recipe)
    input_shape: tuple[int, int, int] = (1, 28, 28)

    def model(self, seed: int | np.random.Generator | None = 0, num_classes: int = 10):
        """A freshly initialised model; the same seed gives the same weights."""
        return self.build(np.random.default_rng(seed), num_classes)
