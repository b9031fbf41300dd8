"""BatchIterator: shapes, scaling, one permutation per epoch, resumable RNG state."""

import json

import numpy as np
import pytest

from npcnn.data import BatchIterator


def _indexed(n, h=4, w=5):
    """Images whose first pixel is their index, labels equal to the index."""
    images = np.zeros((n, h, w), np.uint8)
    images[:, 0, 0] = np.arange(n)
    return images, np.arange(n, dtype=np.uint8)


def _order(iterator):
    return np.concatenate([y for _, y in iterator])


def test_batch_shapes_dtypes_and_scaling():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 10)
    batches = list(BatchIterator(images, labels, 4, shuffle=False))
    assert [x.shape for x, _ in batches] == [(4, 1, 28, 28)] * 2 + [(2, 1, 28, 28)]
    x, y = batches[0]
    assert x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 0], images[:4].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(y, labels[:4])
    assert x.min() >= 0.0 and x.max() <= 1.0


def test_four_dimensional_and_float_input_kept():
    images = np.random.default_rng(1).random((6, 3, 5, 5)) * 7
    x, _ = next(iter(BatchIterator(images, np.zeros(6, int), 6, shuffle=False)))
    assert x.shape == (6, 3, 5, 5)
    np.testing.assert_allclose(x, images.astype(np.float32))  # not scaled


def test_images_kept_as_uint8_without_copy():
    images, labels = _indexed(20)
    it = BatchIterator(images, labels, 5)
    assert it.images.dtype == np.uint8
    assert np.shares_memory(it.images, images)


def test_every_epoch_is_a_fresh_permutation_pairing_preserved():
    images, labels = _indexed(50)
    it = BatchIterator(images, labels, 8, rng=0)
    epochs = []
    for _ in range(3):
        seen = []
        for x, y in it:
            np.testing.assert_array_equal(x[:, 0, 0, 0] * 255, y.astype(np.float32))
            seen.append(y)
        order = np.concatenate(seen)
        assert sorted(order.tolist()) == list(range(50))
        epochs.append(order)
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])
    assert not np.array_equal(epochs[0], np.arange(50))


def test_len_and_last_batch():
    images, labels = _indexed(10)
    keep = BatchIterator(images, labels, 4)
    drop = BatchIterator(images, labels, 4, drop_last=True)
    assert len(keep) == 3 and [len(y) for _, y in keep] == [4, 4, 2]
    assert len(drop) == 2 and [len(y) for _, y in drop] == [4, 4]
    assert len(BatchIterator(images, labels, 10)) == 1
    assert len(BatchIterator(images, labels, 11, drop_last=True)) == 0


def test_shuffle_false_is_sequential():
    images, labels = _indexed(7)
    assert _order(BatchIterator(images, labels, 3, shuffle=False)).tolist() == list(range(7))


def test_seed_and_generator_are_reproducible():
    images, labels = _indexed(30)
    a = _order(BatchIterator(images, labels, 7, rng=42))
    b = _order(BatchIterator(images, labels, 7, rng=np.random.default_rng(42)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, _order(BatchIterator(images, labels, 7, rng=43)))


def test_generator_is_used_not_copied():
    gen = np.random.default_rng(5)
    images, labels = _indexed(10)
    it = BatchIterator(images, labels, 3, rng=gen)
    assert it.rng is gen
    before = gen.bit_generator.state
    list(it)
    assert gen.bit_generator.state != before


def test_state_round_trip_through_json_resumes_the_same_epoch():
    images, labels = _indexed(40)
    it = BatchIterator(images, labels, 6, rng=7)
    list(it)  # one epoch done
    state = json.loads(json.dumps(it.get_state()))
    expected = _order(it)
    resumed = BatchIterator(images, labels, 6, rng=123)
    resumed.set_state(state)
    np.testing.assert_array_equal(_order(resumed), expected)
    # get_state returns a copy: consuming an epoch does not change it.
    snapshot = it.get_state()
    list(it)
    assert snapshot != it.get_state()


@pytest.mark.parametrize(
    ("images", "labels", "batch_size"),
    [
        (np.zeros((4, 28)), np.zeros(4, int), 2),
        (np.zeros((4, 1, 2, 2, 2)), np.zeros(4, int), 2),
        (np.zeros((4, 2, 2)), np.zeros(3, int), 2),
        (np.zeros((4, 2, 2)), np.zeros((4, 1), int), 2),
        (np.zeros((4, 2, 2)), np.zeros(4), 2),
        (np.zeros((4, 2, 2)), np.zeros(4, int), 0),
        (np.zeros((4, 2, 2)), np.zeros(4, int), 2.5),
    ],
)
def test_invalid_arguments(images, labels, batch_size):
    with pytest.raises(ValueError):
        BatchIterator(images, labels, batch_size)


def test_dataset_head_keeps_the_first_examples_and_leaves_the_original():
    from npcnn.data import load_dataset

    full = load_dataset("sample")
    small = full.head(train=10, test=3)
    assert len(small.train_labels) == 10 and len(small.test_labels) == 3
    np.testing.assert_array_equal(small.train_images, full.train_images[:10])
    np.testing.assert_array_equal(small.test_labels, full.test_labels[:3])
    assert len(full.train_labels) == 2000 and small.classes == full.classes
