"""Data augmentation: random changes to training batches that keep their labels true.

An augmentation is a function ``(x, rng) -> x`` on a float32 batch of shape
(N, C, H, W), drawing its randomness from ``rng``; a preset's recipe names
one (`Recipe.augment`, made by `Recipe.make_augmentation`). `BatchIterator(augment=...)`
applies it to every training batch with the iterator's own generator, so a
seeded run, and a run resumed from a checkpoint, see the same augmented
batches. Evaluation never augments.

Which changes keep a label true depends on the data: a shirt mirrored left
to right is still a shirt, a mirrored 2 or 7 is not a digit. Flips suit
Fashion-MNIST, not MNIST or KMNIST.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Augmentation = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def random_flip(x: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror each image of x (N, C, H, W) left to right with probability p, in place.

    One draw per image, in batch order. Returns x.
    """
    flipped = rng.random(len(x)) < p
    x[flipped] = x[flipped, :, :, ::-1]
    return x
