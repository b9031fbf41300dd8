"""Training-batch augmentation (npcnn/data/augment.py) and its use by BatchIterator."""

from __future__ import annotations

import numpy as np
import pytest

from npcnn.data import BatchIterator, random_crop, random_flip, random_flip_and_crop
from npcnn.models import AUGMENTATIONS, Recipe


def images(n: int = 40) -> np.ndarray:
    # Asymmetric images: every one differs from its mirror image.
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 6, 5), dtype=np.uint8)


def test_random_flip_mirrors_exactly_the_images_it_draws():
    x = np.random.default_rng(1).random((50, 2, 4, 3)).astype(np.float32)
    expected_flips = np.random.default_rng(7).random(50) < 0.5
    out = random_flip(x.copy(), np.random.default_rng(7))
    np.testing.assert_array_equal(out[expected_flips], x[expected_flips, :, :, ::-1])
    np.testing.assert_array_equal(out[~expected_flips], x[~expected_flips])
    assert 0 < expected_flips.sum() < 50


def test_random_flip_probability_zero_and_one():
    x = np.random.default_rng(1).random((8, 1, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(random_flip(x.copy(), np.random.default_rng(0), p=0.0), x)
    np.testing.assert_array_equal(
        random_flip(x.copy(), np.random.default_rng(0), p=1.0), x[..., ::-1]
    )


def test_random_crop_cuts_the_drawn_window_of_the_zero_padded_image():
    x = np.random.default_rng(1).random((30, 2, 5, 4)).astype(np.float32)
    offsets = np.random.default_rng(3).integers(0, 5, size=(30, 2))
    out = random_crop(x.copy(), np.random.default_rng(3), padding=2)
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    for k, (i, j) in enumerate(offsets):
        np.testing.assert_array_equal(out[k], padded[k, :, i : i + 5, j : j + 4])
    assert len({(int(i), int(j)) for i, j in offsets}) > 5  # offsets vary per image
    centred = (offsets == 2).all(axis=1)
    np.testing.assert_array_equal(out[centred], x[centred])  # offset (2, 2): unchanged


def test_flip_and_crop_draws_the_flips_first():
    x = np.random.default_rng(2).random((20, 1, 6, 6)).astype(np.float32)
    rng = np.random.default_rng(9)
    expected = random_crop(random_flip(x.copy(), rng), rng)
    np.testing.assert_array_equal(
        random_flip_and_crop(x.copy(), np.random.default_rng(9)), expected
    )


def test_augmentations_by_name():
    assert AUGMENTATIONS == ("none", "flip", "crop", "flip-crop")
    assert Recipe(augment="none").make_augmentation() is None
    assert Recipe(augment="flip").make_augmentation() is random_flip
    assert Recipe(augment="crop").make_augmentation() is random_crop
    assert Recipe(augment="flip-crop").make_augmentation() is random_flip_and_crop
    with pytest.raises(ValueError, match="augment must be one of"):
        Recipe(augment="rotate")


def test_batch_iterator_augments_with_its_own_generator_reproducibly():
    x, y = images(), np.arange(40)
    plain = list(BatchIterator(x, y, 16, rng=3))
    flipped = list(BatchIterator(x, y, 16, rng=3, augment=random_flip))
    again = list(BatchIterator(x, y, 16, rng=3, augment=random_flip))
    for (xp, yp), (xf, yf), (xa, _) in zip(plain, flipped, again, strict=True):
        np.testing.assert_array_equal(yp, yf)  # the same examples, labels untouched
        np.testing.assert_array_equal(xf, xa)  # the same seed, the same flips
        same = (xf == xp).all(axis=(1, 2, 3))
        mirrored = (xf == xp[..., ::-1]).all(axis=(1, 2, 3))
        assert np.all(same | mirrored)
    assert any(((xf != xp).any()) for (xp, _), (xf, _) in zip(plain, flipped, strict=True))


def test_a_restored_state_replays_the_same_augmented_epoch():
    x, y = images(), np.arange(40)
    batches = BatchIterator(x, y, 16, rng=5, augment=random_flip)
    list(batches)  # one epoch: shuffling and flips both advance the generator
    state = batches.get_state()
    second = list(batches)
    replay = BatchIterator(x, y, 16, rng=0, augment=random_flip)
    replay.set_state(state)
    for (x1, y1), (x2, y2) in zip(second, replay, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
