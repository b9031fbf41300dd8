"""Model presets (npcnn.models): architectures, initialisation and recipes."""

from __future__ import annotations

import numpy as np
import pytest

from npcnn import nn
from npcnn.models import DEFAULT_PRESET, PRESETS, Recipe, get_preset


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_a_seeded_classifier(name: str) -> None:
    preset = get_preset(name)
    x = np.random.default_rng(1).random((3, *preset.input_shape), dtype=np.float32)
    a, b, c = preset.model(seed=5), preset.model(seed=5), preset.model(seed=6)
    out = a.forward(x)
    assert out.shape == (3, 10) and out.dtype == np.float32
    for (name_a, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        np.testing.assert_array_equal(pa.data, pb.data, err_msg=name_a)
    weights = [p.data for p in a.parameters() if p.data.ndim > 1]
    others = [p.data for p in c.parameters() if p.data.ndim > 1]
    assert any(not np.array_equal(u, v) for u, v in zip(weights, others, strict=True))
    assert preset.build(np.random.default_rng(0), 7).forward(x).shape == (3, 7)


def test_notebook_preset_is_the_notebooks_network_and_recipe() -> None:
    preset = get_preset("notebook")
    model = preset.model(seed=0)
    types = [type(layer).__name__ for layer in model]
    assert types == [
        "Conv2D", "BatchNorm2D", "ReLU", "MaxPool2D",
        "Conv2D", "BatchNorm2D", "ReLU", "Flatten",
        "Dense", "BatchNorm1D", "ReLU", "Dense",
    ]  # fmt: skip
    shapes = {name: p.shape for name, p in model.named_parameters()}
    assert shapes["0.weight"] == (16, 1, 3, 3) and shapes["4.weight"] == (18, 16, 4, 4)
    assert shapes["8.weight"] == (20, 3042) and shapes["11.weight"] == (10, 20)
    # no bias on the convolutions and the first dense layer; the last bias starts at 0
    assert "0.bias" not in shapes and "4.bias" not in shapes and "8.bias" not in shapes
    np.testing.assert_array_equal(model[11].bias.data, 0.0)
    # N(0, 0.1^2) weights everywhere, BN gamma 1 and beta 0
    big = model[8].weight.data
    assert abs(big.mean()) < 0.005 and big.std() == pytest.approx(0.1, rel=0.02)
    for i in (0, 4, 11):
        assert model[i].weight.data.std() == pytest.approx(0.1, rel=0.35)
    for i in (1, 5, 9):
        np.testing.assert_array_equal(model[i].weight.data, 1.0)
        np.testing.assert_array_equal(model[i].bias.data, 0.0)
    recipe = preset.recipe
    assert (recipe.optimizer, recipe.lr, recipe.momentum, recipe.epochs) == ("sgd", 0.5, 0.0, 50)
    assert recipe.batch_size is None  # full batch
    assert (recipe.train_limit, recipe.test_limit) == (1000, 1000)
    assert recipe.recompute_bn and not get_preset("small").recipe.recompute_bn


def test_default_and_strong_presets() -> None:
    assert DEFAULT_PRESET == "small" and get_preset("small").recipe.optimizer == "adam"
    strong = get_preset("strong")
    assert any(isinstance(layer, nn.Dropout) for layer in strong.model())
    assert strong.recipe.schedule == "cosine" and strong.recipe.augment == "flip"
    assert get_preset("small").recipe.augment == get_preset("notebook").recipe.augment == "none"


def test_unknown_preset_and_bad_recipes() -> None:
    with pytest.raises(ValueError, match=r"unknown preset 'huge'.*small"):
        get_preset("huge")
    with pytest.raises(ValueError, match="optimizer"):
        Recipe(optimizer="rmsprop")
    with pytest.raises(ValueError, match="schedule"):
        Recipe(schedule="linear")
    with pytest.raises(ValueError, match="augment"):
        Recipe(augment="rotate")
