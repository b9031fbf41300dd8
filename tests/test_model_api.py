"""The model API: Sequential, names, state dicts, dtypes, initialisation and modes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import npcnn
from npcnn import nn

NOTEBOOK_PARAMS = [
    "0.weight",
    "1.weight",
    "1.bias",
    "4.weight",
    "5.weight",
    "5.bias",
    "8.weight",
    "9.weight",
    "9.bias",
    "11.weight",
    "11.bias",
]


def test_sequential_container_protocol(rng) -> None:
    layers = [nn.Dense(3, 4, rng=rng), nn.ReLU(), nn.Dense(4, 2, rng=rng)]
    model = nn.Sequential(layers)
    assert len(model) == 3
    assert model[0] is layers[0]
    assert model[-1] is layers[2]
    assert list(model) == layers
    x = rng.standard_normal((5, 3)).astype(np.float32)
    expected = layers[2].forward(layers[1].forward(layers[0].forward(x)))
    np.testing.assert_array_equal(model.forward(x), expected)
    np.testing.assert_array_equal(model(x), expected)


def test_named_parameters_of_notebook(notebook_model) -> None:
    model = notebook_model()
    names = [name for name, _ in model.named_parameters()]
    assert names == NOTEBOOK_PARAMS
    params = model.parameters()
    assert [id(p) for p in params] == [id(p) for _, p in model.named_parameters()]
    assert all(isinstance(p, nn.Parameter) for p in params)
    assert model[0].weight.shape == (16, 1, 3, 3)
    assert model[4].weight.shape == (18, 16, 4, 4)
    assert model[8].weight.shape == (20, 3042)
    assert model[11].weight.shape == (10, 20)
    assert model[0].bias is None
    for p in params:
        assert p.grad.shape == p.data.shape
        assert p.data.dtype == np.float32


def test_state_dict_keys_and_buffers(notebook_model) -> None:
    model = notebook_model()
    state = model.state_dict()
    buffers = [
        f"{i}.{b}"
        for i in (1, 5, 9)
        for b in ("running_mean", "running_var", "num_batches_tracked")
    ]
    assert set(state) == set(NOTEBOOK_PARAMS) | set(buffers)
    assert [name for name, _ in model.named_buffers()] == buffers
    np.testing.assert_array_equal(state["1.running_mean"], np.zeros(16))
    np.testing.assert_array_equal(state["1.running_var"], np.ones(16))
    assert int(state["1.num_batches_tracked"]) == 0
    assert np.issubdtype(state["1.num_batches_tracked"].dtype, np.integer)
    # A copy: editing it leaves the model alone.
    state["0.weight"][...] = 0
    state["1.running_mean"][...] = 5
    assert np.any(model[0].weight.data != 0)
    assert not np.any(model[1].running_mean)


def test_load_state_dict_strict_and_partial(notebook_model) -> None:
    source, target = notebook_model(rng=1), notebook_model(rng=2)
    state = source.state_dict()
    target.load_state_dict(state)
    for name, value in target.state_dict().items():
        np.testing.assert_array_equal(value, state[name])
    del state["11.bias"]
    with pytest.raises(ValueError, match=r"11\.bias"):
        target.load_state_dict(state)
    with pytest.raises(ValueError, match="extra"):
        target.load_state_dict({**source.state_dict(), "extra": np.zeros(1)})
    partial = {"0.weight": np.full((16, 1, 3, 3), 0.5, dtype=np.float32)}
    target.load_state_dict(partial, strict=False)
    np.testing.assert_array_equal(target[0].weight.data, partial["0.weight"])


def test_astype_float64_converts_everything(notebook_model, rng) -> None:
    model = notebook_model()
    assert model.astype(np.float64) is model
    for name, p in model.named_parameters():
        assert p.data.dtype == np.float64, name
        assert p.grad.dtype == np.float64, name
    for name, b in model.named_buffers():
        if "num_batches" in name:
            assert np.issubdtype(b.dtype, np.integer)
        else:
            assert b.dtype == np.float64, name
    x = rng.uniform(0, 1, (2, 1, 28, 28))
    y = model.forward(x, training=True)
    assert y.dtype == np.float64
    model.backward(np.ones_like(y))
    assert all(p.grad.dtype == np.float64 for p in model.parameters())


def test_float64_model_matches_float32_model(notebook_model, rng) -> None:
    x = rng.uniform(0, 1, (2, 1, 28, 28))
    y32 = notebook_model(rng=4).forward(x.astype(np.float32))
    y64 = notebook_model(rng=4, dtype=np.float64).forward(x)
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-4)


def test_default_dtype_is_float32(notebook_model, rng) -> None:
    model = notebook_model()
    x = rng.uniform(0, 1, (2, 1, 28, 28)).astype(np.float32)
    y = model.forward(x, training=True)
    assert y.dtype == np.float32
    dx = model.backward(np.ones_like(y))
    assert dx.dtype == np.float32
    assert all(p.dtype == np.float32 for p in model.parameters())


def test_reset_parameters_is_reproducible(notebook_model) -> None:
    model = notebook_model(rng=0)
    model.reset_parameters(np.random.default_rng(42))
    first = model.state_dict()
    model.reset_parameters(np.random.default_rng(42))
    second = model.state_dict()
    model.reset_parameters(np.random.default_rng(43))
    third = model.state_dict()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    assert not np.array_equal(first["0.weight"], third["0.weight"])
    assert not np.array_equal(first["8.weight"], third["8.weight"])
    # Same seed at construction: same model.
    a, b = notebook_model(rng=9).state_dict(), notebook_model(rng=9).state_dict()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_reset_parameters_resets_batchnorm() -> None:
    bn = nn.BatchNorm2D(3)
    bn.forward(np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(np.float32), True)
    bn.weight.data[...] = 5
    bn.reset_parameters(0)
    np.testing.assert_array_equal(bn.weight.data, np.ones(3))
    np.testing.assert_array_equal(bn.bias.data, np.zeros(3))
    np.testing.assert_array_equal(bn.running_mean, np.zeros(3))
    np.testing.assert_array_equal(bn.running_var, np.ones(3))
    assert int(bn.num_batches_tracked) == 0


@pytest.mark.parametrize(
    ("layer", "fan_in"),
    [
        (nn.Conv2D(64, 128, 3, rng=0), 64 * 9),
        (nn.Conv2D(16, 300, (2, 5), rng=1), 16 * 10),
        (nn.Dense(1000, 400, rng=2), 1000),
        (nn.Conv2D(64, 512, 3, groups=8, rng=3), 8 * 9),  # fan_in = in/groups*kh*kw
        (nn.Conv2D(256, 512, 5, groups=256, rng=4), 25),  # depthwise
    ],
    ids=["conv3x3", "conv2x5", "dense", "grouped", "depthwise"],
)
def test_default_init_is_he_normal(layer: nn.Layer, fan_in: int) -> None:
    w = layer.weight.data
    expected_std = math.sqrt(2.0 / fan_in)
    assert abs(float(w.mean())) < 0.05 * expected_std
    assert float(w.std()) == pytest.approx(expected_std, rel=0.03)


def test_dropout_identity_at_inference(rng) -> None:
    layer = nn.Dropout(0.5, rng=rng)
    x = rng.standard_normal((8, 10)).astype(np.float32)
    np.testing.assert_array_equal(layer.forward(x), x)
    np.testing.assert_array_equal(layer.forward(x, training=False), x)


def test_dropout_inverted_scaling_in_training(rng) -> None:
    p = 0.3
    layer = nn.Dropout(p, rng=rng)
    x = rng.uniform(1.0, 2.0, (200, 100)).astype(np.float32)
    y = layer.forward(x, training=True)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-6)
    assert kept.mean() == pytest.approx(1 - p, abs=0.02)
    # The backward uses the same mask and scale.
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx = layer.backward(dy)
    np.testing.assert_allclose(dx, np.where(kept, dy / (1 - p), 0.0), rtol=1e-6)
    # A new forward draws a new mask.
    assert not np.array_equal(layer.forward(x, training=True) != 0, kept)


def test_dropout_is_reproducible_from_seed() -> None:
    x = np.ones((5, 20), dtype=np.float32)
    a = nn.Dropout(0.5, rng=3).forward(x, training=True)
    b = nn.Dropout(0.5, rng=3).forward(x, training=True)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [(16, 4), (6, 3, 4, 5)])
def test_batchnorm_inference_uses_running_statistics(shape, rng) -> None:
    c = shape[1]
    layer = (nn.BatchNorm1D if len(shape) == 2 else nn.BatchNorm2D)(c, eps=1e-3)
    layer.weight.data[...] = rng.uniform(0.5, 2.0, c)
    layer.bias.data[...] = rng.standard_normal(c)
    for _ in range(3):
        layer.forward((3 * rng.standard_normal(shape) + 2).astype(np.float32), training=True)
    assert np.all(layer.running_mean != 0)
    x = (3 * rng.standard_normal(shape) + 2).astype(np.float32)
    running_mean, running_var = layer.running_mean.copy(), layer.running_var.copy()
    y = layer.forward(x, training=False)
    axes = (slice(None), *(None,) * (len(shape) - 2))
    expected = (x - running_mean[axes]) / np.sqrt(running_var[axes] + 1e-3)
    expected = expected * layer.weight.data[axes] + layer.bias.data[axes]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    # Inference leaves the running statistics alone and differs from training mode.
    np.testing.assert_array_equal(layer.running_mean, running_mean)
    np.testing.assert_array_equal(layer.running_var, running_var)
    assert int(layer.num_batches_tracked) == 3
    assert not np.allclose(layer.forward(x, training=True), y, atol=1e-3)


def test_batchnorm_training_output_is_normalised(rng) -> None:
    layer = nn.BatchNorm2D(3)
    y = layer.forward((5 * rng.standard_normal((8, 3, 4, 4)) - 3).astype(np.float32), True)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, atol=1e-3)


def test_sequential_backward_without_input_grad(notebook_model, rng) -> None:
    x = rng.uniform(0, 1, (3, 1, 28, 28)).astype(np.float32)
    a, b = notebook_model(rng=5), notebook_model(rng=5)
    dy = rng.standard_normal((3, 10)).astype(np.float32)
    a.forward(x, training=True)
    dx = a.backward(dy)
    assert dx.shape == x.shape
    b.forward(x, training=True)
    assert b.backward(dy, need_input_grad=False) is None
    # Without dx, the first conv splits the batch into other chunks, so its weight
    # gradient is summed in another order: float32 rounding, up to ~1e-5 here.
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        np.testing.assert_allclose(pa.grad, pb.grad, rtol=1e-5, atol=1e-5, err_msg=name)


def test_gradients_accumulate_until_zero_grad(rng) -> None:
    model = nn.Sequential([nn.Dense(3, 4, rng=rng), nn.Tanh(), nn.Dense(4, 2, rng=rng)])
    x = rng.standard_normal((5, 3)).astype(np.float32)
    dy = rng.standard_normal((5, 2)).astype(np.float32)
    model.forward(x, training=True)
    model.backward(dy)
    once = [p.grad.copy() for p in model.parameters()]
    model.forward(x, training=True)
    model.backward(dy)
    for p, g in zip(model.parameters(), once, strict=True):
        np.testing.assert_allclose(p.grad, 2 * g, rtol=1e-5, atol=1e-7)
    model.zero_grad()
    assert all(not np.any(p.grad) for p in model.parameters())


@pytest.mark.parametrize(
    "layer",
    [
        nn.Conv2D(3, 5, (2, 3), stride=(1, 2), padding=(0, 1), bias=False),
        nn.MaxPool2D(3, stride=2, padding=1),
        nn.AvgPool2D((2, 3)),
        nn.BatchNorm1D(7, eps=1e-3, momentum=0.2),
        nn.BatchNorm2D(4),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.25),
        nn.Dense(5, 6, bias=False),
        nn.Flatten(),
    ],
    ids=repr,
)
def test_config_rebuilds_the_layer(layer: nn.Layer) -> None:
    config = layer.config()
    rebuilt = type(layer)(**config)
    assert rebuilt.config() == config
    assert [(n, p.shape) for n, p in rebuilt.named_parameters()] == [
        (n, p.shape) for n, p in layer.named_parameters()
    ]


def test_softmax_and_log_softmax(rng) -> None:
    logits = rng.standard_normal((4, 6)) * 5
    probs = nn.softmax(logits)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0)
    np.testing.assert_allclose(np.log(probs), nn.log_softmax(logits), atol=1e-12)
    manual = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, manual, rtol=1e-12)
    np.testing.assert_allclose(nn.softmax(logits, axis=0).sum(axis=0), 1.0)
    big = np.array([[1e4, 0.0, -1e4]])
    assert np.all(np.isfinite(nn.log_softmax(big)))
    np.testing.assert_allclose(nn.softmax(big), [[1.0, 0.0, 0.0]])


def test_cross_entropy_matches_manual_formula(rng) -> None:
    logits = rng.standard_normal((5, 3))
    labels = np.array([0, 2, 1, 1, 0])
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn.forward(logits, labels)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert loss == pytest.approx(-log_p[np.arange(5), labels].mean(), rel=1e-12)
    expected = np.exp(log_p)
    expected[np.arange(5), labels] -= 1
    np.testing.assert_allclose(loss_fn.backward(), expected / 5, rtol=1e-10, atol=1e-14)


def test_results_do_not_depend_on_thread_count(notebook_model, rng) -> None:
    before = npcnn.get_num_threads()
    # float64, so that summation order (threads, BLAS) cannot hide a real difference.
    x = rng.uniform(0, 1, (8, 1, 28, 28))
    dy = rng.standard_normal((8, 10))
    results = []
    try:
        for n in (1, 2):
            npcnn.set_num_threads(n)
            model = notebook_model(rng=6, dtype=np.float64)
            y = model.forward(x, training=True)
            dx = model.backward(dy)
            results.append((y, dx, [p.grad.copy() for p in model.parameters()]))
    finally:
        npcnn.set_num_threads(before)
    (y1, dx1, g1), (y2, dx2, g2) = results
    np.testing.assert_allclose(y1, y2, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx1, dx2, rtol=1e-10, atol=1e-12)
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_dropout_p_one_drops_everything() -> None:
    layer = nn.Dropout(1.0, rng=0)
    x = np.ones((3, 4), dtype=np.float32)
    y = layer.forward(x, training=True)
    assert np.all(np.isfinite(y))
    assert not np.any(y)
    assert not np.any(layer.backward(np.ones_like(x)))


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (nn.Conv2D(2, 3, 3, stride=2, padding=1, rng=0), (3, 2, 7, 6)),
        (nn.MaxPool2D(3, 2, 1), (3, 2, 7, 6)),
        (nn.AvgPool2D(2), (3, 2, 7, 6)),
        (nn.BatchNorm2D(2), (3, 2, 7, 6)),
        (nn.Flatten(), (3, 2, 7, 6)),
        (nn.Dense(6, 4, rng=0), (3, 6)),
        (nn.BatchNorm1D(6), (3, 6)),
    ],
    ids=["conv", "maxpool", "avgpool", "bn2d", "flatten", "dense", "bn1d"],
)
def test_non_contiguous_inputs_give_the_same_results(layer: nn.Layer, shape, rng) -> None:
    # A transposed view in memory, as any NumPy slicing or user code may produce.
    x_view = rng.standard_normal(shape[::-1]).astype(np.float32).T
    x = np.ascontiguousarray(x_view)
    results = []
    for inp, fortran_dy in ((x, False), (x_view, True)):
        y = layer.forward(inp, training=True)
        dy = np.random.default_rng(0).standard_normal(y.shape).astype(np.float32)
        if fortran_dy:
            dy = np.asfortranarray(dy)
        layer.zero_grad()
        dx = layer.backward(dy)
        results.append((y, dx, [p.grad.copy() for p in layer.parameters()]))
    (y1, dx1, g1), (y2, dx2, g2) = results
    np.testing.assert_allclose(y1, y2, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx1, dx2, rtol=1e-6, atol=1e-6)
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "pool",
    [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2, padding=1)],
)
@pytest.mark.parametrize("relu_first", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sequential_folds_relu_into_max_pool_with_the_same_results(
    pool, relu_first, dtype, rng
) -> None:
    """Sequential folds a ReLU next to a MaxPool2D into the pool (they commute); outputs
    and gradients must equal those of the layers run one by one in the order given."""

    def build() -> list[nn.Layer]:
        relu, max_pool = nn.ReLU(), nn.MaxPool2D(**pool)
        pair = [relu, max_pool] if relu_first else [max_pool, relu]
        return [nn.Conv2D(2, 4, 3, padding=1, rng=0, dtype=dtype), *pair]

    model, layers = nn.Sequential([*build(), nn.Flatten()]), [*build(), nn.Flatten()]
    # Ties and negative windows, where a mistake in the folding would show: a blank band.
    x = rng.standard_normal((3, 2, 9, 8)).astype(dtype)
    x[:, :, :3] = 0
    for training in (True, False):
        expected = x
        for layer in layers:
            expected = layer.forward(expected, training=training)
        out = model.forward(x, training=training)
        np.testing.assert_array_equal(out, expected)
    dy = rng.standard_normal(out.shape).astype(dtype)
    model.forward(x, training=True)
    relu = model[1] if relu_first else model[2]
    assert relu._cache is None  # folded into the pool, never run on its own
    dx = model.backward(dy)
    expected_dx = x
    for layer in layers:
        expected_dx = layer.forward(expected_dx, training=True)
    expected_dx = dy
    for layer in reversed(layers):
        expected_dx = layer.backward(expected_dx)
    np.testing.assert_array_equal(dx, expected_dx)
    np.testing.assert_array_equal(model[0].weight.grad, layers[0].weight.grad)


def _run_layers(layers: list[nn.Layer], x: np.ndarray, dy: np.ndarray, training: bool = True):
    """Output, input gradient and parameter gradients of `layers` run one by one."""
    out = x
    for layer in layers:
        out = layer.forward(out, training=training)
    dx = dy
    for layer in reversed(layers):
        dx = layer.backward(dx)
    return out, dx, [p.grad.copy() for layer in layers for p in layer.parameters()]


def _assert_fused_like_layers(model, layers, x, out, dx, dy, exact_output: bool) -> None:
    """A fused model's training output, gradients and running statistics against the layers
    run one by one (float64: other summation orders show only at 1e-10), and its inference
    output bit for bit."""
    expected, expected_dx, expected_grads = _run_layers(layers, x, dy)
    if exact_output:
        np.testing.assert_array_equal(out, expected)
    else:
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-10, atol=1e-12)
    for p, q in zip(model.parameters(), expected_grads, strict=True):
        np.testing.assert_allclose(p.grad, q, rtol=1e-10, atol=1e-12)
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(getattr(model[0], name), getattr(layers[0], name), rtol=1e-12)
    np.testing.assert_array_equal(model.forward(x), _run_layers(layers, x, dy, training=False)[0])


@pytest.mark.parametrize(
    "pool, size",
    [
        (dict(kernel_size=2), (8, 10)),
        (dict(kernel_size=2), (9, 7)),  # rows and columns no window covers
        (dict(kernel_size=3, stride=2, padding=1), (9, 8)),  # overlapping, padded
        (dict(kernel_size=2, padding=1), (8, 8)),
    ],
)
@pytest.mark.parametrize("relu_first", [True, False])
def test_sequential_fuses_batch_norm_relu_and_max_pool(pool, size, relu_first, rng) -> None:
    """BatchNorm2D, ReLU and MaxPool2D run as one pass when training (nn/fused.py). The
    output must equal the layers' one by one, gradients and running statistics too (float64,
    so that other summation orders show only at 1e-12), with a negative weight (the pool
    then looks for minima), ties (integer inputs) and windows the ReLU blocks."""

    def build() -> list[nn.Layer]:
        norm, relu, max_pool = nn.BatchNorm2D(3, dtype=np.float64), nn.ReLU(), nn.MaxPool2D(**pool)
        norm.weight.data[...] = [1.5, -0.7, 0.3]
        norm.bias.data[...] = [0.1, -0.2, -1.0]
        return [norm, relu, max_pool] if relu_first else [norm, max_pool, relu]

    model, layers = nn.Sequential(build()), build()
    x = rng.integers(-3, 4, size=(4, 3, *size)).astype(np.float64)
    x[:, 1] += 100.0  # a channel whose mean is far from 0
    out = model.forward(x, training=True)
    assert model[0]._cache is None  # the fused pass ran, not batch norm on its own
    assert (out == 0).any() and (out > 0).any()
    dy = rng.standard_normal(out.shape)
    dx = model.backward(dy)
    _assert_fused_like_layers(model, layers, x, out, dx, dy, exact_output=False)


@pytest.mark.parametrize(
    "norm_type, shape", [(nn.BatchNorm2D, (4, 3, 5, 6)), (nn.BatchNorm1D, (9, 3))]
)
def test_sequential_fuses_batch_norm_and_relu(norm_type, shape, rng) -> None:
    """Batch norm then ReLU run as one pass when training (nn/fused.py, NormReLU): output,
    gradients and running statistics must be the layers' one by one (float64)."""

    def build() -> list[nn.Layer]:
        norm = norm_type(3, dtype=np.float64)
        norm.weight.data[...] = [1.5, -0.7, 0.3]
        norm.bias.data[...] = [0.1, -0.2, -1.0]
        return [norm, nn.ReLU()]

    model, layers = nn.Sequential(build()), build()
    x = rng.standard_normal(shape) * 2 + 50  # a mean far from 0
    out = model.forward(x, training=True)
    assert model[0]._cache is None and model[1]._cache is None  # fused, not run on their own
    assert (out == 0).any() and (out > 0).any()
    dy = rng.standard_normal(out.shape)
    dx = model.backward(dy)
    _assert_fused_like_layers(model, layers, x, out, dx, dy, exact_output=True)


def test_fused_batch_norm_relu_pool_leaves_a_zero_weight_to_the_layers(rng) -> None:
    """With a weight of 0 every normalised value of its channel ties; the layers one by one
    send the gradient to each window's first position, and so must the fused pass."""

    def build() -> list[nn.Layer]:
        norm = nn.BatchNorm2D(2, dtype=np.float64)
        norm.weight.data[...] = [0.0, 1.0]
        norm.bias.data[...] = 0.5
        return [norm, nn.ReLU(), nn.MaxPool2D(2)]

    model, layers = nn.Sequential(build()), build()
    x = rng.standard_normal((3, 2, 6, 6))
    out = model.forward(x, training=True)
    dy = rng.standard_normal(out.shape)
    dx = model.backward(dy)
    expected, expected_dx, expected_grads = _run_layers(layers, x, dy)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(dx, expected_dx)
    for p, q in zip(model.parameters(), expected_grads, strict=True):
        np.testing.assert_array_equal(p.grad, q)
    # Inference runs fused: every z of the zero-weight channel is the same value.
    np.testing.assert_array_equal(model.forward(x), _run_layers(layers, x, dy, False)[0])


@pytest.mark.parametrize("pool", [[nn.MaxPool2D(2)], []])
def test_fused_blocks_differentiate_inference_like_the_layers(pool, rng) -> None:
    """Under inference_backward (saliency maps), the fused blocks leave the work to the
    layers, which differentiate batch norm with its running statistics."""

    def build() -> list[nn.Layer]:
        norm = nn.BatchNorm2D(2, dtype=np.float64)
        norm.running_mean[...] = [0.5, -0.3]
        norm.running_var[...] = [2.0, 0.5]
        norm.weight.data[...] = [-1.5, 0.8]
        return [norm, nn.ReLU(), *pool]

    model, layers = nn.Sequential(build()), build()
    x = rng.standard_normal((3, 2, 6, 6))
    with nn.inference_backward():
        out = model.forward(x)
        dy = rng.standard_normal(out.shape)
        dx = model.backward(dy)
        expected, expected_dx, expected_grads = _run_layers(layers, x, dy, training=False)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(dx, expected_dx)
    for p, q in zip(model.parameters(), expected_grads, strict=True):
        np.testing.assert_array_equal(p.grad, q)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_batch_norm_relu_pool_matches_torch(dtype, rng) -> None:
    torch = pytest.importorskip("torch")
    model = nn.Sequential(nn.BatchNorm2D(4, dtype=dtype), nn.ReLU(), nn.MaxPool2D(2))
    model[0].weight.data[...] = [1.0, -2.0, 0.5, 3.0]
    ref = torch.nn.Sequential(torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
    ref = ref.to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        ref[0].weight.copy_(torch.from_numpy(model[0].weight.data))
    x = (rng.standard_normal((8, 4, 12, 12)) * 3 + 2).astype(dtype)
    out = model.forward(x, training=True)
    dy = rng.standard_normal(out.shape).astype(dtype)
    dx = model.backward(dy)
    xt = torch.from_numpy(x).requires_grad_()
    ref_out = ref(xt)
    ref_out.backward(torch.from_numpy(dy))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, ref_out.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(model[0].weight.grad, ref[0].weight.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(model[0].bias.grad, ref[0].bias.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(model[0].running_var, ref[0].running_var.numpy(), rtol=tol)


@pytest.mark.parametrize("channels", [1, 3])
def test_sequential_feeds_channels_last_images_to_dense_without_flattening(channels, rng) -> None:
    """Flatten -> Dense after a conv: Dense takes the channels-last images as they lie and
    reorders its weight's columns instead; the results must be those of the layers run
    one by one (float64, so that the other summation order shows only at 1e-12)."""

    def build() -> list[nn.Layer]:
        return [
            nn.Conv2D(channels, 4, 3, padding=1, rng=0, dtype=np.float64),
            nn.Flatten(),
            nn.Dense(4 * 5 * 6, 3, rng=1, dtype=np.float64),
        ]

    model, layers = nn.Sequential(build()), build()
    x = rng.standard_normal((2, channels, 5, 6))
    out = model.forward(x, training=True)
    step = model.plan()[1]  # Flatten and Dense, run by one fused kernel
    assert step.layers == (model[1], model[2])
    expected = x
    for layer in layers:
        expected = layer.forward(expected, training=True)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(out.shape)
    dx, expected_dx = model.backward(dy), dy
    for layer in reversed(layers):
        expected_dx = layer.backward(expected_dx)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-12, atol=1e-12)
    for (name, p), q in zip(
        model.named_parameters(), [p for lay in layers for p in lay.parameters()], strict=True
    ):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-12, atol=1e-12, err_msg=name)
    # The fused step took the images as they lie: it hands back a channels-last gradient.
    assert step.backward(dy).transpose(0, 2, 3, 1).flags.c_contiguous
    assert layers[1].forward(layers[0].forward(x)).flags.c_contiguous  # Flatten alone copies
    # Images not in channels-last memory (or of one channel) go through Flatten as usual.
    plain = nn.Sequential([nn.Flatten(), nn.Dense(channels * 5 * 6, 3, rng=1, dtype=np.float64)])
    plain.forward(x, training=True)
    dx_plain = plain.backward(np.ones((2, 3)))
    assert dx_plain.shape == x.shape and dx_plain.flags.c_contiguous  # Flatten's reshape
    plain.forward(x, training=True)
    assert plain.backward(np.ones((2, 3)), need_input_grad=False) is None


def test_max_pool_with_256_offsets_and_a_folded_relu(rng) -> None:
    # 16x16 windows: offsets 0..255 plus the folded ReLU's "no winner" need two bytes.
    x = rng.standard_normal((2, 3, 16, 16))
    x[0, 0] -= 10  # a window whose maximum is negative: no gradient through the ReLU
    model = nn.Sequential([nn.MaxPool2D(16), nn.ReLU()])
    layers = [nn.MaxPool2D(16), nn.ReLU()]
    out = model.forward(x, training=True)
    expected = layers[1].forward(layers[0].forward(x, training=True), training=True)
    np.testing.assert_array_equal(out, expected)
    dy = rng.standard_normal(out.shape)
    np.testing.assert_array_equal(model.backward(dy), layers[0].backward(layers[1].backward(dy)))
    assert not model.backward(dy)[0, 0].any()


# --- the contracts for a layer of one's own ---------------------------------------------


def _readme_example(heading: str) -> str:
    """The first Python block after `heading` in README.md."""
    text = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = text[text.index(f"\n{heading}\n") :]
    return section.split("```python\n", 1)[1].split("\n```", 1)[0]


def test_the_readme_example_of_a_layer_of_ones_own_runs(tmp_path, monkeypatch, capsys) -> None:
    code = _readme_example("## Writing your own layer")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    try:
        exec(compile(code, "README.md", "exec"), namespace)  # its asserts must hold
    finally:
        for name in ("Scale", "Residual"):
            nn.LAYERS.pop(name, None)
    printed = capsys.readouterr().out.strip()
    promised = [line[2:] for line in code.splitlines() if line.startswith("# [")]
    assert [printed] == promised
    assert (tmp_path / "custom.npz").is_file()
    model = namespace["model"]
    assert [name for name, _ in model.named_buffers()] == ["1.block.1.shift"]


class _Affine(nn.Layer):
    """y = x * scale + offset, for the registration tests."""

    def __init__(self, n: int = 2) -> None:
        super().__init__()
        self.n = n
        self.scale = nn.Parameter(np.full(n, 2.0, dtype=np.float32))
        self.register_buffer("offset", np.arange(n, dtype=np.float32))
        self.inner = nn.Dense(n, n, rng=0)
        self.cache = None

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return self.inner.forward(x * self.scale.data + self.offset, training)

    def config(self) -> dict:
        return {"n": self.n}


def test_assignment_and_register_calls_register_in_order() -> None:
    layer = _Affine()
    assert [n for n, _ in layer.named_parameters()] == ["scale", "inner.weight", "inner.bias"]
    assert [n for n, _ in layer.named_parameters(recurse=False)] == ["scale"]
    assert [n for n, _ in layer.named_buffers()] == ["offset"]
    assert list(layer.named_children()) == [("inner", layer.inner)]
    assert list(layer.children()) == [layer.inner]
    model = nn.Sequential(nn.ReLU(), layer)
    assert [(name, type(m).__name__) for name, m in model.named_layers()] == [
        ("", "Sequential"),
        ("0", "ReLU"),
        ("1", "_Affine"),
        ("1.inner", "Dense"),
    ]
    assert set(model.state_dict()) == {"1.scale", "1.offset", "1.inner.weight", "1.inner.bias"}
    model.astype(np.float64)
    assert layer.offset.dtype == np.float64 and layer.inner.weight.dtype == np.float64
    # A buffer replaced by assignment stays the buffer; None removes a parameter or child.
    layer.offset = np.ones(2)
    np.testing.assert_array_equal(model.state_dict()["1.offset"], np.ones(2))
    layer.scale = None
    layer.inner = None
    assert [n for n, _ in model.named_parameters()] == []
    layer.extra = nn.Parameter(np.zeros(1))
    layer.add_layer("tail", nn.Dense(1, 1, rng=0))
    assert [n for n, _ in layer.named_parameters()] == ["extra", "tail.weight", "tail.bias"]
    del layer.extra
    assert [n for n, _ in layer.named_parameters()] == ["tail.weight", "tail.bias"]


def test_registration_mistakes_are_explained() -> None:
    layer = _Affine()
    with pytest.raises(TypeError, match=r"parameter 'scale'.*Parameter"):
        layer.scale = np.zeros(2)
    with pytest.raises(TypeError, match="buffer 'offset'"):
        layer.offset = [1, 2]
    with pytest.raises(TypeError, match="layer 'inner'"):
        layer.inner = "dense"
    with pytest.raises(TypeError, match="numpy array"):
        layer.register_buffer("b", [1.0])
    with pytest.raises(ValueError, match=r"without '\.'"):
        layer.register_parameter("a.b", nn.Parameter(np.zeros(1)))
    with pytest.raises(ValueError, match="'forward'"):
        layer.add_layer("forward", nn.ReLU())

    class Forgetful(nn.Layer):
        def __init__(self) -> None:
            self.w = nn.Parameter(np.zeros(1))

    with pytest.raises(AttributeError, match=r"super\(\).__init__\(\)"):
        Forgetful()


def test_a_registered_layer_of_ones_own_saves_and_loads(tmp_path) -> None:
    model = nn.Sequential(nn.Dense(3, 2, rng=1), _Affine())
    model[1].offset[...] = [5.0, -1.0]
    path = tmp_path / "own.npz"
    with pytest.raises(ValueError, match=r"cannot save: layer type '_Affine' \(layer '1'\) is not"):
        npcnn.save(model, path)  # a file that could not be loaded back
    assert not path.exists()
    nn.register_layer(_Affine)
    npcnn.save(model, path)
    del nn.LAYERS["_Affine"]  # a process that has not registered the class
    with pytest.raises(ValueError, match=r"unknown layer type '_Affine' \(layer '1'\): register"):
        npcnn.load(path)
    nn.register_layer(_Affine)
    try:
        loaded = npcnn.load(path)
    finally:
        del nn.LAYERS["_Affine"]
    assert type(loaded[1]) is _Affine
    x = np.ones((2, 3), dtype=np.float32)
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))
    np.testing.assert_array_equal(loaded[1].offset, [5.0, -1.0])


def test_register_layer_under_a_name_and_refuses_a_taken_one(tmp_path) -> None:
    class Dense(nn.Layer):  # a user's class with a built-in's name
        pass

    with pytest.raises(ValueError, match="already registered"):
        nn.register_layer(Dense)
    nn.register_layer(name="mine.Dense")(Dense)
    try:
        assert npcnn.serialization.layer_spec(Dense())["type"] == "mine.Dense"
        npcnn.save(nn.Sequential(Dense()), tmp_path / "m.npz")
        assert type(npcnn.load(tmp_path / "m.npz")[0]) is Dense
    finally:
        del nn.LAYERS["mine.Dense"]
    with pytest.raises(TypeError):
        nn.register_layer(int)


class _Twice(nn.Layer):
    """A container of one's own, given its child: y = layer(layer(x)); its config holds
    the child's description, so it overrides from_config."""

    def __init__(self, layer: nn.Layer) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return self.layer.forward(self.layer.forward(x, training), training)

    def config(self) -> dict:
        return {"layer": npcnn.serialization.layer_spec(self.layer)}

    @classmethod
    def from_config(cls, config) -> _Twice:
        return cls(npcnn.serialization.build_layer(config["layer"], "layer"))


def test_save_refuses_what_load_could_not_rebuild(tmp_path) -> None:
    class NoConfig(nn.Layer):
        def __init__(self, features: int) -> None:
            super().__init__()
            self.features = features

    nn.register_layer(NoConfig)
    try:
        with pytest.raises(ValueError, match=r"NoConfig.*config\(\) does not fit its constructor"):
            npcnn.save(nn.Sequential(NoConfig(3)), tmp_path / "m.npz")
        deep: nn.Layer = nn.Dense(2, 2)
        for _ in range(70):
            deep = nn.Sequential(deep)
        with pytest.raises(ValueError, match="nest more than 64 deep"):
            npcnn.save(deep, tmp_path / "deep.npz")
    finally:
        del nn.LAYERS["NoConfig"]
    assert not list(tmp_path.iterdir())


def test_a_container_of_ones_own_rebuilds_its_children(tmp_path) -> None:
    nn.register_layer(_Twice)
    try:
        model = _Twice(nn.Dense(2, 2, rng=3))
        npcnn.save(model, tmp_path / "twice.npz")
        loaded = npcnn.load(tmp_path / "twice.npz")
    finally:
        del nn.LAYERS["_Twice"]
    x = np.ones((1, 2), dtype=np.float32)
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))
    assert [n for n, _ in loaded.named_parameters()] == ["layer.weight", "layer.bias"]


class _PairWithoutNames(nn.Layer):
    """A container whose from_config builds its children without their names."""

    def __init__(self, a: nn.Layer, b: nn.Layer) -> None:
        super().__init__()
        self.b0, self.b1 = a, b

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return self.b1.forward(self.b0.forward(x, training), training)

    def config(self) -> dict:
        return {
            "a": npcnn.serialization.layer_spec(self.b0),
            "b": npcnn.serialization.layer_spec(self.b1),
        }

    @classmethod
    def from_config(cls, config) -> _PairWithoutNames:
        build = npcnn.serialization.build_layer
        return cls(build(config["a"]), build(config["b"]))


def test_a_container_that_builds_children_without_names_loads(tmp_path) -> None:
    nn.register_layer(_PairWithoutNames)
    try:
        model = nn.Sequential(
            nn.Dense(3, 4, rng=0), _PairWithoutNames(nn.Dense(4, 4, rng=1), nn.Dense(4, 2, rng=2))
        )
        loaded = npcnn.load(npcnn.save(model, tmp_path / "pair.npz"))
    finally:
        del nn.LAYERS["_PairWithoutNames"]
    x = np.ones((2, 3), dtype=np.float32)
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


@pytest.mark.parametrize("groups", [0, -1, 2, 4])
def test_conv_groups_must_divide_both_channel_counts(groups: int) -> None:
    with pytest.raises(ValueError, match=f"groups={groups} must be >= 1 and divide"):
        nn.Conv2D(6, 9, 3, groups=groups)


def test_conv_config_without_groups_is_an_ordinary_conv() -> None:
    config = nn.Conv2D(4, 6, 3, groups=2).config()
    assert config["groups"] == 2
    assert nn.Conv2D.state_shapes(config)["weight"] == (6, 2, 3, 3)
    del config["groups"]  # a file written before groups existed
    assert nn.Conv2D.state_shapes(config)["weight"] == (6, 4, 3, 3)
    assert nn.Conv2D.from_config(config).weight.shape == (6, 4, 3, 3)


def _look_at_by_summary(model: nn.Layer, tmp_path: Path) -> None:
    model.summary((1, 28, 28), print_fn=None)


def _look_at_by_export(model: nn.Layer, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    import npcnn.onnx

    npcnn.onnx.export(model, tmp_path / "m.onnx")


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("preset", ["notebook", "resnet"])
@pytest.mark.parametrize("look", [_look_at_by_summary, _look_at_by_export])
def test_looking_at_a_model_between_forward_and_backward_changes_no_gradient(
    preset, look, fused, tmp_path, rng
) -> None:
    # summary() and export run an inference forward, which on its own drops the
    # caches of the training forward before it (fused steps' too), and runs fused
    # steps: other steps than those of a training pass without fusion.
    import contextlib

    from npcnn.models import PRESETS

    mode = contextlib.nullcontext if fused else nn.no_fusion
    x = rng.random((4, 1, 28, 28), dtype=np.float32)
    grads = []
    for looked in (False, True):
        model = PRESETS[preset].model(seed=0)
        with mode():
            y = model.forward(x, training=True)
        if looked:
            look(model, tmp_path)
        with mode():
            dx = model.backward(np.ones_like(y))
        grads.append([dx] + [p.grad for p in model.parameters()])
    for plain, after_look in zip(*grads, strict=True):
        np.testing.assert_array_equal(after_look, plain)
