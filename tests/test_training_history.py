"""What fit records (History) and what evaluate measures, recomputed independently."""

from __future__ import annotations

import json

import numpy as np
import pytest

from npcnn import nn, optim
from npcnn.data import BatchIterator
from npcnn.training import EPOCH_KEYS, History, Trainer, as_model_input, evaluate
from test_training_helpers import batches, make_trainer, tiny_model, toy_data, validation


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


def test_epoch_records_match_independent_computations() -> None:
    trainer = make_trainer()
    val_images, val_labels = validation()
    history = trainer.fit(batches(), 3, validation=(val_images, val_labels))

    assert [r["epoch"] for r in history.epochs] == [1, 2, 3]
    assert all(set(r) == set(EPOCH_KEYS) for r in history.epochs)
    # Validation after the last epoch, recomputed from the final weights by hand.
    x = val_images[:, None].astype(np.float32) / np.float32(255)
    logits = trainer.model.forward(x, training=False)
    last = history.epochs[-1]
    assert last["val_accuracy"] == np.mean(logits.argmax(axis=1) == val_labels)
    assert last["val_loss"] == pytest.approx(_cross_entropy(logits, val_labels), rel=1e-6)
    # 96 examples in batches of 20: the last batch has 16, so weighting matters.
    sizes = np.array([20, 20, 20, 20, 16])
    for record in history.epochs:
        steps = [s for s in history.steps if s["epoch"] == record["epoch"]]
        assert [s["step"] for s in steps] == [1, 2, 3, 4, 5]
        losses = np.array([s["loss"] for s in steps])
        accs = np.array([s["accuracy"] for s in steps])
        assert record["loss"] == pytest.approx((sizes * losses).sum() / 96, rel=1e-12)
        assert record["accuracy"] == pytest.approx((sizes * accs).sum() / 96, rel=1e-12)
        assert np.allclose(accs * sizes, np.round(accs * sizes))  # whole examples
        assert record["seconds"] > 0 and record["images_per_second"] > 0
    # StepLR(step_size=2, gamma=0.5) from 0.05: epochs 1-2 at 0.05, epoch 3 at 0.025.
    assert [r["lr"] for r in history.epochs] == [0.05, 0.05, 0.025]
    assert [s["global_step"] for s in history.steps] == list(range(1, 16))
    assert history.metric("val_accuracy")[-1] > 0.6  # the toy problem is learnable


def test_step_records_are_the_training_mode_batch_loss() -> None:
    # One full batch per epoch without dropout: the step loss equals the loss of
    # a training-mode forward with the pre-step weights.
    images, labels = toy_data(40, seed=3)
    model = nn.Sequential(nn.Flatten(), nn.BatchNorm1D(64), nn.Dense(64, 3, rng=0))
    before = nn.Sequential(nn.Flatten(), nn.BatchNorm1D(64), nn.Dense(64, 3, rng=0))
    opt = optim.SGD(model.parameters(), lr=0.5)
    history = Trainer(model, nn.CrossEntropyLoss(), opt).fit(
        BatchIterator(images, labels, 40, shuffle=False), 1
    )
    logits = before.forward(as_model_input(images), training=True)
    assert history.steps[0]["loss"] == pytest.approx(_cross_entropy(logits, labels), rel=1e-6)
    assert history.epochs[0]["val_loss"] is None and history.epochs[0]["val_accuracy"] is None


def test_validation_batches_give_the_same_numbers_as_arrays() -> None:
    val_images, val_labels = validation()
    a, b = make_trainer(), make_trainer()
    ha = a.fit(batches(), 2, validation=(val_images, val_labels))
    hb = b.fit(batches(), 2, validation=BatchIterator(val_images, val_labels, 7, rng=1))
    for ra, rb in zip(ha.epochs, hb.epochs, strict=True):
        assert ra["val_accuracy"] == rb["val_accuracy"]
        assert ra["val_loss"] == pytest.approx(rb["val_loss"], rel=1e-6)


def test_full_batch_one_step_per_epoch_as_the_notebook() -> None:
    # The notebook's experiment shape: every epoch is one step on the whole set.
    images, labels = toy_data(60, seed=4)
    model = tiny_model(1)
    lines = []
    from npcnn.training import callbacks

    trainer = Trainer(
        model,
        nn.CrossEntropyLoss(),
        optim.SGD(model.parameters(), lr=0.5),
        callbacks=[callbacks.EpochPrinter(print_fn=lines.append)],
    )
    history = trainer.fit(
        BatchIterator(images, labels, 60, shuffle=False), 5, validation=validation()
    )
    assert len(history.steps) == 5 and len(history.epochs) == 5
    assert [r["loss"] for r in history.epochs] == [s["loss"] for s in history.steps]
    assert len(lines) == 5 and all("val_acc" in line for line in lines)
    assert history.epochs[-1]["loss"] < history.epochs[0]["loss"]


def test_history_round_trips_through_json() -> None:
    history = make_trainer().fit(batches(), 2, validation=validation())
    again = History.from_dict(json.loads(json.dumps(history.to_dict())))
    assert again == history
    assert again.last == history.epochs[-1]
    with pytest.raises(KeyError):
        history.metric("nope")
    with pytest.raises(ValueError):
        History.from_dict({"epochs": 3})


def test_evaluate_scales_uint8_and_matches_a_manual_forward() -> None:
    model = tiny_model(2)
    images, labels = toy_data(50, seed=5)
    before = model.state_dict()
    result = evaluate(model, images, labels, batch_size=16)
    x = images.astype(np.float32)[:, None] / np.float32(255)
    logits = model.forward(x)
    assert result.predictions.dtype == np.int64
    assert np.array_equal(result.predictions, logits.argmax(axis=1))
    assert result.accuracy == np.mean(logits.argmax(axis=1) == labels)
    assert result.loss == pytest.approx(_cross_entropy(logits, labels), rel=1e-6)
    assert result.probabilities.shape == (50, 3)
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1, rtol=1e-6)
    # Batch size does not matter in inference mode, and nothing changed in the model.
    whole = evaluate(model, x, labels, loss_fn=nn.CrossEntropyLoss(), batch_size=500)
    assert whole.accuracy == result.accuracy
    assert whole.loss == pytest.approx(result.loss, rel=1e-6)
    for key, value in model.state_dict().items():
        assert np.array_equal(value, before[key]), key
    unlabelled = evaluate(model, images[:, None])
    assert unlabelled.loss is None and unlabelled.accuracy is None
    assert np.array_equal(unlabelled.predictions, result.predictions)


def test_evaluate_and_fit_reject_bad_arguments() -> None:
    model = tiny_model()
    images, labels = toy_data(10)
    with pytest.raises(ValueError, match="labels"):
        evaluate(model, images, labels[:5])
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(model, images, labels, batch_size=0)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        evaluate(model, images[:, None, None], labels)
    with pytest.raises(ValueError, match="epochs"):
        make_trainer().fit(batches(), -1)
    other = optim.SGD(tiny_model().parameters(), lr=0.1)
    from npcnn.training import schedules

    with pytest.raises(ValueError, match="different optimiser"):
        Trainer(
            model,
            nn.CrossEntropyLoss(),
            other,
            scheduler=schedules.StepLR(optim.SGD(model.parameters(), lr=0.1), 1),
        )
