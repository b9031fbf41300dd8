"""The reference kernels (`npcnn.nn.functional`): against the loops of reference.py, against
centred finite differences, against PyTorch, and the fast layers held to them.

Tolerances: kernel vs loops and layer vs kernel, in float64, rtol=1e-10 with
atol=1e-12 (all values here are of order 1); finite differences, relative
error (||a - b|| / max(||a||, ||b||)) below 1e-6.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest

import reference as ref
from npcnn import nn
from npcnn.models import PRESETS
from npcnn.nn import functional as F

TIGHT = {"rtol": 1e-10, "atol": 1e-12}
FD_TOLERANCE = 1e-6

# (N, C, H, W, out_channels, kernel, stride, padding)
CONV_CONFIGS = [
    (2, 3, 5, 5, 4, 3, 1, 0),
    (2, 3, 5, 5, 4, 3, 1, 1),
    (1, 2, 7, 6, 3, 3, 2, 1),
    (2, 1, 8, 8, 2, 3, 3, 2),
    (1, 2, 6, 9, 3, (2, 3), (1, 2), (0, 1)),
    (2, 3, 7, 5, 2, (3, 1), (2, 1), (1, 0)),
    (1, 4, 9, 7, 5, (4, 2), (3, 2), (2, 1)),
    (3, 2, 5, 7, 2, 1, 1, 0),
]

# (N, C, H, W, kernel, stride, padding): overlapping, padded, odd and non-square windows
POOL_CONFIGS = [
    (2, 3, 6, 6, 2, None, 0),
    (2, 2, 7, 7, 3, 2, 0),
    (1, 2, 9, 8, 3, 2, 1),
    (2, 1, 5, 7, 3, 1, 1),
    (1, 3, 7, 5, 2, 3, 0),
    (2, 2, 6, 9, (2, 3), (1, 2), (1, 1)),
    (3, 2, 5, 5, (3, 2), (2, 1), (1, 0)),
]

# (N, C, H, W, out_channels, kernel, stride, padding, groups): grouped and depthwise
GROUPED_CONFIGS = [
    (2, 4, 6, 5, 6, 3, 1, 1, 2),
    (1, 6, 7, 7, 9, (3, 2), (2, 1), (1, 0), 3),
    (2, 3, 5, 6, 3, 3, 2, 1, 3),  # depthwise
    (1, 4, 6, 6, 8, 2, 2, 1, 4),  # depthwise, two filters per channel
]


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / max(||a||, ||b||); the absolute difference when both are ~0."""
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    diff = float(np.linalg.norm(a - b))
    return diff / scale if scale > 1e-10 else diff


def _conv_inputs(cfg: tuple, rng: np.random.Generator, bias: bool = True) -> dict:
    n, c, h, w, o, k, s, p, *groups = cfg
    groups = groups[0] if groups else 1
    kh, kw = (k, k) if isinstance(k, int) else k
    return {
        "x": rng.standard_normal((n, c, h, w)),
        "weight": rng.standard_normal((o, c // groups, kh, kw)),
        "bias": rng.standard_normal(o) if bias else None,
        "stride": s,
        "padding": p,
        "groups": groups,
    }


def _distinct(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values at least 1/size apart, so a step of 1e-6 never changes which one is a maximum."""
    size = int(np.prod(shape))
    return (rng.permutation(size) / size - 0.5).reshape(shape)


def _away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """|x| >= 0.1, so that no kink of relu or leaky_relu lies within a step of 1e-6."""
    x = rng.standard_normal(shape)
    return np.sign(x) * (0.1 + np.abs(x))


# --- the kernels against the loops of reference.py ----------------------------


@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=str)
def test_conv2d_matches_loops(cfg: tuple, rng: np.random.Generator) -> None:
    inputs = _conv_inputs(cfg, rng)
    x, w, b, s, p = (inputs[k] for k in ("x", "weight", "bias", "stride", "padding"))
    y, cache = F.conv2d_forward(x, w, b, s, p)
    np.testing.assert_allclose(y, ref.conv2d_forward(x, w, b, s, p), **TIGHT)
    dy = rng.standard_normal(y.shape)
    for got, expected in zip(
        F.conv2d_backward(dy, cache), ref.conv2d_backward(x, w, dy, s, p), strict=True
    ):
        np.testing.assert_allclose(got, expected, **TIGHT)


@pytest.mark.parametrize("cfg", POOL_CONFIGS, ids=str)
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_max_pool2d_matches_loops(cfg: tuple, ties: bool, rng: np.random.Generator) -> None:
    n, c, h, w, k, s, p = cfg
    # Integers in {0, 1, 2} tie in most windows: the gradient must go to the first maximum.
    x = (
        rng.integers(0, 3, (n, c, h, w)).astype(float)
        if ties
        else rng.standard_normal((n, c, h, w))
    )
    y, cache = F.max_pool2d_forward(x, k, s, p)
    np.testing.assert_array_equal(y, ref.maxpool2d_forward(x, k, s, p))
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(
        F.max_pool2d_backward(dy, cache), ref.maxpool2d_backward(x, dy, k, s, p), **TIGHT
    )


@pytest.mark.parametrize("cfg", POOL_CONFIGS, ids=str)
def test_avg_pool2d_matches_loops(cfg: tuple, rng: np.random.Generator) -> None:
    n, c, h, w, k, s, p = cfg
    x = rng.standard_normal((n, c, h, w))
    y, cache = F.avg_pool2d_forward(x, k, s, p)
    np.testing.assert_allclose(y, ref.avgpool2d_forward(x, k, s, p), **TIGHT)
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(
        F.avg_pool2d_backward(dy, cache), ref.avgpool2d_backward(x, dy, k, s, p), **TIGHT
    )


def test_max_pool2d_pads_with_minus_infinity_and_ties_go_to_the_first() -> None:
    x = np.array([[[[-3.0, -1.0], [-1.0, -2.0]]]])  # all negative: a zero pad would win
    y, cache = F.max_pool2d_forward(x, 2, 1, 1)
    np.testing.assert_array_equal(y[0, 0], [[-3, -1, -1], [-1, -1, -1], [-1, -1, -2]])
    dx = F.max_pool2d_backward(np.ones_like(y), cache)
    # The centre window ties between (0, 1) and (1, 0): the first in row-major order wins.
    np.testing.assert_array_equal(dx[0, 0], [[1, 4], [3, 1]])


@pytest.mark.parametrize("shape", [(8, 5), (4, 3, 5, 6), (1, 2, 3, 3), (5, 1, 2, 7)])
def test_batch_norm_training_matches_loops(shape: tuple, rng: np.random.Generator) -> None:
    c = shape[1]
    x = 3.0 * rng.standard_normal(shape) + 1.5
    weight, bias = rng.uniform(0.5, 2.0, c), rng.standard_normal(c)
    running_mean, running_var = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)
    before = running_mean.copy(), running_var.copy()
    y, _, mean, var = F.batch_norm_forward(
        x, weight, bias, running_mean, running_var, True, momentum=0.2, eps=1e-3
    )
    expected = ref.batchnorm_train_forward(
        x, weight, bias, running_mean, running_var, eps=1e-3, momentum=0.2
    )
    for got, want in zip((y, mean, var), expected, strict=True):
        np.testing.assert_allclose(got, want, **TIGHT)
    # The kernel has no state: its inputs are left as they were.
    np.testing.assert_array_equal(running_mean, before[0])
    np.testing.assert_array_equal(running_var, before[1])


def test_batch_norm_momentum_none_averages_the_batches_evenly(rng: np.random.Generator) -> None:
    c = 3
    mean, var = np.zeros(c), np.ones(c)
    batches = [rng.standard_normal((6, c, 2, 2)) * (k + 1) + k for k in range(3)]
    for seen, x in enumerate(batches):
        _, _, mean, var = F.batch_norm_forward(
            x, np.ones(c), np.zeros(c), mean, var, True, momentum=None, num_batches_tracked=seen
        )
    axes = (0, 2, 3)
    np.testing.assert_allclose(mean, np.mean([x.mean(axis=axes) for x in batches], axis=0))
    np.testing.assert_allclose(var, np.mean([x.var(axis=axes, ddof=1) for x in batches], axis=0))


def test_im2col_and_col2im_are_adjoint(rng: np.random.Generator) -> None:
    # <im2col(x), c> = <x, col2im(c)>: col2im is the transpose of im2col, so it
    # sums the values of overlapping windows (each pixel here sits in up to 4).
    x = rng.standard_normal((2, 3, 7, 6))
    cols = F.im2col(x, 3, 2, (2, 1), (1, 2))
    c = rng.standard_normal(cols.shape)
    dx = F.col2im(c, x.shape, 3, 2, (2, 1), (1, 2))
    assert cols.shape == (2 * 4 * 9, 3 * 3 * 2)
    assert dx.shape == x.shape
    assert np.sum(cols * c) == pytest.approx(np.sum(x * dx), rel=1e-12)


def test_softmax_and_log_softmax_are_stable_and_match_nn(rng: np.random.Generator) -> None:
    z = rng.standard_normal((4, 7)) * 1e4
    np.testing.assert_allclose(F.softmax(z).sum(axis=1), 1.0)
    np.testing.assert_allclose(np.exp(F.log_softmax(z)), F.softmax(z), atol=1e-300)
    assert np.all(np.isfinite(F.log_softmax(z)))
    np.testing.assert_allclose(F.softmax(z, axis=0), nn.softmax(z, axis=0), **TIGHT)
    np.testing.assert_allclose(F.log_softmax(z), nn.log_softmax(z), **TIGHT)


# --- centred finite differences of every backward ------------------------------


def _numerical_gradient(loss: Callable[[], float], a: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """(loss(a + eps e_k) - loss(a - eps e_k)) / (2 eps) for every element k of `a` (in place)."""
    grad = np.empty_like(a)
    for k in np.ndindex(a.shape):
        original = a[k]
        a[k] = original + eps
        plus = loss()
        a[k] = original - eps
        minus = loss()
        a[k] = original
        grad[k] = (plus - minus) / (2 * eps)
    return grad


def _assert_gradients(forward, backward, inputs: dict, wrt: tuple[str, ...], rng) -> None:
    """backward's gradients of L = sum(forward(**inputs) * r), r random, against finite
    differences; backward(dy, cache) returns one gradient per name of `wrt`, in order
    (None for an input that is None: a missing bias)."""
    y, cache = forward(**inputs)
    r = rng.standard_normal(np.shape(y))
    grads = backward(r, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    for name, analytic in zip(wrt, grads, strict=True):
        if inputs[name] is None:
            assert analytic is None, name
            continue
        numeric = _numerical_gradient(lambda: float(np.sum(forward(**inputs)[0] * r)), inputs[name])
        assert analytic.shape == inputs[name].shape, name
        assert relative_error(analytic, numeric) < FD_TOLERANCE, name


@pytest.mark.parametrize("cfg", CONV_CONFIGS[:5] + GROUPED_CONFIGS, ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_gradients(cfg: tuple, bias: bool, rng: np.random.Generator) -> None:
    inputs = _conv_inputs(cfg, rng, bias)
    _assert_gradients(F.conv2d_forward, F.conv2d_backward, inputs, ("x", "weight", "bias"), rng)


@pytest.mark.parametrize("cfg", POOL_CONFIGS, ids=str)
def test_pooling_gradients(cfg: tuple, rng: np.random.Generator) -> None:
    n, c, h, w, k, s, p = cfg
    inputs = {"x": _distinct(rng, (n, c, h, w)), "kernel_size": k, "stride": s, "padding": p}
    _assert_gradients(F.max_pool2d_forward, F.max_pool2d_backward, inputs, ("x",), rng)
    _assert_gradients(F.avg_pool2d_forward, F.avg_pool2d_backward, inputs, ("x",), rng)


@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 4, 5), (1, 3, 2, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradients(shape: tuple, training: bool, rng: np.random.Generator) -> None:
    c = shape[1]
    inputs = {
        "x": 2.0 * rng.standard_normal(shape) + 1.0,
        "weight": rng.uniform(0.5, 2.0, c),
        "bias": rng.standard_normal(c),
        "running_mean": rng.standard_normal(c),
        "running_var": rng.uniform(0.5, 2.0, c),
        "training": training,
    }

    def forward(**kw):
        return F.batch_norm_forward(**kw)[:2]

    _assert_gradients(forward, F.batch_norm_backward, inputs, ("x", "weight", "bias"), rng)


def _dense_inputs(rng: np.random.Generator) -> dict:
    return {
        "x": rng.standard_normal((4, 5)),
        "weight": rng.standard_normal((3, 5)),
        "bias": rng.standard_normal(3),
    }


def _loss_inputs(rng: np.random.Generator) -> dict:
    return {"logits": 3.0 * rng.standard_normal((5, 4)), "labels": rng.integers(0, 4, 5)}


def _dropout_inputs(rng: np.random.Generator) -> dict:
    return {"x": rng.standard_normal((3, 2, 4)), "p": 0.4, "mask": rng.random((3, 2, 4)) > 0.4}


# name: (forward, backward, inputs(rng), the inputs whose gradients backward returns)
SIMPLE_OPS = {
    "dense": (F.dense_forward, F.dense_backward, _dense_inputs, ("x", "weight", "bias")),
    "relu": (F.relu_forward, F.relu_backward, lambda r: {"x": _away_from_zero(r, (3, 7))}, ("x",)),
    "leaky_relu": (
        F.leaky_relu_forward,
        F.leaky_relu_backward,
        lambda r: {"x": _away_from_zero(r, (2, 3, 4)), "negative_slope": 0.2},
        ("x",),
    ),
    "sigmoid": (
        F.sigmoid_forward,
        F.sigmoid_backward,
        lambda r: {"x": 4 * r.standard_normal((4, 6))},
        ("x",),
    ),
    "tanh": (F.tanh_forward, F.tanh_backward, lambda r: {"x": r.standard_normal((4, 6))}, ("x",)),
    "dropout": (F.dropout_forward, F.dropout_backward, _dropout_inputs, ("x",)),
    "flatten": (
        F.flatten_forward,
        F.flatten_backward,
        lambda r: {"x": r.standard_normal((2, 3, 2, 2))},
        ("x",),
    ),
    "global_avg_pool2d": (
        F.global_avg_pool2d_forward,
        F.global_avg_pool2d_backward,
        lambda r: {"x": r.standard_normal((2, 3, 4, 5))},
        ("x",),
    ),
    "softmax_cross_entropy": (
        F.softmax_cross_entropy_forward,
        F.softmax_cross_entropy_backward,
        _loss_inputs,
        ("logits",),
    ),
    "softmax_cross_entropy_smoothed": (
        F.softmax_cross_entropy_forward,
        F.softmax_cross_entropy_backward,
        lambda r: {**_loss_inputs(r), "label_smoothing": 0.2},
        ("logits",),
    ),
}


@pytest.mark.parametrize("name", SIMPLE_OPS)
def test_simple_op_gradients(name: str, rng: np.random.Generator) -> None:
    forward, backward, make_inputs, wrt = SIMPLE_OPS[name]
    _assert_gradients(forward, backward, make_inputs(rng), wrt, rng)


# --- the fast layers held to the kernels ---------------------------------------
# Each entry runs one layer's computation through the kernels, reading the
# layer's parameters (and updating its running statistics, as the layer does):
# (layer, x, training) -> (y, backward), backward(dy) -> (dx, {parameter name: gradient}).


def _bias(layer: nn.Layer) -> np.ndarray | None:
    return None if layer.bias is None else layer.bias.data


def _named(grads: tuple, *names: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    dx, *rest = grads
    return dx, {name: g for name, g in zip(names, rest, strict=True) if g is not None}


def _conv(layer: nn.Conv2D, x: np.ndarray, training: bool):
    y, cache = F.conv2d_forward(
        x, layer.weight.data, _bias(layer), layer.stride, layer.padding, layer.groups
    )
    return y, lambda dy: _named(F.conv2d_backward(dy, cache), "weight", "bias")


def _dense(layer: nn.Dense, x: np.ndarray, training: bool):
    y, cache = F.dense_forward(x, layer.weight.data, _bias(layer))
    return y, lambda dy: _named(F.dense_backward(dy, cache), "weight", "bias")


def _batch_norm(layer: nn.BatchNorm1D | nn.BatchNorm2D, x: np.ndarray, training: bool):
    y, cache, mean, var = F.batch_norm_forward(
        x,
        layer.weight.data,
        layer.bias.data,
        layer.running_mean,
        layer.running_var,
        training,
        layer.momentum,
        layer.eps,
        int(layer.num_batches_tracked),
    )
    if training:
        layer.running_mean[...], layer.running_var[...] = mean, var
        layer.num_batches_tracked += 1
    return y, lambda dy: _named(F.batch_norm_backward(dy, cache), "weight", "bias")


def _pool(forward: Callable, backward: Callable) -> Callable:
    def run(layer: nn.Layer, x: np.ndarray, training: bool):
        y, cache = forward(x, layer.kernel_size, layer.stride, layer.padding)
        return y, lambda dy: (backward(dy, cache), {})

    return run


def _no_parameters(forward: Callable, backward: Callable, *attributes: str) -> Callable:
    def run(layer: nn.Layer, x: np.ndarray, training: bool):
        y, cache = forward(x, *(getattr(layer, a) for a in attributes))
        return y, lambda dy: (backward(dy, cache), {})

    return run


def _dropout(layer: nn.Dropout, x: np.ndarray, training: bool):
    y, cache = F.dropout_forward(x, layer.p, rng=layer.rng, training=training)
    return y, lambda dy: (F.dropout_backward(dy, cache), {})


KERNELS: dict[type, Callable] = {
    nn.Conv2D: _conv,
    nn.Dense: _dense,
    nn.BatchNorm1D: _batch_norm,
    nn.BatchNorm2D: _batch_norm,
    nn.MaxPool2D: _pool(F.max_pool2d_forward, F.max_pool2d_backward),
    nn.AvgPool2D: _pool(F.avg_pool2d_forward, F.avg_pool2d_backward),
    nn.ReLU: _no_parameters(F.relu_forward, F.relu_backward),
    nn.LeakyReLU: _no_parameters(F.leaky_relu_forward, F.leaky_relu_backward, "negative_slope"),
    nn.Sigmoid: _no_parameters(F.sigmoid_forward, F.sigmoid_backward),
    nn.Tanh: _no_parameters(F.tanh_forward, F.tanh_backward),
    nn.Flatten: _no_parameters(F.flatten_forward, F.flatten_backward),
    nn.GlobalAvgPool2D: _no_parameters(F.global_avg_pool2d_forward, F.global_avg_pool2d_backward),
    nn.Dropout: _dropout,
}


# name: (layer factory, input shape)
LAYER_CASES = {
    "conv": (lambda: nn.Conv2D(3, 4, 3, stride=2, padding=1, rng=0), (2, 3, 7, 6)),
    "conv_one_channel": (lambda: nn.Conv2D(1, 5, 3, padding=1, bias=False, rng=0), (2, 1, 6, 6)),
    "conv_non_square": (
        lambda: nn.Conv2D(5, 3, (2, 3), stride=(1, 2), padding=(0, 1), rng=0),
        (1, 5, 6, 9),
    ),
    "conv_grouped": (
        lambda: nn.Conv2D(4, 6, 3, stride=2, padding=1, groups=2, rng=0),
        (2, 4, 7, 6),
    ),
    "conv_depthwise": (lambda: nn.Conv2D(3, 6, 3, padding=1, groups=3, rng=0), (2, 3, 6, 5)),
    "max_pool_2x2": (lambda: nn.MaxPool2D(2), (2, 3, 6, 8)),
    "max_pool_overlapping": (lambda: nn.MaxPool2D(3, 2, 1), (2, 2, 9, 8)),
    "avg_pool": (lambda: nn.AvgPool2D((3, 2), (2, 1), (1, 0)), (3, 2, 5, 5)),
    "batch_norm_1d": (lambda: nn.BatchNorm1D(5, momentum=0.2), (8, 5)),
    "batch_norm_2d": (lambda: nn.BatchNorm2D(3, eps=1e-3, momentum=None), (4, 3, 5, 6)),
    "dense": (lambda: nn.Dense(7, 4, rng=0), (5, 7)),
    "dense_no_bias": (lambda: nn.Dense(7, 4, bias=False, rng=0), (1, 7)),
    "relu": (nn.ReLU, (3, 2, 4, 4)),
    "leaky_relu": (lambda: nn.LeakyReLU(0.2), (3, 5)),
    "sigmoid": (nn.Sigmoid, (3, 5)),
    "tanh": (nn.Tanh, (2, 3, 4)),
    "flatten": (nn.Flatten, (2, 3, 4, 5)),
    "global_avg_pool": (nn.GlobalAvgPool2D, (2, 3, 4, 5)),
    "dropout": (lambda: nn.Dropout(0.3, rng=5), (4, 6)),
}


def _randomise(layer: nn.Layer, rng: np.random.Generator) -> None:
    """Random parameters, and running statistics away from their initial 0 and 1."""
    for _, p in layer.named_parameters():
        p.data[...] = rng.standard_normal(p.shape)
    for name, buffer in layer.named_buffers():
        if name.endswith("running_mean"):
            buffer[...] = rng.standard_normal(buffer.shape)
        elif name.endswith("running_var"):
            buffer[...] = rng.uniform(0.5, 2.0, buffer.shape)


def _layer_step(layer: nn.Layer, x: np.ndarray, dy: np.ndarray, training: bool):
    """(y, dx, {name: gradient}) from the layer's own forward and backward."""
    layer.zero_grad()
    with nn.inference_backward():  # lets training=False differentiate the inference function
        y = layer.forward(x, training=training)
        dx = layer.backward(dy)
    return y, dx, {name: p.grad.copy() for name, p in layer.named_parameters()}


@pytest.mark.parametrize("name", LAYER_CASES)
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_layer_matches_kernel(name: str, training: bool, rng: np.random.Generator) -> None:
    make_layer, shape = LAYER_CASES[name]
    layer = make_layer().astype(np.float64)
    _randomise(layer, rng)
    twin = copy.deepcopy(layer)  # the kernels' copy: same weights, statistics and generator
    for _ in range(2):  # the second step starts from the first one's state
        x = rng.standard_normal(shape)
        if "max_pool" in name:  # small integers: ties in most windows, some all negative
            x = rng.integers(-2, 2, shape).astype(np.float64)
        y_ref, backward = KERNELS[type(twin)](twin, x, training)
        dy = rng.standard_normal(y_ref.shape)
        dx_ref, grads_ref = backward(dy)
        y, dx, grads = _layer_step(layer, x, dy, training)
        np.testing.assert_allclose(y, y_ref, **TIGHT)
        np.testing.assert_allclose(dx, dx_ref, **TIGHT)
        assert grads.keys() == grads_ref.keys()
        for key, grad in grads.items():
            np.testing.assert_allclose(grad, grads_ref[key], **TIGHT, err_msg=key)
    for key, value in layer.state_dict().items():
        np.testing.assert_allclose(value, twin.state_dict()[key], **TIGHT, err_msg=key)


def test_dropout_layer_and_kernel_agree_on_a_given_mask(rng: np.random.Generator) -> None:
    layer = nn.Dropout(0.25, rng=3).astype(np.float64)
    x = rng.uniform(1.0, 2.0, (6, 7))  # no zeros: y == 0 exactly where the mask drops
    y = layer.forward(x, training=True)
    keep = y != 0
    assert 0 < keep.sum() < keep.size
    y_ref, cache = F.dropout_forward(x, 0.25, mask=keep)
    np.testing.assert_allclose(y, y_ref, **TIGHT)
    dy = rng.standard_normal(x.shape)
    np.testing.assert_allclose(layer.backward(dy), F.dropout_backward(dy, cache), **TIGHT)


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_loss_matches_kernel(smoothing: float, rng: np.random.Generator) -> None:
    logits, labels = 5.0 * rng.standard_normal((7, 4)), rng.integers(0, 4, 7)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=smoothing)
    loss, cache = F.softmax_cross_entropy_forward(logits, labels, label_smoothing=smoothing)
    assert loss_fn(logits, labels) == pytest.approx(float(loss), rel=1e-12)
    np.testing.assert_allclose(loss_fn.backward(), F.softmax_cross_entropy_backward(1.0, cache))


def test_smoothing_spreads_the_target_over_the_classes() -> None:
    """Equal logits: L = log K whatever the smoothing; the smoothed target is
    (1 - e) onehot + e / K, so the gradient at the true class is (1/K - 1 + e - e/K) / N."""
    logits, labels = np.zeros((2, 4)), np.array([1, 3])
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.2)
    assert loss_fn(logits, labels) == pytest.approx(np.log(4), rel=1e-12)
    grad = loss_fn.backward()
    assert grad[0, 1] == pytest.approx((0.25 - 0.8 - 0.05) / 2, rel=1e-12)
    assert grad[0, 0] == pytest.approx((0.25 - 0.05) / 2, rel=1e-12)


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan")])
def test_label_smoothing_outside_0_1_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        nn.CrossEntropyLoss(label_smoothing=bad)
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        F.softmax_cross_entropy_forward(np.zeros((1, 2)), np.array([0]), label_smoothing=bad)


def _reference_chain(model: nn.Sequential, x: np.ndarray, labels: np.ndarray, training: bool):
    """(logits, loss, dL/dx, {dotted parameter name: gradient}) with every layer of
    `model` run by its kernel, then softmax cross-entropy and the chained backwards."""
    backwards = []
    for layer in model:
        x, backward = KERNELS[type(layer)](layer, x, training)
        backwards.append(backward)
    loss, cache = F.softmax_cross_entropy_forward(x, labels)
    dy = F.softmax_cross_entropy_backward(1.0, cache)
    grads = {}
    for i in reversed(range(len(backwards))):
        dy, layer_grads = backwards[i](dy)
        grads.update({f"{i}.{name}": g for name, g in layer_grads.items()})
    return x, loss, dy, grads


#: The chains of layers; a graph preset is held to the reference kernels by test_engine.py.
SEQUENTIAL_PRESETS = sorted(n for n, p in PRESETS.items() if isinstance(p.model(), nn.Sequential))


def test_the_chained_presets_are_the_sequential_ones() -> None:
    assert {"small", "notebook", "strong"} <= set(SEQUENTIAL_PRESETS)


@pytest.mark.parametrize("preset", SEQUENTIAL_PRESETS)
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_model_matches_chained_kernels(preset: str, training: bool, rng) -> None:
    model = PRESETS[preset].build(np.random.default_rng(0)).astype(np.float64)
    _randomise_batch_norms(model, rng)
    twin = copy.deepcopy(model)
    x, labels = rng.standard_normal((3, 1, 28, 28)), rng.integers(0, 10, 3)
    logits_ref, loss_ref, dx_ref, grads_ref = _reference_chain(twin, x, labels, training)
    loss_fn = nn.CrossEntropyLoss()
    with nn.inference_backward():
        logits = model.forward(x, training=training)
        loss = loss_fn(logits, labels)
        dx = model.backward(loss_fn.backward())
    np.testing.assert_allclose(logits, logits_ref, **TIGHT)
    assert loss == pytest.approx(float(loss_ref), rel=1e-12)
    np.testing.assert_allclose(dx, dx_ref, **TIGHT)
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert grads.keys() == grads_ref.keys()
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, grads_ref[name], **TIGHT, err_msg=name)
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value, twin.state_dict()[name], **TIGHT, err_msg=name)


def _randomise_batch_norms(model: nn.Sequential, rng: np.random.Generator) -> None:
    """Batch norms away from gamma 1, beta 0 and statistics 0 and 1, which would hide mix-ups."""
    for layer in model:
        if isinstance(layer, nn.BatchNorm1D | nn.BatchNorm2D):
            _randomise(layer, rng)


# --- PyTorch as the oracle of grouped convolution (the layers have no groups yet) ---


@pytest.mark.parametrize("cfg", GROUPED_CONFIGS + CONV_CONFIGS[:2], ids=str)
def test_grouped_conv2d_matches_torch(cfg: tuple, rng: np.random.Generator) -> None:
    torch = pytest.importorskip("torch")
    inputs = _conv_inputs(cfg, rng)
    y, cache = F.conv2d_forward(**inputs)
    dy = rng.standard_normal(y.shape)
    dx, dweight, dbias = F.conv2d_backward(dy, cache)
    x_t, w_t, b_t = (torch.tensor(inputs[k], requires_grad=True) for k in ("x", "weight", "bias"))
    y_t = torch.nn.functional.conv2d(
        x_t, w_t, b_t, inputs["stride"], inputs["padding"], groups=inputs["groups"]
    )
    y_t.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, y_t.detach().numpy(), **TIGHT)
    for ours, theirs in ((dx, x_t), (dweight, w_t), (dbias, b_t)):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), **TIGHT)


# --- dtypes and mistakes -------------------------------------------------------


def _batch_norm_inputs(rng: np.random.Generator) -> dict:
    return {
        "x": rng.standard_normal((4, 3, 2, 2)),
        "weight": rng.standard_normal(3),
        "bias": rng.standard_normal(3),
        "running_mean": rng.standard_normal(3),
        "running_var": rng.uniform(0.5, 2.0, 3),
        "training": True,
    }


def _pool_inputs(rng: np.random.Generator) -> dict:
    return {"x": rng.standard_normal((2, 3, 5, 5)), "kernel_size": 3, "stride": 2, "padding": 1}


# name: (forward, backward, inputs(rng)), for every kernel
ALL_OPS = {name: op[:3] for name, op in SIMPLE_OPS.items()} | {
    "conv2d": (F.conv2d_forward, F.conv2d_backward, lambda r: _conv_inputs(CONV_CONFIGS[2], r)),
    "conv2d_grouped": (
        F.conv2d_forward,
        F.conv2d_backward,
        lambda r: _conv_inputs(GROUPED_CONFIGS[1], r),
    ),
    "max_pool2d": (F.max_pool2d_forward, F.max_pool2d_backward, _pool_inputs),
    "avg_pool2d": (F.avg_pool2d_forward, F.avg_pool2d_backward, _pool_inputs),
    "batch_norm": (
        lambda **kw: F.batch_norm_forward(**kw)[:2],
        F.batch_norm_backward,
        _batch_norm_inputs,
    ),
}


@pytest.mark.parametrize("name", ALL_OPS)
def test_float32_in_float32_out(name: str, rng: np.random.Generator) -> None:
    forward, backward, make_inputs = ALL_OPS[name]
    inputs = {
        k: v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype == np.float64 else v
        for k, v in make_inputs(rng).items()
    }
    y, cache = forward(**inputs)
    assert np.asarray(y).dtype == np.float32
    dy = np.ones_like(y) if np.ndim(y) else 1.0
    grads = backward(dy, cache)
    for grad in grads if isinstance(grads, tuple) else (grads,):
        assert grad is None or grad.dtype == np.float32


MISTAKES = {
    "groups do not divide the channels": (
        lambda: F.conv2d_forward(np.zeros((1, 3, 4, 4)), np.zeros((4, 1, 3, 3)), groups=2),
        "groups=2 must divide",
    ),
    "weight for other channels": (
        lambda: F.conv2d_forward(np.zeros((1, 3, 4, 4)), np.zeros((4, 2, 3, 3))),
        "expects 2 input channels",
    ),
    "kernel larger than the input": (
        lambda: F.conv2d_forward(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 3, 3))),
        "smaller than the kernel",
    ),
    "conv2d bias for other channels": (
        lambda: F.conv2d_forward(np.zeros((1, 1, 3, 3)), np.ones((2, 1, 2, 2)), np.zeros(3)),
        r"bias must have shape \(2,\)",
    ),
    "pooling kernel 0": (lambda: F.avg_pool2d_forward(np.zeros((1, 1, 4, 4)), 0), "kernel 0"),
    "dropout with a seed for a generator": (
        lambda: F.dropout_forward(np.zeros(3), 0.5, rng=3),
        "numpy Generator",
    ),
    "pooling stride 0": (lambda: F.max_pool2d_forward(np.zeros((1, 1, 4, 4)), 2, 0), "stride"),
    "dense features": (lambda: F.dense_forward(np.zeros((2, 3)), np.zeros((4, 5))), "dense"),
    "one value per channel": (
        lambda: F.batch_norm_forward(
            np.zeros((1, 2)), np.ones(2), np.zeros(2), np.zeros(2), np.ones(2), True
        ),
        "more than 1 value",
    ),
    "dropout without a generator": (
        lambda: F.dropout_forward(np.zeros(3), 0.5),
        "Generator",
    ),
    "dropout mask of another shape": (
        lambda: F.dropout_forward(np.zeros(3), 0.5, mask=np.ones(4, dtype=bool)),
        "mask has shape",
    ),
    "conv2d dy in channels-last layout": (
        lambda: F.conv2d_backward(
            np.zeros((1, 3, 3, 2)),
            F.conv2d_forward(np.zeros((1, 1, 4, 4)), np.ones((2, 1, 2, 2)))[1],
        ),
        r"dy must have shape \(1, 2, 3, 3\)",
    ),
    "max_pool2d dy in channels-last layout": (
        lambda: F.max_pool2d_backward(
            np.zeros((1, 2, 2, 3)), F.max_pool2d_forward(np.zeros((1, 3, 4, 4)), 2)[1]
        ),
        r"dy must have shape \(1, 3, 2, 2\)",
    ),
    "batch norm weight for other channels": (
        lambda: F.batch_norm_forward(
            np.zeros((4, 2)), np.ones(3), np.zeros(2), np.zeros(2), np.ones(2), True
        ),
        r"weight must have shape \(2,\)",
    ),
    "labels out of range": (
        lambda: F.softmax_cross_entropy_forward(np.zeros((2, 3)), np.array([0, 3])),
        "labels must lie in",
    ),
}


@pytest.mark.parametrize("name", MISTAKES)
def test_mistakes_raise_a_clear_value_error(name: str) -> None:
    call, match = MISTAKES[name]
    with pytest.raises(ValueError, match=match):
        call()
