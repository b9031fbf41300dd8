"""Shared fixtures: a seeded generator and a builder for the notebook network."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from npcnn import nn

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark_module(name: str) -> ModuleType:
    """Import benchmarks/<name>.py (benchmarks/ is not a package), once, by file path;
    the sibling modules it imports (``processes``, ``torch_twins``) are found as when
    the benchmark runs as a script."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def build_notebook_model(
    rng: np.random.Generator | int | None = 0, dtype: np.typing.DTypeLike = np.float32
) -> nn.Sequential:
    """The network of the original notebook, for (N, 1, 28, 28) inputs and 10 classes.

    28x28 -> conv3 pad1 -> 16x28x28 -> pool2 -> 16x14x14 -> conv4 pad1 -> 18x13x13
    -> flatten 3042 -> 20 -> 10.
    """
    rng = np.random.default_rng(rng)
    model = nn.Sequential(
        [
            nn.Conv2D(1, 16, 3, padding=1, bias=False, rng=rng),
            nn.BatchNorm2D(16),
            nn.ReLU(),
            nn.MaxPool2D(2),
            nn.Conv2D(16, 18, 4, padding=1, bias=False, rng=rng),
            nn.BatchNorm2D(18),
            nn.ReLU(),
            nn.Flatten(),
            nn.Dense(18 * 13 * 13, 20, bias=False, rng=rng),
            nn.BatchNorm1D(20),
            nn.ReLU(),
            nn.Dense(20, 10, rng=rng),
        ]
    )
    return model.astype(dtype)


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh generator with a fixed seed, so that every test is reproducible."""
    return np.random.default_rng(1234)


@pytest.fixture
def notebook_model() -> Callable[..., nn.Sequential]:
    """The builder `build_notebook_model(rng=0, dtype=np.float32)`."""
    return build_notebook_model


def randomise_batch_norms(
    model: nn.Layer, rng: np.random.Generator, batches_tracked: bool = False
) -> nn.Layer:
    """Every batch norm away from gamma 1, beta 0 and running statistics 0 and 1 (which
    hide mix-ups), and with `batches_tracked` a drawn num_batches_tracked; returns model."""
    for _, layer in model.named_layers():
        if isinstance(layer, nn.BatchNorm1D | nn.BatchNorm2D):
            layer.weight.data[...] = rng.uniform(0.5, 2, layer.weight.shape)
            layer.bias.data[...] = rng.standard_normal(layer.bias.shape)
            layer.running_mean[...] = rng.standard_normal(layer.running_mean.shape)
            layer.running_var[...] = rng.uniform(0.5, 2, layer.running_var.shape)
            if batches_tracked:
                layer.num_batches_tracked[...] = rng.integers(1, 100)
    return model
