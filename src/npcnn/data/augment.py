"""Data augmentation: random changes to training batches that keep their labels true.

An augmentation is a function ``(x, rng) -> x`` on a float32 batch of shape
(N, C, H, W), drawing its randomness from ``rng``; a preset's recipe names
one (`Recipe.augment`, made by `Recipe.make_augmentation`). `BatchIterator(augment=...)`
applies it to every training batch with the iterator's own generator, so a
seeded run, and a run resumed from a checkpoint, see the same augmented
batches. Evaluation never augments.

Which changes keep a label true depends on the data: a shirt mirrored left
to right is still a shirt, a mirrored 2 or 7 is not a digit. Flips suit
Fashion-MNIST, not MNIST or KMNIST; small shifts (`random_crop`) suit both.
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


def random_crop(x: np.ndarray, rng: np.random.Generator, padding: int = 2) -> np.ndarray:
    """Shift each image of x (N, C, H, W) by up to `padding` pixels each way, in place.

    As PyTorch's RandomCrop(size=(H, W), padding=padding): the image is
    zero-padded by `padding` on every side and an H x W window is cut at a
    random offset (i, j), 0 <= i, j <= 2 * padding; i then j for each image,
    drawn for the whole batch at once. Returns x.
    """
    n, _, h, w = x.shape
    offsets = rng.integers(0, 2 * padding + 1, size=(n, 2))
    padded = np.zeros((n, x.shape[1], h + 2 * padding, w + 2 * padding), dtype=x.dtype)
    padded[:, :, padding : padding + h, padding : padding + w] = x
    for k, (i, j) in enumerate(offsets):
        x[k] = padded[k, :, i : i + h, j : j + w]
    return x


def random_flip_and_crop(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`random_flip`, then `random_crop` with 2 pixels of padding (the flips' draws
    come first). For clothes; returns x."""
    return random_crop(random_flip(x, rng), rng)
