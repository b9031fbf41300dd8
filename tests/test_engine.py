"""The engine's contracts: the reference kernels run any model (`use_reference`), fusion is a
plan that can be seen and switched off, every layer's backward takes need_input_grad,
BLAS is kept to one thread without the user's help, and step arrays keep memory order."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import npcnn
from npcnn import nn
from npcnn.models import PRESETS
from npcnn.nn import backend
from npcnn.runtime import memory

TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def _preset(name: str, rng: np.random.Generator) -> nn.Sequential:
    """A preset's network in float64, its batch norms away from gamma 1, beta 0 and
    statistics 0 and 1 (which would hide mix-ups)."""
    model = PRESETS[name].build(np.random.default_rng(0)).astype(np.float64)
    for _, layer in model.named_layers():  # (a graph preset's blocks hold its norms)
        if isinstance(layer, nn.BatchNorm1D | nn.BatchNorm2D):
            layer.weight.data[...] = rng.uniform(0.5, 2.0, layer.weight.shape)
            layer.weight.data[0] *= -1
            layer.bias.data[...] = rng.standard_normal(layer.bias.shape)
            layer.running_mean[...] = rng.standard_normal(layer.running_mean.shape)
            layer.running_var[...] = rng.uniform(0.5, 2.0, layer.running_var.shape)
    return model


def _step(model: nn.Sequential, x: np.ndarray, labels: np.ndarray, training: bool):
    """(logits, dL/dx, {parameter: gradient}, state dict) of one forward and backward."""
    loss_fn = nn.CrossEntropyLoss()
    model.zero_grad()
    with nn.inference_backward():  # training=False: the inference function's gradient
        logits = model.forward(x, training=training)
        loss_fn(logits, labels)
        dx = model.backward(loss_fn.backward())
    grads = {name: p.grad.copy() for name, p in model.named_parameters()}
    return logits, dx, grads, model.state_dict()


def _assert_same_step(ours, theirs) -> None:
    logits, dx, grads, state = ours
    np.testing.assert_allclose(logits, theirs[0], **TIGHT)
    np.testing.assert_allclose(dx, theirs[1], **TIGHT)
    assert grads.keys() == theirs[2].keys() and state.keys() == theirs[3].keys()
    for name in grads:
        np.testing.assert_allclose(grads[name], theirs[2][name], **TIGHT, err_msg=name)
    for name in state:
        np.testing.assert_allclose(state[name], theirs[3][name], **TIGHT, err_msg=name)


# --- use_reference ------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_use_reference_runs_a_preset_on_the_reference_kernels_and_agrees(
    preset: str, training: bool, rng: np.random.Generator, monkeypatch
) -> None:
    model = _preset(preset, rng)
    twin = copy.deepcopy(model)  # same weights, statistics and dropout generators
    x, labels = rng.standard_normal((4, 1, 28, 28)), rng.integers(0, 10, 4)
    calls = []
    reference_conv = backend.REFERENCE.conv2d_forward
    monkeypatch.setattr(
        backend.REFERENCE,
        "conv2d_forward",
        lambda *a, **k: calls.append("conv") or reference_conv(*a, **k),
    )
    fast = _step(model, x, labels, training)
    assert not calls
    with npcnn.use_reference():
        assert not any(step.fused for step in twin.plan())
        reference = _step(twin, x, labels, training)
    convs = [layer for _, layer in twin.named_layers() if isinstance(layer, nn.Conv2D)]
    assert calls == ["conv"] * len(convs)  # every convolution ran on the reference kernel
    _assert_same_step(fast, reference)
    assert any(step.fused for step in twin.plan())  # fused again outside the block


def test_a_backward_uses_the_kernels_of_its_forward(rng: np.random.Generator) -> None:
    conv = nn.Conv2D(2, 3, 3, rng=0, dtype=np.float64)
    twin = copy.deepcopy(conv)
    x = rng.standard_normal((2, 2, 5, 5))
    with npcnn.use_reference():
        y = conv.forward(x, training=True)
    dy = rng.standard_normal(y.shape)
    dx = conv.backward(dy)  # a reference cache, outside the block: the reference backward
    twin.forward(x, training=True)
    np.testing.assert_allclose(dx, twin.backward(dy), **TIGHT)
    np.testing.assert_allclose(conv.weight.grad, twin.weight.grad, **TIGHT)


def test_use_reference_false_changes_nothing() -> None:
    with npcnn.use_reference(False):
        assert backend.active_kernels() is backend.FAST
    with npcnn.use_reference(), nn.use_reference(False):
        assert backend.active_kernels() is backend.REFERENCE
    assert backend.active_kernels() is backend.FAST


# --- fusion: the plan, its switch, the summary ------------------------------------------


def test_the_plan_fuses_the_table_s_patterns(notebook_model) -> None:
    assert [step.name for step in notebook_model().plan()] == [
        "Conv2D",
        "BatchNorm2D+ReLU+MaxPool2D",
        "Conv2D",
        "BatchNorm2D+ReLU",
        "Flatten+Dense",
        "BatchNorm1D+ReLU",
        "Dense",
    ]
    model = nn.Sequential(nn.BatchNorm2D(2), nn.MaxPool2D(2), nn.ReLU(), nn.ReLU(), nn.MaxPool2D(2))
    assert [step.name for step in model.plan()] == ["BatchNorm2D+MaxPool2D+ReLU", "ReLU+MaxPool2D"]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_fusion_switched_off_runs_each_layer_and_agrees(preset, rng) -> None:
    model = _preset(preset, rng)
    twin = copy.deepcopy(model)
    x, labels = rng.standard_normal((4, 1, 28, 28)), rng.integers(0, 10, 4)
    fused = _step(model, x, labels, training=True)
    with nn.no_fusion():
        assert all(not step.fused for step in twin.plan())
        unfused = _step(twin, x, labels, training=True)
    _assert_same_step(fused, unfused)
    nn.set_fusion(False)
    try:
        assert all(not step.fused for step in model.plan())
    finally:
        nn.set_fusion(True)
    assert any(step.fused for step in model.plan())


def test_summary_marks_the_fused_blocks(notebook_model, capsys) -> None:
    model = notebook_model()
    rows = model.summary((1, 28, 28))
    printed = capsys.readouterr().out
    fused = [row["fused"] for row in rows[:-1]]
    assert fused[:5] == [None, *["1-3: BatchNorm2D+ReLU+MaxPool2D"] * 3, None]
    assert fused[7:11] == ["7-8: Flatten+Dense"] * 2 + ["9-10: BatchNorm1D+ReLU"] * 2
    assert "1-3: BatchNorm2D+ReLU+MaxPool2D" in printed and "Fused" in printed
    with nn.no_fusion():
        rows = model.summary((1, 28, 28))
    assert all(row["fused"] is None for row in rows[:-1])
    assert "Fused" not in capsys.readouterr().out


# --- backward(dy, need_input_grad) is every layer's contract -----------------------------


def _layers() -> list[tuple[nn.Layer, tuple[int, ...]]]:
    return [
        (nn.Conv2D(2, 3, 3, rng=0), (2, 2, 5, 5)),
        (nn.MaxPool2D(2), (2, 2, 4, 4)),
        (nn.AvgPool2D(2), (2, 2, 4, 4)),
        (nn.BatchNorm1D(3), (4, 3)),
        (nn.BatchNorm2D(2), (4, 2, 3, 3)),
        (nn.ReLU(), (2, 3)),
        (nn.LeakyReLU(), (2, 3)),
        (nn.Sigmoid(), (2, 3)),
        (nn.Tanh(), (2, 3)),
        (nn.Dropout(0.5, rng=0), (2, 3)),
        (nn.Flatten(), (2, 2, 3, 3)),
        (nn.Dense(3, 2, rng=0), (2, 3)),
        (nn.Sequential(nn.BatchNorm1D(3), nn.ReLU()), (4, 3)),
    ]


@pytest.mark.parametrize(("layer", "shape"), _layers(), ids=lambda v: type(v).__name__)
def test_every_layer_s_backward_takes_need_input_grad(layer: nn.Layer, shape, rng) -> None:
    x = rng.standard_normal(shape).astype(np.float32)
    y = layer.forward(x, training=True)
    assert layer.backward(np.ones_like(y), need_input_grad=False) is None
    layer.forward(x, training=True)
    assert layer.backward(np.ones_like(y)).shape == x.shape


class _Twice(nn.Layer):
    """y = 2 x, with a backward of its own that takes dy alone."""

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return 2 * x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return 2 * dy


def test_a_user_layer_whose_backward_takes_dy_alone_gets_the_contract(rng) -> None:
    layer = _Twice()
    dy = rng.standard_normal((3, 4))
    np.testing.assert_array_equal(layer.backward(dy), 2 * dy)
    assert layer.backward(dy, need_input_grad=False) is None
    model = nn.Sequential(_Twice(), nn.Dense(4, 2, rng=0, dtype=np.float64))
    model.forward(rng.standard_normal((3, 4)), training=True)
    assert model.backward(rng.standard_normal((3, 2)), need_input_grad=False) is None
    assert model[1].weight.grad.any()


# --- BLAS is kept to one thread inside the kernels, in any loop -----------------------------


def test_a_layer_called_on_its_own_keeps_blas_to_one_thread(monkeypatch, rng) -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from npcnn.kernels import batchnorm

    def blas_threads() -> set[int]:
        pools = threadpoolctl.threadpool_info()
        return {pool["num_threads"] for pool in pools if pool["user_api"] == "blas"}

    if not blas_threads():
        pytest.skip("no BLAS library that threadpoolctl can control")
    seen: list[set[int]] = []
    rough_centre = batchnorm.rough_centre  # a BLAS product outside the parallel loops

    def watched(*args, **kwargs):
        seen.append(blas_threads())
        return rough_centre(*args, **kwargs)

    monkeypatch.setattr(batchnorm, "rough_centre", watched)
    before = blas_threads()
    nn.BatchNorm2D(3).forward(rng.standard_normal((8, 3, 4, 4)).astype(np.float32), True)
    assert seen == [{1}] and blas_threads() == before


# --- step arrays keep any gap-free memory order ----------------------------------------------


def test_step_arrays_keep_the_memory_order_of_any_permutation() -> None:
    npcnn.empty_cache()
    x = np.empty((8, 64, 32, 32), np.float32).transpose(0, 2, 3, 1)  # NHWC view of NCHW
    before = memory.cached_bytes()
    y = memory.empty_like(x)
    assert y.shape == x.shape and y.strides == x.strides
    assert memory.cached_bytes() == before + y.nbytes  # from the step cache
    gappy = np.empty((8, 64, 32, 64), np.float32)[..., ::2]
    assert memory.empty_like(gappy).shape == gappy.shape


# --- npcnn train --reference --------------------------------------------------------------


def test_train_reference_trains_on_the_reference_kernels(tmp_path, monkeypatch, capsys) -> None:
    pytest.importorskip("matplotlib")
    from npcnn.cli.main import main

    calls = []
    reference_conv = backend.REFERENCE.conv2d_forward
    monkeypatch.setattr(
        backend.REFERENCE,
        "conv2d_forward",
        lambda *a, **k: calls.append(1) or reference_conv(*a, **k),
    )
    quick = ["--limit-train", "64", "--limit-test", "32", "--epochs", "1", "--no-progress"]
    assert main(["train", *quick, "--out", str(tmp_path / "fast")]) == 0
    assert not calls
    assert main(["train", "--reference", *quick, "--out", str(tmp_path / "reference")]) == 0
    assert calls  # the layers ran on npcnn.nn.functional
    fast, reference = (npcnn.load(tmp_path / run / "model.npz") for run in ("fast", "reference"))
    for (name, p), (_, q) in zip(
        fast.named_parameters(), reference.named_parameters(), strict=True
    ):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-4, atol=1e-5, err_msg=name)
    capsys.readouterr()


def test_a_ceil_mode_pool_is_not_fused_and_the_chain_agrees(rng: np.random.Generator) -> None:
    """The fused pooling kernels know floor-mode windows only: a ceil-mode pool runs alone."""
    layers = [nn.BatchNorm2D(2), nn.ReLU(), nn.MaxPool2D(3, 2, ceil_mode=True)]
    model = nn.Sequential(layers).astype(np.float64)
    assert [step.name for step in model.plan()] == ["BatchNorm2D+ReLU", "MaxPool2D"]
    x = rng.standard_normal((2, 2, 8, 8))
    y = model.forward(x, training=True)
    assert y.shape == (2, 2, 4, 4)
    with npcnn.use_reference():
        reference = copy.deepcopy(model).forward(x, training=True)
    np.testing.assert_allclose(y, reference, **TIGHT)
