"""Mini-batches for training: a fresh shuffle every epoch, converted per batch."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import numpy as np

from npcnn.data.augment import Augmentation


class BatchIterator:
    """Iterate over ``(x, y)`` mini-batches of a labelled image array.

    ``images``: (N, H, W) or (N, C, H, W); kept as given (uint8 stays uint8
    in memory) and converted one batch at a time. ``labels``: (N,) integers.

    Each ``iter()`` is one epoch: with ``shuffle`` a new permutation of the N
    examples is drawn from ``rng`` (a ``numpy.random.Generator``; an int seeds
    a new one, None seeds from the OS), without replacement, so every example
    is visited exactly once per epoch. Yields

    * ``x``: float32 (B, C, H, W); uint8 images are divided by 255 into
      [0, 1], other dtypes are cast to float32 unchanged;
    * ``y``: int64 (B,).

    The last batch holds the remaining ``N mod batch_size`` examples unless
    ``drop_last``. With ``drop_last=None`` (the default) a shuffled iterator,
    the training one, drops it only when it would hold a single example
    behind at least one full batch (``N mod batch_size == 1``,
    ``N > batch_size``): batch norm cannot learn from one example (PyTorch's
    BatchNorm1d refuses it too), and a run would fail at the end of its first
    epoch. The example left out is another one every epoch. An unshuffled
    iterator, which may serve evaluation where every example counts, keeps
    it. The attribute ``drop_last`` holds the choice made. ``len()`` is the
    number of batches per epoch.

    ``augment``, a function ``(x, rng) -> x`` (see :mod:`npcnn.data.augment`),
    changes every batch at random with this iterator's ``rng``.

    For resuming, :meth:`get_state` before an epoch returns the generator
    state (a dict of plain ints and strings for the default PCG64, JSON
    serialisable) and :meth:`set_state` restores it, so the next epoch draws
    the same permutation.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        shuffle: bool = True,
        rng: np.random.Generator | int | None = None,
        drop_last: bool | None = None,
        augment: Augmentation | None = None,
    ) -> None:
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.ndim == 3:
            images = images[:, np.newaxis]  # a view: one channel
        elif images.ndim != 4:
            raise ValueError(f"images must be (N, H, W) or (N, C, H, W), got shape {images.shape}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"labels must be ({images.shape[0]},) to match the images, got {labels.shape}"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integers, got {labels.dtype}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
            raise ValueError(f"batch_size must be an int, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.images = images
        self.labels = labels
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        if drop_last is None:
            n = len(images)
            drop_last = shuffle and n % self.batch_size == 1 and n > self.batch_size
        self.drop_last = bool(drop_last)
        self.augment = augment
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)

    @property
    def num_examples(self) -> int:
        return self.images.shape[0]

    def __len__(self) -> int:
        full, rest = divmod(self.num_examples, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        # Draw the permutation now, not on the first next(), so the state
        # saved before iter() fully determines the epoch.
        order = self.rng.permutation(self.num_examples) if self.shuffle else None
        return self._batches(order)

    def _batches(self, order: np.ndarray | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for b in range(len(self)):
            chunk = slice(b * self.batch_size, (b + 1) * self.batch_size)
            index = chunk if order is None else order[chunk]
            x = self._convert(self.images[index])
            if self.augment is not None:
                x = self.augment(x, self.rng)
            yield x, self.labels[index].astype(np.int64)

    @staticmethod
    def _convert(images: np.ndarray) -> np.ndarray:
        x = images.astype(np.float32)
        if images.dtype == np.uint8:
            # Divide (not multiply by 1/255) to match the usual to-tensor scaling exactly.
            np.divide(x, np.float32(255), out=x)
        return x

    def get_state(self) -> dict[str, Any]:
        """A copy of the generator state (``rng.bit_generator.state``)."""
        return copy.deepcopy(self.rng.bit_generator.state)

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`get_state` (same bit generator type)."""
        self.rng.bit_generator.state = copy.deepcopy(state)
