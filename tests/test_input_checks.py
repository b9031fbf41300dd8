"""What the library API refuses (integer images, bad hyperparameters, integer dtypes)
and what it accepts at the edges (a batch of 0 images)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from npcnn import nn, optim
from npcnn.training import as_model_input


def _notebook(dtype: np.typing.DTypeLike = np.float32) -> nn.Sequential:
    from conftest import build_notebook_model

    return build_notebook_model(rng=0, dtype=dtype)


# --- integer and boolean input -------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.int16, bool])
def test_sequential_refuses_integer_images(dtype) -> None:
    model = _notebook()
    images = np.full((2, 1, 28, 28), 200).astype(dtype)
    expected = f"Sequential expects floating-point input, got {np.dtype(dtype).name}"
    with pytest.raises(TypeError, match=expected):
        model.forward(images)
    with pytest.raises(TypeError, match="as_model_input"):
        model.forward(images, training=True)


def test_the_message_for_uint8_says_divide_by_255_and_the_fix_works() -> None:
    model = _notebook()
    images = np.random.default_rng(0).integers(0, 256, (3, 1, 28, 28), dtype=np.uint8)
    with pytest.raises(TypeError, match="got uint8: divide by 255 first"):
        model.forward(images)
    scaled = model.forward(as_model_input(images))
    np.testing.assert_array_equal(scaled, model.forward(images.astype(np.float32) / 255))


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (nn.Conv2D(1, 2, 3), (1, 1, 5, 5)),
        (nn.MaxPool2D(2), (1, 1, 4, 4)),
        (nn.AvgPool2D(2), (1, 1, 4, 4)),
        (nn.BatchNorm2D(1), (2, 1, 4, 4)),
        (nn.BatchNorm1D(3), (2, 3)),
        (nn.Dense(3, 2), (2, 3)),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Layer) else None,
)
def test_layers_refuse_integer_input(layer: nn.Layer, shape) -> None:
    with pytest.raises(TypeError, match=f"{type(layer).__name__} expects floating-point input"):
        layer.forward(np.ones(shape, dtype=np.uint8), training=True)


def test_half_precision_input_is_accepted_and_computed_in_the_model_dtype() -> None:
    x = np.random.default_rng(0).random((2, 1, 28, 28))
    model = _notebook()
    out = model.forward(x.astype(np.float16))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, model.forward(x.astype(np.float16).astype(np.float32)))


# --- a batch of 0 images ---------------------------------------------------------

EMPTY_CASES = [
    (lambda: nn.Conv2D(2, 3, 3, padding=1, bias=True), (0, 2, 5, 5), (0, 3, 5, 5)),
    (lambda: nn.Conv2D(2, 3, 2, stride=2), (0, 2, 5, 5), (0, 3, 2, 2)),
    (lambda: nn.MaxPool2D(2), (0, 2, 4, 4), (0, 2, 2, 2)),
    (lambda: nn.MaxPool2D(3, stride=1, padding=1), (0, 2, 4, 4), (0, 2, 4, 4)),
    (lambda: nn.AvgPool2D(2), (0, 2, 4, 4), (0, 2, 2, 2)),
    (lambda: nn.BatchNorm2D(2), (0, 2, 4, 4), (0, 2, 4, 4)),
    (lambda: nn.BatchNorm1D(2), (0, 2), (0, 2)),
    (nn.ReLU, (0, 2, 4, 4), (0, 2, 4, 4)),
    (nn.LeakyReLU, (0, 3), (0, 3)),
    (nn.Sigmoid, (0, 3), (0, 3)),
    (nn.Tanh, (0, 3), (0, 3)),
    (lambda: nn.Dropout(0.5, rng=0), (0, 3), (0, 3)),
    (nn.Flatten, (0, 2, 3, 3), (0, 18)),
    (lambda: nn.Dense(4, 3), (0, 4), (0, 3)),
    (_notebook, (0, 1, 28, 28), (0, 10)),
    # Batch norm, ReLU and max pooling, which Sequential fuses into one pass.
    (
        lambda: nn.Sequential(nn.BatchNorm2D(2), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten()),
        (0, 2, 4, 4),
        (0, 8),
    ),
    (lambda: nn.Sequential(nn.BatchNorm1D(2), nn.ReLU()), (0, 2), (0, 2)),
]


@pytest.mark.parametrize(("make", "shape", "out_shape"), EMPTY_CASES)
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_batch_of_zero_images_gives_empty_arrays(
    make, shape, out_shape, training: bool, dtype
) -> None:
    layer = make().astype(dtype)
    before = layer.state_dict()
    y = layer.forward(np.zeros(shape, dtype=dtype), training=training)
    assert y.shape == out_shape and y.dtype == dtype
    if training:
        dx = layer.backward(np.zeros(out_shape, dtype=dtype))
        assert dx.shape == shape and dx.dtype == dtype
        assert all(not p.grad.any() for p in layer.parameters())
    # No images, no statistics: the running statistics (and their count) stay as they were.
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_batch_norm_still_refuses_a_single_value_per_channel_in_training() -> None:
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1D(2).forward(np.ones((1, 2), np.float32), training=True)


# --- optimiser hyperparameters ---------------------------------------------------

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda ps: optim.SGD(ps, lr=NAN), "Invalid learning rate: nan"),
        (lambda ps: optim.SGD(ps, lr=INF), "Invalid learning rate: inf"),
        (lambda ps: optim.SGD(ps, lr=-0.1), "Invalid learning rate: -0.1"),
        (lambda ps: optim.SGD(ps, lr="0.1"), "Invalid learning rate: '0.1'"),
        (lambda ps: optim.SGD(ps, lr=0.1, momentum=1.0), r"Invalid momentum value: 1.0 .*\[0, 1\)"),
        (lambda ps: optim.SGD(ps, lr=0.1, momentum=-0.5), "Invalid momentum value"),
        (lambda ps: optim.SGD(ps, lr=0.1, momentum=NAN), "Invalid momentum value"),
        (lambda ps: optim.SGD(ps, lr=0.1, dampening=1.5), "Invalid dampening value"),
        (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=NAN), "Invalid weight_decay value"),
        (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=-1), "Invalid weight_decay value"),
        (lambda ps: optim.Adam(ps, lr=NAN), "Invalid learning rate: nan"),
        (lambda ps: optim.Adam(ps, betas=(0.9, 1.0)), "Invalid beta parameter: 1.0"),
        (lambda ps: optim.Adam(ps, betas=(NAN, 0.9)), "Invalid beta parameter: nan"),
        (lambda ps: optim.Adam(ps, betas=(0.9,)), "Invalid betas"),
        (lambda ps: optim.Adam(ps, eps=-1e-8), "Invalid epsilon value"),
        (lambda ps: optim.Adam(ps, eps=INF), "Invalid epsilon value"),
        (lambda ps: optim.AdamW(ps, weight_decay=INF), "Invalid weight_decay value"),
    ],
)
def test_optimisers_refuse_hyperparameters_out_of_range(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(nn.Dense(3, 2).parameters())


@pytest.mark.parametrize(
    ("make", "name", "value", "message"),
    [
        (optim.SGD, "lr", NAN, "Invalid learning rate: nan"),
        (optim.SGD, "momentum", 1.0, "Invalid momentum value"),
        (optim.Adam, "lr", -1e-3, "Invalid learning rate"),
        (optim.AdamW, "betas", (0.9, 1.0), "Invalid beta parameter: 1.0"),
        (optim.AdamW, "weight_decay", INF, "Invalid weight_decay value"),
    ],
)
def test_a_hyperparameter_set_by_hand_is_checked_as_when_built(make, name, value, message) -> None:
    # A value set after construction (by hand, or by a schedule of one's own) is held to
    # the same range; the optimiser keeps its old value.
    opt = make(nn.Dense(3, 2).parameters(), lr=0.01)
    before = getattr(opt, name)
    with pytest.raises(ValueError, match=message):
        setattr(opt, name, value)
    assert getattr(opt, name) == before
    opt.lr = np.float32(0.5)  # a value in range is taken, as a float
    assert opt.lr == 0.5 and type(opt.lr) is float


def test_optimisers_accept_the_edges_of_their_ranges() -> None:
    params = nn.Dense(3, 2).parameters()
    sgd = optim.SGD(params, lr=0, momentum=0.999, dampening=1.0, weight_decay=0)
    assert (sgd.lr, sgd.momentum, sgd.dampening) == (0.0, 0.999, 1.0)
    adam = optim.Adam(params, lr=np.float64(1e-3), betas=[0.0, 0.0], eps=0)
    assert adam.betas == (0.0, 0.0) and isinstance(adam.lr, float)


def test_loading_a_state_dict_with_a_nan_learning_rate_changes_nothing() -> None:
    params = nn.Dense(3, 2).parameters()
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    state = opt.state_dict()
    state["lr"] = np.array(NAN)
    state["momentum"] = np.array(0.5)
    with pytest.raises(ValueError, match="Invalid learning rate: nan"):
        opt.load_state_dict(state)
    assert (opt.lr, opt.momentum) == (0.1, 0.9)


# --- model dtypes ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, bool, np.float16, np.complex64])
def test_astype_refuses_dtypes_the_layers_cannot_compute_in(dtype) -> None:
    model = _notebook()
    with pytest.raises(TypeError, match=r"unsupported dtype .*: the layers compute in float32"):
        model.astype(dtype)
    assert all(p.dtype == np.float32 for p in model.parameters())
    with pytest.raises(TypeError, match="unsupported dtype"):
        nn.Conv2D(1, 2, 3, dtype=dtype)


def test_astype_accepts_float64_by_any_name() -> None:
    model = _notebook().astype("float64")
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in model.parameters())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"eps": -1.0}, "finite eps >= 0, got -1.0"),
        ({"eps": float("nan")}, "finite eps >= 0, got nan"),
        ({"eps": float("inf")}, "finite eps >= 0, got inf"),
        ({"momentum": 5.0}, r"momentum from 0 to 1 \(or None\), got 5.0"),
        ({"momentum": -0.1}, "momentum from 0 to 1"),
    ],
)
def test_batch_norm_refuses_settings_that_would_make_every_output_nan(settings, message) -> None:
    for layer in (nn.BatchNorm1D, nn.BatchNorm2D):
        with pytest.raises(ValueError, match=message):
            layer(3, **settings)
    nn.BatchNorm2D(3, eps=0.0, momentum=1.0)  # the edges are fine
    nn.BatchNorm2D(3, momentum=None)
