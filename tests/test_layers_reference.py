"""The fast layers against the naive loop implementations in reference.py."""

from __future__ import annotations

import numpy as np
import pytest

import reference as ref
from npcnn import nn

# (N, C, H, W, out_channels, kernel, stride, padding)
CONV_CONFIGS = [
    (2, 3, 5, 5, 4, 3, 1, 0),
    (2, 3, 5, 5, 4, 3, 1, 1),
    (1, 2, 7, 6, 3, 3, 2, 1),
    (2, 1, 8, 8, 2, 3, 3, 2),
    (1, 2, 6, 9, 3, (2, 3), (1, 2), (0, 1)),
    (2, 3, 7, 5, 2, (3, 1), (2, 1), (1, 0)),
    (1, 1, 4, 4, 1, 4, 1, 0),
    (3, 2, 5, 7, 2, 1, 1, 0),
    (1, 4, 9, 7, 5, (4, 2), (3, 2), (2, 1)),
    (2, 2, 6, 6, 3, 2, 2, 2),
]

# (N, C, H, W, kernel, stride, padding)
POOL_CONFIGS = [
    (2, 3, 6, 6, 2, None, 0),
    (2, 2, 7, 7, 3, 2, 0),
    (1, 2, 9, 8, 3, 2, 1),
    (2, 1, 5, 7, 3, 1, 1),
    (1, 3, 7, 5, 2, 3, 0),
    (2, 2, 6, 9, (2, 3), (1, 2), (1, 1)),
    (1, 1, 8, 8, 4, 2, 2),
    (3, 2, 5, 5, (3, 2), (2, 1), (1, 0)),
]


def _conv(cfg: tuple, rng: np.random.Generator, dtype=np.float64, bias: bool = True):
    n, c, h, w, f, k, s, p = cfg
    layer = nn.Conv2D(c, f, k, stride=s, padding=p, bias=bias, rng=rng, dtype=dtype)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    return layer, x


@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=str)
def test_conv2d_forward_matches_reference(cfg: tuple, rng: np.random.Generator) -> None:
    layer, x = _conv(cfg, rng)
    layer.bias.data[...] = rng.standard_normal(layer.bias.shape)
    expected = ref.conv2d_forward(x, layer.weight.data, layer.bias.data, cfg[6], cfg[7])
    y = layer.forward(x)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=str)
def test_conv2d_backward_matches_reference(cfg: tuple, rng: np.random.Generator) -> None:
    layer, x = _conv(cfg, rng)
    y = layer.forward(x, training=True)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    dx_ref, dw_ref, db_ref = ref.conv2d_backward(x, layer.weight.data, dy, cfg[6], cfg[7])
    assert dx.shape == x.shape
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, dw_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, db_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cfg", CONV_CONFIGS[:4], ids=str)
def test_conv2d_float32_close_to_reference(cfg: tuple, rng: np.random.Generator) -> None:
    layer, x = _conv(cfg, rng, dtype=np.float32, bias=False)
    assert layer.bias is None
    y = layer.forward(x, training=True)
    assert y.dtype == np.float32
    np.testing.assert_allclose(
        y, ref.conv2d_forward(x, layer.weight.data, None, cfg[6], cfg[7]), rtol=1e-4, atol=1e-5
    )
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(dy)
    assert dx.dtype == np.float32
    dx_ref, dw_ref, _ = ref.conv2d_backward(x, layer.weight.data, dy, cfg[6], cfg[7])
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.weight.grad, dw_ref, rtol=1e-4, atol=1e-4)


def test_conv2d_gradients_accumulate(rng: np.random.Generator) -> None:
    layer, x = _conv(CONV_CONFIGS[2], rng)
    y = layer.forward(x, training=True)
    dy = rng.standard_normal(y.shape)
    layer.backward(dy)
    layer.forward(x, training=True)
    layer.backward(dy)
    _, dw_ref, db_ref = ref.conv2d_backward(x, layer.weight.data, dy, 2, 1)
    np.testing.assert_allclose(layer.weight.grad, 2 * dw_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, 2 * db_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cfg", POOL_CONFIGS, ids=str)
def test_maxpool_matches_reference(cfg: tuple, rng: np.random.Generator) -> None:
    n, c, h, w, k, s, p = cfg
    layer = nn.MaxPool2D(k, stride=s, padding=p)
    x = rng.standard_normal((n, c, h, w))
    y = layer.forward(x, training=True)
    np.testing.assert_array_equal(y, ref.maxpool2d_forward(x, k, s, p))
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    np.testing.assert_allclose(dx, ref.maxpool2d_backward(x, dy, k, s, p), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cfg", POOL_CONFIGS, ids=str)
def test_avgpool_matches_reference(cfg: tuple, rng: np.random.Generator) -> None:
    n, c, h, w, k, s, p = cfg
    layer = nn.AvgPool2D(k, stride=s, padding=p)
    x = rng.standard_normal((n, c, h, w))
    y = layer.forward(x, training=True)
    np.testing.assert_allclose(y, ref.avgpool2d_forward(x, k, s, p), rtol=1e-12, atol=1e-14)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    np.testing.assert_allclose(dx, ref.avgpool2d_backward(x, dy, k, s, p), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pools_keep_dtype(dtype, rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 2, 6, 6)).astype(dtype)
    for layer in (nn.MaxPool2D(2), nn.AvgPool2D(3, 2, 1)):
        y = layer.forward(x, training=True)
        assert y.dtype == dtype
        assert layer.backward(np.ones_like(y)).dtype == dtype


@pytest.mark.parametrize(
    ("k", "s", "p"), [(2, 2, 0), (3, 2, 0), (3, 1, 1), (2, 1, 0), ((2, 3), (1, 2), (1, 1))]
)
def test_maxpool_all_zero_windows_send_gradient_to_first_element(k, s, p) -> None:
    x = np.zeros((2, 2, 7, 7))
    layer = nn.MaxPool2D(k, stride=s, padding=p)
    y = layer.forward(x, training=True)
    dy = np.arange(1, y.size + 1, dtype=np.float64).reshape(y.shape)
    dx = layer.backward(dy)
    expected = ref.maxpool2d_backward(x, dy, k, s, p)
    np.testing.assert_array_equal(dx, expected)
    # Each window gives its gradient to exactly one element: nothing is split or lost.
    assert dx.sum() == pytest.approx(dy.sum())


@pytest.mark.parametrize(("k", "s", "p"), [(2, 2, 0), (3, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_maxpool_integer_ties_follow_first_max(k, s, p, rng: np.random.Generator) -> None:
    x = rng.integers(0, 3, size=(2, 3, 9, 8)).astype(np.float32)
    layer = nn.MaxPool2D(k, stride=s, padding=p)
    y = layer.forward(x, training=True)
    np.testing.assert_array_equal(y, ref.maxpool2d_forward(x, k, s, p))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(dy)
    np.testing.assert_allclose(dx, ref.maxpool2d_backward(x, dy, k, s, p), rtol=1e-6, atol=1e-6)


def test_maxpool_tie_in_one_window_goes_to_first_only() -> None:
    x = np.array([[[[1.0, 5.0], [5.0, 5.0]]]])
    layer = nn.MaxPool2D(2)
    layer.forward(x, training=True)
    dx = layer.backward(np.array([[[[3.0]]]]))
    np.testing.assert_array_equal(dx, [[[[0.0, 3.0], [0.0, 0.0]]]])


def test_maxpool_padding_is_minus_infinity(rng: np.random.Generator) -> None:
    # All inputs negative: zero padding would wrongly win the border windows.
    x = -1.0 - rng.integers(0, 4, size=(1, 2, 5, 5)).astype(np.float64)
    layer = nn.MaxPool2D(3, stride=2, padding=1)
    y = layer.forward(x, training=True)
    assert np.all(y < 0)
    np.testing.assert_array_equal(y, ref.maxpool2d_forward(x, 3, 2, 1))
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(
        layer.backward(dy), ref.maxpool2d_backward(x, dy, 3, 2, 1), rtol=1e-12, atol=1e-14
    )


def test_maxpool_overlapping_windows_accumulate() -> None:
    # A single large value in the middle is the max of all four overlapping windows.
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 10.0
    layer = nn.MaxPool2D(3, stride=2)
    y = layer.forward(x, training=True)
    assert y.shape == (1, 1, 2, 2)
    dx = layer.backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    assert dx[0, 0, 2, 2] == 10.0
    assert np.count_nonzero(dx) == 1


def test_avgpool_counts_padding_in_divisor() -> None:
    x = np.ones((1, 1, 2, 2))
    y = nn.AvgPool2D(2, stride=2, padding=1).forward(x)
    # Each corner window holds one real 1 and three padded zeros.
    np.testing.assert_allclose(y, np.full((1, 1, 2, 2), 0.25))


@pytest.mark.parametrize("shape", [(8, 5), (4, 3, 5, 6), (2, 4, 3, 3), (5, 1, 2, 7)])
def test_batchnorm_training_forward_matches_reference(shape, rng: np.random.Generator) -> None:
    n_ch = shape[1]
    layer = (nn.BatchNorm1D if len(shape) == 2 else nn.BatchNorm2D)(n_ch, momentum=0.2, eps=1e-3)
    layer.astype(np.float64)
    layer.weight.data[...] = rng.uniform(0.5, 2.0, n_ch)
    layer.bias.data[...] = rng.standard_normal(n_ch)
    layer.running_mean[...] = rng.standard_normal(n_ch)
    layer.running_var[...] = rng.uniform(0.5, 2.0, n_ch)
    x = 3.0 * rng.standard_normal(shape) + 1.5
    expected, mean, var = ref.batchnorm_train_forward(
        x,
        layer.weight.data,
        layer.bias.data,
        layer.running_mean.copy(),
        layer.running_var.copy(),
        eps=1e-3,
        momentum=0.2,
    )
    y = layer.forward(x, training=True)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.running_mean, mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.running_var, var, rtol=1e-10, atol=1e-12)
    assert int(layer.num_batches_tracked) == 1


@pytest.mark.parametrize("shape", [(2, 3, 8, 10), (1, 16, 28, 28), (3, 1, 2, 2)])
def test_maxpool_2x2_fast_path_follows_first_max_on_ties(shape, rng: np.random.Generator) -> None:
    # Even sizes with 2x2 windows at stride 2 take MaxPool2D's pixel-pair fast path;
    # integers in {0, 1, 2} make ties in most windows, zeros whole tied windows.
    x = rng.integers(0, 3, size=shape).astype(np.float32)
    x[:, :, :2, :2] = 0
    layer = nn.MaxPool2D(2)
    y = layer.forward(x, training=True)
    np.testing.assert_array_equal(y, ref.maxpool2d_forward(x, 2, 2, 0))
    np.testing.assert_array_equal(layer.forward(x), y)  # the inference path agrees
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(dy)
    np.testing.assert_array_equal(dx, ref.maxpool2d_backward(x, dy, 2, 2, 0))
