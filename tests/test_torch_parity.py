"""Every layer, the loss and the optimisers against PyTorch, from identical weights.

PyTorch is only a test oracle here. The npcnn model's state dict is loaded
into an equivalent `torch.nn.Sequential` by name, which also checks that the
names are PyTorch's (`0.weight`, `1.running_var`, ...).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from conftest import load_benchmark_module
from npcnn import nn, optim
from npcnn.models.resnet import basic_block

torch = pytest.importorskip("torch")
tnn = torch.nn
torch_twins = load_benchmark_module("torch_twins")

RTOL = 1e-4
ATOL = 1e-5


@pytest.fixture(autouse=True)
def _torch_single_thread():
    # Deterministic, and fair to the other tests sharing the two cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_close(actual: np.ndarray, expected, rtol: float = RTOL, atol: float = ATOL) -> None:
    """allclose for float32 results, with `atol` scaled by the size of the expected values."""
    if isinstance(expected, torch.Tensor):
        expected = expected.detach().numpy()
    expected = np.asarray(expected)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol, atol=atol * scale)


def t(x: np.ndarray, grad: bool = False):
    tensor = torch.from_numpy(np.ascontiguousarray(x))
    return tensor.requires_grad_(grad)


def load_into_torch(layer: nn.Layer, module) -> None:
    """Copy npcnn's state dict into the torch module; the names must match one-to-one."""
    ours = layer.state_dict()
    theirs = module.state_dict()
    assert set(ours) == set(theirs)
    for name, value in ours.items():
        assert tuple(value.shape) == tuple(theirs[name].shape), name
    module.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in ours.items()})


def check_layer(
    layer: nn.Layer,
    module,
    x: np.ndarray,
    rng: np.random.Generator,
    training: bool = True,
) -> None:
    """Forward, dx and every parameter gradient of `layer` against `module`."""
    load_into_torch(layer, module)
    module.train(training)
    y = layer.forward(x, training=True) if training else layer.forward(x, training=False)
    xt = t(x, grad=True)
    yt = module(xt)
    assert y.shape == tuple(yt.shape)
    assert y.dtype == np.float32
    assert_close(y, yt)
    if not training:
        return
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(dy)
    yt.backward(t(dy))
    assert dx.shape == x.shape
    assert_close(dx, xt.grad)
    torch_params = dict(module.named_parameters())
    ours = dict(layer.named_parameters())
    assert set(ours) == set(torch_params)
    for name, p in ours.items():
        assert_close(p.grad, torch_params[name].grad)


def _x(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize(
    ("shape", "f", "k", "s", "p", "bias"),
    [
        ((2, 3, 9, 9), 4, 3, 1, 1, True),
        ((1, 2, 8, 11), 5, 3, 2, 0, True),
        ((3, 4, 7, 6), 2, (2, 3), (2, 1), (1, 2), False),
        ((2, 1, 28, 28), 16, 3, 1, 1, False),
        ((2, 16, 14, 14), 18, 4, 1, 1, False),
        ((1, 3, 10, 7), 3, 5, 3, 2, True),
    ],
)
def test_conv2d(shape, f, k, s, p, bias, rng: np.random.Generator) -> None:
    layer = nn.Conv2D(shape[1], f, k, stride=s, padding=p, bias=bias, rng=rng)
    module = tnn.Conv2d(shape[1], f, k, stride=s, padding=p, bias=bias)
    check_layer(layer, module, _x(rng, shape), rng)


@pytest.mark.parametrize(
    ("shape", "f", "k", "s", "p", "groups"),
    [
        ((2, 4, 9, 9), 6, 3, 1, 1, 2),
        ((2, 6, 8, 7), 9, (3, 2), (2, 1), (1, 0), 3),
        ((2, 8, 9, 9), 8, 3, 2, 1, 8),  # depthwise
        ((1, 4, 7, 8), 8, 3, 1, 1, 4),  # depthwise, two filters per channel
        ((2, 16, 14, 14), 16, 5, 2, 2, 16),  # depthwise, many channels
    ],
)
@pytest.mark.parametrize("bias", [True, False])
def test_grouped_conv2d(shape, f, k, s, p, groups, bias, rng: np.random.Generator) -> None:
    layer = nn.Conv2D(shape[1], f, k, stride=s, padding=p, bias=bias, groups=groups, rng=rng)
    module = tnn.Conv2d(shape[1], f, k, stride=s, padding=p, bias=bias, groups=groups)
    check_layer(layer, module, _x(rng, shape), rng)


@pytest.mark.parametrize(
    ("shape", "k", "s", "p"),
    [
        ((2, 3, 8, 8), 2, None, 0),
        ((2, 2, 9, 7), 3, 2, 0),
        ((1, 3, 9, 9), 3, 2, 1),
        ((2, 2, 7, 10), (2, 3), (1, 2), (1, 1)),
        ((1, 1, 6, 6), 3, 1, 1),
    ],
)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pools(kind, shape, k, s, p, rng: np.random.Generator) -> None:
    if kind == "max":
        layer, module = nn.MaxPool2D(k, stride=s, padding=p), tnn.MaxPool2d(k, stride=s, padding=p)
    else:
        layer, module = nn.AvgPool2D(k, stride=s, padding=p), tnn.AvgPool2d(k, stride=s, padding=p)
    check_layer(layer, module, _x(rng, shape), rng)


@pytest.mark.parametrize(
    ("shape", "k", "s", "p"),
    [
        ((2, 3, 26, 26), 3, 2, 0),  # 13 windows, the last partial
        ((2, 2, 7, 9), 2, 2, 0),
        ((1, 2, 8, 8), 3, 2, 1),  # the rule that drops a window starting in the padding
        ((2, 1, 10, 7), (3, 2), (3, 2), (1, 0)),
    ],
)
def test_ceil_mode_max_pool_matches_torch(shape, k, s, p, rng: np.random.Generator) -> None:
    layer = nn.MaxPool2D(k, stride=s, padding=p, ceil_mode=True)
    check_layer(layer, tnn.MaxPool2d(k, stride=s, padding=p, ceil_mode=True), _x(rng, shape), rng)


def test_maxpool_ties_match_torch(rng: np.random.Generator) -> None:
    # After a ReLU many windows are all zeros; torch sends their gradient to the first.
    x = np.maximum(rng.integers(-2, 2, size=(2, 3, 9, 9)), 0).astype(np.float32)
    check_layer(nn.MaxPool2D(3, stride=2, padding=1), tnn.MaxPool2d(3, 2, 1), x, rng)
    check_layer(nn.MaxPool2D(2), tnn.MaxPool2d(2), x, rng)


@pytest.mark.parametrize(
    ("make", "make_torch"),
    [
        (nn.ReLU, tnn.ReLU),
        (nn.LeakyReLU, tnn.LeakyReLU),
        (lambda: nn.LeakyReLU(0.3), lambda: tnn.LeakyReLU(0.3)),
        (nn.Sigmoid, tnn.Sigmoid),
        (nn.Tanh, tnn.Tanh),
        (nn.Flatten, tnn.Flatten),
        (nn.Identity, tnn.Identity),
        (lambda: nn.ZeroPad2D((0, 1, 2, 3)), lambda: tnn.ZeroPad2d((0, 1, 2, 3))),
        (nn.GlobalAvgPool2D, lambda: tnn.Sequential(tnn.AdaptiveAvgPool2d(1), tnn.Flatten())),
    ],
    ids=[
        "relu",
        "leaky",
        "leaky0.3",
        "sigmoid",
        "tanh",
        "flatten",
        "identity",
        "zero_pad",
        "global_avg",
    ],
)
@pytest.mark.parametrize("training", [True, False])
def test_parameterless_layers(make, make_torch, training, rng: np.random.Generator) -> None:
    check_layer(make(), make_torch(), 3 * _x(rng, (2, 3, 5, 4)), rng, training=training)


def test_dropout_at_inference_is_identity_as_torch(rng: np.random.Generator) -> None:
    check_layer(nn.Dropout(0.5, rng=rng), tnn.Dropout(0.5), _x(rng, (4, 6)), rng, training=False)


@pytest.mark.parametrize(("n", "fin", "fout", "bias"), [(4, 7, 3, True), (1, 3042, 20, False)])
def test_dense(n, fin, fout, bias, rng: np.random.Generator) -> None:
    layer = nn.Dense(fin, fout, bias=bias, rng=rng)
    check_layer(layer, tnn.Linear(fin, fout, bias=bias), _x(rng, (n, fin)), rng)


def _randomise_batchnorm(layer: nn.Layer, rng: np.random.Generator) -> None:
    n = layer.weight.shape[0]
    layer.weight.data[...] = rng.uniform(0.5, 1.5, n)
    layer.bias.data[...] = rng.standard_normal(n)


@pytest.mark.parametrize(
    ("shape", "momentum"), [((8, 5), 0.1), ((5, 3, 4, 6), 0.1), ((3, 2, 3, 5), 0.3)]
)
def test_batchnorm_training_running_stats_and_eval(shape, momentum, rng) -> None:
    c = shape[1]
    if len(shape) == 2:
        layer, module = nn.BatchNorm1D(c, momentum=momentum), tnn.BatchNorm1d(c, momentum=momentum)
    else:
        layer, module = nn.BatchNorm2D(c, momentum=momentum), tnn.BatchNorm2d(c, momentum=momentum)
    _randomise_batchnorm(layer, rng)
    load_into_torch(layer, module)
    module.train()
    for _ in range(4):
        x = 2.0 * _x(rng, shape) + 3.0
        y = layer.forward(x, training=True)
        with torch.no_grad():
            assert_close(y, module(t(x)))
    assert_close(layer.running_mean, module.running_mean)
    assert_close(layer.running_var, module.running_var)  # unbiased, as torch tracks it
    assert int(layer.num_batches_tracked) == int(module.num_batches_tracked) == 4
    # Gradients in training mode, then the eval forward with the running statistics.
    check_layer(layer, module, 2.0 * _x(rng, shape) + 3.0, rng, training=True)
    check_layer(layer, module, 2.0 * _x(rng, shape) + 3.0, rng, training=False)


def test_batchnorm_eval_forward_batch_of_one(rng: np.random.Generator) -> None:
    layer = nn.BatchNorm2D(3)
    _randomise_batchnorm(layer, rng)
    layer.running_mean[...] = rng.standard_normal(3)
    layer.running_var[...] = rng.uniform(0.5, 2, 3)
    check_layer(layer, tnn.BatchNorm2d(3), _x(rng, (1, 3, 4, 5)), rng, training=False)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.9])
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_cross_entropy_and_gradient(
    scale: float, smoothing: float, rng: np.random.Generator
) -> None:
    logits = (scale * rng.standard_normal((7, 10))).astype(np.float32)
    labels = rng.integers(0, 10, 7)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=smoothing)
    loss = loss_fn.forward(logits, labels)
    lt = t(logits, grad=True)
    expected = torch.nn.functional.cross_entropy(
        lt, torch.from_numpy(labels), label_smoothing=smoothing
    )
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    assert_close(loss_fn.backward(), lt.grad)


def test_cross_entropy_huge_logits_are_finite() -> None:
    logits = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 1e4], [0.0, 0.0, 1e4]], dtype=np.float32)
    labels = np.array([1, 2, 2])
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn.forward(logits, labels)
    grad = loss_fn.backward()
    assert np.isfinite(loss)
    assert np.all(np.isfinite(grad))
    lt = t(logits, grad=True)
    expected = torch.nn.functional.cross_entropy(lt, torch.from_numpy(labels))
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    assert_close(grad, lt.grad)


def _torch_notebook() -> tnn.Sequential:
    return tnn.Sequential(
        tnn.Conv2d(1, 16, 3, padding=1, bias=False),
        tnn.BatchNorm2d(16),
        tnn.ReLU(),
        tnn.MaxPool2d(2),
        tnn.Conv2d(16, 18, 4, padding=1, bias=False),
        tnn.BatchNorm2d(18),
        tnn.ReLU(),
        tnn.Flatten(),
        tnn.Linear(18 * 13 * 13, 20, bias=False),
        tnn.BatchNorm1d(20),
        tnn.ReLU(),
        tnn.Linear(20, 10),
    )


def test_notebook_state_dict_names_are_torch_names(notebook_model) -> None:
    model = notebook_model()
    assert set(model.state_dict()) == set(_torch_notebook().state_dict())
    assert [n for n, _ in model.named_parameters()] == [
        n for n, _ in _torch_notebook().named_parameters()
    ]


def _train_both(
    model: nn.Sequential,
    module,
    make_opt: Callable,
    make_torch_opt: Callable,
    batches: list[tuple[np.ndarray, np.ndarray]],
) -> None:
    """Run the same steps in npcnn and torch; compare losses along the way."""
    load_into_torch(model, module)
    module.train()
    opt = make_opt(model.parameters())
    topt = make_torch_opt(module.parameters())
    loss_fn = nn.CrossEntropyLoss()
    for x, y in batches:
        opt.zero_grad()
        loss = loss_fn.forward(model.forward(x, training=True), y)
        model.backward(loss_fn.backward(), need_input_grad=False)
        opt.step()
        topt.zero_grad()
        tloss = torch.nn.functional.cross_entropy(module(t(x)), torch.from_numpy(y))
        tloss.backward()
        topt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-3, abs=1e-5)


def _assert_same_state(model: nn.Layer, module, rtol: float, atol: float) -> None:
    theirs = module.state_dict()
    for name, value in model.state_dict().items():
        assert_close(value, theirs[name], rtol=rtol, atol=atol)


def _mnist_like_batches(rng: np.random.Generator, n_batches: int, size: int):
    """Sparse bright strokes on a dark background, like digits, with random labels."""
    batches = []
    for _ in range(n_batches):
        x = rng.uniform(0.0, 1.0, (size, 1, 28, 28)).astype(np.float32)
        x[x < 0.8] = 0.0
        batches.append((x, rng.integers(0, 10, size)))
    return batches


@pytest.mark.parametrize(
    ("dtype", "rtol", "atol"),
    [
        # float64 removes rounding noise: any real difference in the maths shows up.
        (np.float64, 1e-9, 1e-10),
        # float32: rounding differences grow through 5 steps of batch-norm training
        # (measured ~1e-4 of the largest weight), so the tolerance is looser.
        (np.float32, 1e-3, 5e-4),
    ],
    ids=["float64", "float32"],
)
@pytest.mark.parametrize(
    ("make_opt", "make_torch_opt"),
    [
        (
            lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
            lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
        ),
        (lambda ps: optim.Adam(ps, lr=1e-3), lambda ps: torch.optim.Adam(ps, lr=1e-3)),
    ],
    ids=["sgd_momentum", "adam"],
)
def test_notebook_network_five_steps(
    notebook_model, make_opt, make_torch_opt, dtype, rtol: float, atol: float
) -> None:
    rng = np.random.default_rng(5)
    model = notebook_model(rng=11, dtype=dtype)
    module = _torch_notebook().to(torch.float64 if dtype == np.float64 else torch.float32)
    batches = [(x.astype(dtype), y) for x, y in _mnist_like_batches(rng, 5, 64)]
    _train_both(model, module, make_opt, make_torch_opt, batches)
    _assert_same_state(model, module, rtol=rtol, atol=atol)
    # Inference with the trained weights and running statistics agrees too.
    x = _mnist_like_batches(rng, 1, 8)[0][0].astype(dtype)
    module.eval()
    with torch.no_grad():
        assert_close(model.forward(x), module(t(x)), rtol=rtol, atol=atol)


def _small_model(rng: np.random.Generator) -> nn.Sequential:
    return nn.Sequential(
        [
            # No bias before batch norm: its gradient is only rounding noise, which
            # Adam would amplify to full-size steps in different directions.
            nn.Conv2D(2, 3, 3, padding=1, bias=False, rng=rng),
            nn.BatchNorm2D(3),
            nn.ReLU(),
            nn.AvgPool2D(2),
            nn.Flatten(),
            nn.Dense(3 * 3 * 3, 8, rng=rng),
            nn.Tanh(),
            nn.Dense(8, 4, rng=rng),
        ]
    )


def _torch_small_model() -> tnn.Sequential:
    return tnn.Sequential(
        tnn.Conv2d(2, 3, 3, padding=1, bias=False),
        tnn.BatchNorm2d(3),
        tnn.ReLU(),
        tnn.AvgPool2d(2),
        tnn.Flatten(),
        tnn.Linear(27, 8),
        tnn.Tanh(),
        tnn.Linear(8, 4),
    )


@pytest.mark.parametrize(
    ("make_opt", "make_torch_opt"),
    [
        (
            lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
            lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
        ),
        (
            lambda ps: optim.SGD(ps, lr=0.05, momentum=0.5, dampening=0.3, weight_decay=1e-3),
            lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.5, dampening=0.3, weight_decay=1e-3),
        ),
        (lambda ps: optim.SGD(ps, lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
        (
            lambda ps: optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
            lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
        ),
        (
            lambda ps: optim.Adam(ps, lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2),
            lambda ps: torch.optim.Adam(
                ps, lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2
            ),
        ),
    ],
    ids=["sgd_nesterov_wd", "sgd_dampening", "sgd_plain", "adamw", "adam_wd"],
)
def test_small_model_optimisers(make_opt, make_torch_opt) -> None:
    rng = np.random.default_rng(8)
    model = _small_model(rng)
    module = _torch_small_model()
    batches = [
        (rng.standard_normal((6, 2, 6, 6)).astype(np.float32), rng.integers(0, 4, 6))
        for _ in range(6)
    ]
    _train_both(model, module, make_opt, make_torch_opt, batches)
    _assert_same_state(model, module, rtol=1e-4, atol=1e-5)


# --- graphs (nn.Model) -----------------------------------------------------------------------


def _resnet(rng: np.random.Generator) -> nn.Model:
    """(N, 1, 28, 28) -> (N, 10): stem, an identity block, a projection block (stride 2),
    max pool, dense head; each block a Model used as a layer."""
    x = nn.Input((1, 28, 28))
    y = nn.Conv2D(1, 4, 3, padding=1, bias=False, rng=rng)(x, name="stem")
    y = nn.ReLU()(nn.BatchNorm2D(4)(y, name="stem_bn"))
    for name, (out, stride) in (("block1", (4, 1)), ("block2", (8, 2))):
        y = basic_block(y.shape[1:], out, stride, rng)(y, name=name)
    y = nn.Flatten()(nn.MaxPool2D(2)(y))
    return nn.Model(x, nn.Dense(8 * 7 * 7, 10, rng=rng)(y, name="fc"))


class _TorchResNet(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = tnn.Conv2d(1, 4, 3, 1, 1, bias=False)
        self.stem_bn = tnn.BatchNorm2d(4)
        self.block1 = torch_twins.torch_basic_block(4, 4, 1)
        self.block2 = torch_twins.torch_basic_block(4, 8, 2)
        self.fc = tnn.Linear(8 * 7 * 7, 10)

    def forward(self, x):
        y = self.block2(self.block1(torch.relu(self.stem_bn(self.stem(x)))))
        return self.fc(torch.flatten(torch.max_pool2d(y, 2), 1))


def _inception(rng: np.random.Generator) -> nn.Model:
    """(N, 3, 6, 6) -> (N, 4): 1x1 conv, 3x3 conv + ReLU and 3x3 max pool branches,
    concatenated, then a dense head."""
    x = nn.Input((3, 6, 6))
    a = nn.Conv2D(3, 2, 1, rng=rng)(x, name="branch1")
    b = nn.ReLU()(nn.Conv2D(3, 4, 3, padding=1, rng=rng)(x, name="branch3"))
    c = nn.MaxPool2D(3, 1, 1)(x)
    y = nn.Flatten()(nn.Concatenate()([a, b, c]))
    return nn.Model(x, nn.Dense(9 * 36, 4, rng=rng)(y, name="fc"))


class _TorchInception(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.branch1 = tnn.Conv2d(3, 2, 1)
        self.branch3 = tnn.Conv2d(3, 4, 3, padding=1)
        self.fc = tnn.Linear(9 * 36, 4)

    def forward(self, x):
        branches = [self.branch1(x), torch.relu(self.branch3(x)), torch.max_pool2d(x, 3, 1, 1)]
        return self.fc(torch.flatten(torch.cat(branches, 1), 1))


@pytest.mark.parametrize("training", [True, False])
def test_graphs_match_torch(training: bool, rng: np.random.Generator) -> None:
    check_layer(_resnet(rng), _TorchResNet(), _x(rng, (3, 1, 28, 28)), rng, training)
    check_layer(_inception(rng), _TorchInception(), _x(rng, (3, 3, 6, 6)), rng, training)


@pytest.mark.parametrize(
    ("make_opt", "make_torch_opt"),
    [
        (
            lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
            lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
        ),
        (
            lambda ps: optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
            lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
        ),
    ],
    ids=["sgd_momentum", "adamw"],
)
def test_resnet_five_steps_match_torch(make_opt, make_torch_opt) -> None:
    rng = np.random.default_rng(5)
    model = _resnet(rng).astype(np.float64)
    module = _TorchResNet().double()
    batches = [(x.astype(np.float64), y) for x, y in _mnist_like_batches(rng, 5, 16)]
    _train_both(model, module, make_opt, make_torch_opt, batches)
    _assert_same_state(model, module, rtol=1e-9, atol=1e-10)
