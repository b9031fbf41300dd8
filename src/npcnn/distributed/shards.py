"""Each rank's share of every global batch.

Every rank walks the same global shuffled order (the same seed draws the
same permutation), makes each global batch of B examples as one process
would (conversion and augmentation included, so the random draws stay the
same on every rank), and keeps its own contiguous slice: rank r of K takes
examples [b*r//K, b*(r+1)//K) of a batch of b, so shares differ by one
example at most.

The rule for small batches: a rank must have at least ``min_share``
examples of every batch (one for a loss; two where a batch norm normalises
the rank's share alone, as one example has no variance), so the global
batch size must be at least ``min_share * K``, and a last partial batch of
fewer examples is left out of the epoch (the next epoch's permutation puts
other examples there).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np


def share(count: int, rank: int, size: int) -> slice:
    """Rank `rank`'s contiguous share of `count` items split over `size` ranks."""
    return slice(count * rank // size, count * (rank + 1) // size)


class ShardedBatches:
    """Rank ``rank`` of ``size``'s shares of the global batches of ``batches``, each of at
    least ``min_share`` examples.

    ``batches``: a :class:`npcnn.data.BatchIterator` (the global one, the same
    on every rank). ``len()`` is the number of global batches per epoch (see the
    module's rule for the last one); ``batch_size`` and ``num_examples`` are the
    global ones; the state is the global iterator's, so a checkpoint resumes
    with any number of ranks.
    """

    def __init__(self, batches: Any, rank: int, size: int, min_share: int = 1) -> None:
        if batches.batch_size < min_share * size:
            each = "an example" if min_share == 1 else f"{min_share} examples"
            why = "" if min_share == 1 else " (its batch norms normalise its share alone)"
            raise ValueError(
                f"the batch size ({batches.batch_size}) is the global one and must give each "
                f"of the {size} processes {each}{why}: at least {min_share * size}"
            )
        self.batches, self.rank, self.size = batches, rank, size
        self.min_share = min_share

    @property
    def batch_size(self) -> int:
        return int(self.batches.batch_size)

    @property
    def num_examples(self) -> int:
        return int(self.batches.num_examples)

    @property
    def drop_last(self) -> bool:
        return bool(self.batches.drop_last)

    def __len__(self) -> int:
        steps = len(self.batches)
        last = self.num_examples - (steps - 1) * self.batch_size if steps else 0
        return steps - 1 if 0 < last < self.min_share * self.size else steps

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        batches = iter(self.batches)
        return self._shares(batches, len(self))

    def _shares(
        self, batches: Iterator[Any], steps: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for _, (x, y) in zip(range(steps), batches, strict=False):
            mine = share(len(y), self.rank, self.size)
            yield x[mine], y[mine]

    def get_state(self) -> dict[str, Any]:
        return self.batches.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.batches.set_state(state)
