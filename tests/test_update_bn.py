"""Recomputing batch-norm statistics: nn.update_bn and the Trainer's bn_data option."""

from __future__ import annotations

import numpy as np
import pytest

from npcnn import nn, optim
from npcnn.data import BatchIterator
from npcnn.training import Trainer
from npcnn.training.evaluate import as_model_input
from test_training_helpers import tiny_model, toy_data


def _norms(model: nn.Sequential) -> list[nn.BatchNorm2D]:
    return [layer for layer in model if isinstance(layer, nn.BatchNorm2D | nn.BatchNorm1D)]


def test_update_bn_averages_batch_statistics_evenly():
    rng = np.random.default_rng(0)
    bn = nn.BatchNorm2D(3, momentum=0.1, dtype=np.float64)
    bn.running_mean[...] = 5.0  # stale statistics that must be discarded
    batches = [rng.normal(loc=i, scale=i + 1, size=(4, 3, 5, 5)) for i in range(3)]
    weight_before = bn.weight.data.copy()

    nn.update_bn(bn, batches)

    means = [b.mean(axis=(0, 2, 3)) for b in batches]
    unbiased = [b.var(axis=(0, 2, 3), ddof=1) for b in batches]
    np.testing.assert_allclose(bn.running_mean, np.mean(means, axis=0), rtol=1e-12)
    # running_var starts at 1 and is replaced by the even average as well.
    np.testing.assert_allclose(bn.running_var, np.mean(unbiased, axis=0), rtol=1e-12)
    assert bn.momentum == 0.1
    assert int(bn.num_batches_tracked) == 3
    np.testing.assert_array_equal(bn.weight.data, weight_before)


def test_momentum_none_is_a_cumulative_average():
    rng = np.random.default_rng(1)
    bn = nn.BatchNorm1D(4, momentum=None, dtype=np.float64)
    batches = [rng.normal(loc=3 * i, size=(8, 4)) for i in range(4)]
    for b in batches:
        bn.forward(b, training=True)
    np.testing.assert_allclose(bn.running_mean, np.mean([b.mean(0) for b in batches], 0))


def test_update_bn_matches_torch():
    torch = pytest.importorskip("torch")
    from torch.optim.swa_utils import update_bn as torch_update_bn

    rng = np.random.default_rng(2)
    model = nn.Sequential(nn.Conv2D(2, 3, 3, rng=0), nn.BatchNorm2D(3), nn.ReLU()).astype(
        np.float64
    )
    reference = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.ReLU()
    ).double()
    reference.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    batches = [rng.normal(size=(5, 2, 7, 6)) for _ in range(3)]

    nn.update_bn(model, batches)
    torch_update_bn([torch.tensor(b) for b in batches], reference)

    np.testing.assert_allclose(model[1].running_mean, reference[1].running_mean.numpy(), 1e-12)
    np.testing.assert_allclose(model[1].running_var, reference[1].running_var.numpy(), 1e-12)


def test_trainer_bn_data_leaves_statistics_of_the_final_weights():
    images, labels = toy_data(96)
    model = tiny_model(0)
    trainer = Trainer(
        model,
        nn.CrossEntropyLoss(),
        optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        bn_data=images,
        eval_batch_size=32,
    )
    trainer.fit(BatchIterator(images, labels, 32, rng=0), epochs=2, validation=(images, labels))

    expected = tiny_model(1)
    expected.load_state_dict(model.state_dict())
    nn.update_bn(expected, [as_model_input(images[i : i + 32]) for i in range(0, 96, 32)])
    for got, want in zip(_norms(model), _norms(expected), strict=True):
        np.testing.assert_allclose(got.running_mean, want.running_mean, rtol=1e-6)
        np.testing.assert_allclose(got.running_var, want.running_var, rtol=1e-6)
    # Without bn_data the running statistics are the exponential average instead.
    plain = tiny_model(0)
    Trainer(plain, nn.CrossEntropyLoss(), optim.SGD(plain.parameters(), lr=0.1, momentum=0.9)).fit(
        BatchIterator(images, labels, 32, rng=0), epochs=2
    )
    assert not np.allclose(_norms(plain)[0].running_mean, _norms(model)[0].running_mean)


def test_bn_data_whose_last_batch_is_one_image_joins_it_to_the_one_before():
    """33 images in batches of 32: the last batch, one image, has no statistics for a
    BatchNorm1D; it joins the first, and the statistics are those of all 33."""
    images, labels = toy_data(33)
    model = nn.Sequential([nn.Flatten(), nn.Dense(64, 6, rng=0), nn.BatchNorm1D(6), nn.ReLU()])
    model.add_layer("head", nn.Dense(6, 3, rng=0))
    trainer = Trainer(
        model,
        nn.CrossEntropyLoss(),
        optim.SGD(model.parameters(), lr=0.1),
        bn_data=images,
        eval_batch_size=32,
    )
    trainer.fit(BatchIterator(images, labels, 11, rng=0), epochs=1)
    expected = nn.Sequential([nn.Flatten(), nn.Dense(64, 6), nn.BatchNorm1D(6), nn.ReLU()])
    expected.add_layer("head", nn.Dense(6, 3))
    expected.load_state_dict(model.state_dict())
    nn.update_bn(expected, [as_model_input(images)])  # one batch of all 33
    np.testing.assert_allclose(model[2].running_mean, expected[2].running_mean, rtol=1e-6)
    np.testing.assert_allclose(model[2].running_var, expected[2].running_var, rtol=1e-6)
