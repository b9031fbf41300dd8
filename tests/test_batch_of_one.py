"""A last training batch of one example: batch norm cannot learn from it, so the
batch iterator leaves it out (only that batch, only by default)."""

from __future__ import annotations

import numpy as np
import pytest

from npcnn import nn, optim
from npcnn.data import BatchIterator
from npcnn.training import Trainer


def _data(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 1, 4, 4), dtype=np.uint8), rng.integers(0, 3, n)


@pytest.mark.parametrize(
    ("n", "batch_size", "sizes"),
    [
        (129, 128, [128]),  # 1 left over: dropped
        (10, 3, [3, 3, 3]),
        (10, 4, [4, 4, 2]),  # 2 left over: kept
        (8, 4, [4, 4]),
        (1, 4, [1]),  # no full batch before it: kept (the only data there is)
        (3, 1, [1, 1, 1]),  # batches of one asked for
    ],
)
def test_only_a_last_batch_of_one_is_dropped_by_default(n, batch_size, sizes) -> None:
    batches = BatchIterator(*_data(n), batch_size, rng=0)
    assert [len(y) for _, y in batches] == sizes
    assert len(batches) == len(sizes)
    assert batches.drop_last == (sum(sizes) < n)


def test_an_unshuffled_iterator_keeps_every_example() -> None:
    # It may serve evaluation, where leaving out an example would change the figures.
    batches = BatchIterator(*_data(129), 128, shuffle=False)
    assert [len(y) for _, y in batches] == [128, 1] and not batches.drop_last


def test_an_explicit_drop_last_is_obeyed() -> None:
    assert [len(y) for _, y in BatchIterator(*_data(129), 128, drop_last=False)] == [128, 1]
    assert [
        len(y)
        for _, y in BatchIterator(
            *_data(
                10,
            ),
            4,
            drop_last=True,
        )
    ] == [4, 4]


def test_the_dropped_example_changes_from_epoch_to_epoch_and_the_draws_do_not() -> None:
    batches = BatchIterator(_data(17)[0], np.arange(17), 8, rng=5)
    reference = np.random.default_rng(5)
    left_out = set()
    for _ in range(6):
        order = reference.permutation(17)  # the same permutation as before the change
        seen = np.concatenate([y for _, y in batches])
        np.testing.assert_array_equal(seen, order[:16])
        left_out.add(int(order[16]))
    assert len(left_out) > 1


def test_training_with_batch_norm_over_n_times_batch_plus_one_examples() -> None:
    images, labels = _data(17)
    model = nn.Sequential(
        nn.Flatten(), nn.Dense(16, 8, rng=0), nn.BatchNorm1D(8), nn.ReLU(), nn.Dense(8, 3, rng=1)
    )
    trainer = Trainer(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1))
    history = trainer.fit(BatchIterator(images, labels, 8, rng=0), 2)
    assert len(history.epochs) == 2
    assert all(np.isfinite(e["loss"]) for e in history.epochs)
