"""Misuse gives a clear exception whose message says what went wrong."""

from __future__ import annotations

import numpy as np
import pytest

from npcnn import nn


def _all_layers() -> list[tuple[str, nn.Layer, tuple[int, ...]]]:
    """(id, layer, a valid input shape) for every layer type."""
    return [
        ("conv", nn.Conv2D(2, 3, 3, rng=0), (2, 2, 5, 5)),
        ("maxpool", nn.MaxPool2D(2), (2, 2, 4, 4)),
        ("avgpool", nn.AvgPool2D(2), (2, 2, 4, 4)),
        ("bn1d", nn.BatchNorm1D(3), (4, 3)),
        ("bn2d", nn.BatchNorm2D(2), (4, 2, 3, 3)),
        ("relu", nn.ReLU(), (2, 3)),
        ("leaky", nn.LeakyReLU(), (2, 3)),
        ("sigmoid", nn.Sigmoid(), (2, 3)),
        ("tanh", nn.Tanh(), (2, 3)),
        ("dropout", nn.Dropout(0.5, rng=0), (2, 3)),
        ("flatten", nn.Flatten(), (2, 2, 3, 3)),
        ("dense", nn.Dense(3, 2, rng=0), (2, 3)),
        ("sequential", nn.Sequential([nn.Dense(3, 4, rng=0), nn.ReLU()]), (2, 3)),
    ]


@pytest.mark.parametrize(
    ("layer", "shape"),
    [(layer, shape) for _, layer, shape in _all_layers()],
    ids=[name for name, _, _ in _all_layers()],
)
def test_backward_before_training_forward_raises(layer: nn.Layer, shape) -> None:
    x = np.ones(shape, dtype=np.float32)
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.ones_like(layer.forward(x, training=False)))


def test_backward_before_any_forward_raises() -> None:
    with pytest.raises(RuntimeError, match="forward"):
        nn.Conv2D(1, 1, 3, rng=0).backward(np.ones((1, 1, 2, 2), dtype=np.float32))


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (nn.Conv2D(1, 2, 3, rng=0), (1, 5, 5)),
        (nn.Conv2D(1, 2, 3, rng=0), (2, 1, 1, 5, 5)),
        (nn.MaxPool2D(2), (4, 4)),
        (nn.AvgPool2D(2), (1, 4, 4)),
        (nn.BatchNorm2D(2), (4, 2)),
        (nn.BatchNorm1D(2), (4, 2, 3, 3)),
        (nn.Dense(4, 2, rng=0), (2, 2, 2)),
        (nn.Flatten(), (6,)),
    ],
    ids=["conv3d", "conv5d", "maxpool2d", "avgpool3d", "bn2d_on_2d", "bn1d_on_4d", "dense", "flat"],
)
def test_wrong_ndim(layer: nn.Layer, shape) -> None:
    with pytest.raises(ValueError, match=r"shape|dim"):
        layer.forward(np.zeros(shape, dtype=np.float32))


@pytest.mark.parametrize(
    ("layer", "shape", "expected"),
    [
        (nn.Conv2D(3, 2, 3, rng=0), (1, 1, 5, 5), "3"),
        (nn.BatchNorm2D(4), (2, 3, 2, 2), "4"),
        (nn.BatchNorm1D(5), (2, 3), "5"),
        (nn.Dense(6, 2, rng=0), (2, 5), "6"),
    ],
    ids=["conv", "bn2d", "bn1d", "dense"],
)
def test_wrong_channels_or_features(layer: nn.Layer, shape, expected: str) -> None:
    with pytest.raises(ValueError) as info:
        layer.forward(np.zeros(shape, dtype=np.float32))
    # The message states the expected count and what was received.
    assert expected in str(info.value)
    assert str(shape[1]) in str(info.value)


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (nn.Conv2D(1, 1, 5, rng=0), (1, 1, 4, 6)),
        (nn.Conv2D(1, 1, (2, 4), rng=0), (1, 1, 3, 3)),
        (nn.MaxPool2D(3), (1, 1, 2, 2)),
        (nn.AvgPool2D(4, padding=1), (1, 1, 1, 1)),
    ],
    ids=["conv", "conv_pair", "maxpool", "avgpool_padded"],
)
def test_input_smaller_than_kernel(layer: nn.Layer, shape) -> None:
    with pytest.raises(ValueError, match=r"(?i)kernel|small|size"):
        layer.forward(np.zeros(shape, dtype=np.float32))


def test_notebook_network_on_wrong_image_size_fails_clearly(notebook_model) -> None:
    # 32x32 images give a flattened size the Dense layer was not built for.
    with pytest.raises(ValueError, match=str(18 * 13 * 13)):
        notebook_model().forward(np.zeros((2, 1, 32, 32), dtype=np.float32))


@pytest.mark.parametrize(
    ("labels", "pattern"),
    [
        (np.array([0.0, 1.0, 2.0]), r"(?i)integer"),
        (np.array([0.5, 1.0, 2.0]), r"(?i)integer"),
        (np.array([0, 1, 4]), r"(?i)range|4"),
        (np.array([0, -1, 2]), r"(?i)range|-1"),
        (np.array([0, 1]), r"(?i)length|shape|3|2"),
        (np.array([[0, 1, 2]]), r"(?i)shape|dim"),
        (np.array(["0", "1", "2"]), r"(?i)integer"),
    ],
    ids=["float", "fractional", "too_large", "negative", "wrong_length", "2d", "strings"],
)
def test_cross_entropy_label_errors(labels: np.ndarray, pattern: str) -> None:
    logits = np.zeros((3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match=pattern):
        nn.CrossEntropyLoss().forward(logits, labels)


def test_cross_entropy_backward_before_forward_raises() -> None:
    with pytest.raises(RuntimeError, match="forward"):
        nn.CrossEntropyLoss().backward()


def test_cross_entropy_logits_must_be_2d() -> None:
    with pytest.raises(ValueError, match=r"(?i)shape|dim"):
        nn.CrossEntropyLoss().forward(np.zeros((3, 4, 1), dtype=np.float32), np.array([0, 1, 2]))


def test_cross_entropy_huge_logits_finite() -> None:
    logits = np.array([[1e4, -1e4, 0.0], [0.0, 1e4, 1e4]], dtype=np.float32)
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn.forward(logits, np.array([1, 0]))
    grad = loss_fn.backward()
    assert np.isfinite(loss)
    # Label 1 of row 0 is 2e4 below the max and label 0 of row 1 is 1e4 + log 2 below.
    assert loss == pytest.approx((2e4 + 1e4 + np.log(2)) / 2, rel=1e-5)
    assert np.all(np.isfinite(grad))
    # d loss / d logits = (softmax - onehot) / N.
    expected = np.array([[1.0, -1.0, 0.0], [-1.0, 0.5, 0.5]]) / 2
    np.testing.assert_allclose(grad, expected, atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Dropout(1.5),
        lambda: nn.Dropout(-0.1),
        lambda: nn.Conv2D(1, 1, 0),
        lambda: nn.Conv2D(1, 1, 3, stride=0),
        lambda: nn.Conv2D(1, 1, 3, padding=-1),
        lambda: nn.MaxPool2D(2, padding=2),
        lambda: nn.Dense(0, 3),
    ],
    ids=["dropout_p_big", "dropout_p_neg", "kernel0", "stride0", "pad_neg", "pool_pad", "dense0"],
)
def test_invalid_constructor_arguments(make) -> None:
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1, 1)])
def test_batchnorm_training_needs_two_values_per_channel(shape) -> None:
    layer = (nn.BatchNorm1D if len(shape) == 2 else nn.BatchNorm2D)(3)
    with pytest.raises(ValueError, match=r"(?i)more than 1|one value|single"):
        layer.forward(np.ones(shape, dtype=np.float32), training=True)
    # At inference a single sample is fine.
    assert layer.forward(np.ones(shape, dtype=np.float32)).shape == shape


def test_labels_of_any_integer_dtype_are_accepted() -> None:
    logits = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    losses = [
        nn.CrossEntropyLoss().forward(logits, np.array([0, 3, 1], dtype=dtype))
        for dtype in (np.int64, np.int32, np.uint8)
    ]
    assert losses[0] == losses[1] == losses[2]
