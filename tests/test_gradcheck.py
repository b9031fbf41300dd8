"""Finite-difference checks of every layer's backward, and of gradcheck itself."""

from __future__ import annotations

import numpy as np
import pytest

import npcnn
from npcnn import nn, optim
from npcnn.data import load_dataset
from npcnn.gradcheck import NOISE_FACTOR, GradcheckResult

TOLERANCE = 1e-6


def _away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values with |x| >= 0.1, so that ReLU kinks are never within eps of a sample."""
    x = rng.standard_normal(shape)
    return np.sign(x) * (0.1 + np.abs(x))


def _assert_gradcheck(layer: nn.Layer, x: np.ndarray, *args, **kwargs) -> None:
    layer.astype(np.float64)
    result = npcnn.gradcheck(layer, x.astype(np.float64), *args, **kwargs)
    expected_names = {"input"} | {name for name, _ in layer.named_parameters()}
    assert set(result.errors) == expected_names
    assert result.max_error == pytest.approx(max(result.errors.values()))
    assert result.max_error < TOLERANCE, result.errors


# (N, C, H, W, out_channels, kernel, stride, padding, bias)
CONV_CONFIGS = [
    (2, 2, 5, 5, 3, 3, 1, 1, True),
    (1, 3, 6, 5, 2, 3, 2, 0, True),
    (2, 1, 7, 4, 2, (2, 3), (1, 2), (1, 0), False),
    (1, 2, 5, 7, 2, 2, 3, 2, True),
    (3, 1, 4, 4, 1, 1, 1, 0, False),
]


@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=str)
@pytest.mark.parametrize("training", [True, False])
def test_conv2d(cfg: tuple, training: bool, rng: np.random.Generator) -> None:
    n, c, h, w, f, k, s, p, bias = cfg
    layer = nn.Conv2D(c, f, k, stride=s, padding=p, bias=bias, rng=rng)
    _assert_gradcheck(layer, rng.standard_normal((n, c, h, w)), training=training)


@pytest.mark.parametrize(
    ("shape", "k", "s", "p"),
    [
        ((2, 2, 6, 6), 2, None, 0),
        ((1, 2, 7, 7), 3, 2, 0),
        ((2, 1, 5, 6), 3, 2, 1),
        ((1, 3, 5, 7), (2, 3), (1, 2), (1, 1)),
    ],
)
@pytest.mark.parametrize("pool", [nn.MaxPool2D, nn.AvgPool2D])
def test_pools(pool, shape, k, s, p, rng: np.random.Generator) -> None:
    # Standard normal values are distinct, so each window's maximum is unique and stable.
    _assert_gradcheck(pool(k, stride=s, padding=p), rng.standard_normal(shape))


@pytest.mark.parametrize(
    ("shape", "training"),
    # Batch statistics need two samples; a batch of one is checked at inference only.
    [((6, 4), True), ((6, 4), False), ((3, 5), True), ((3, 5), False), ((1, 3), False)],
)
def test_batchnorm1d(shape, training: bool, rng: np.random.Generator) -> None:
    layer = nn.BatchNorm1D(shape[1])
    layer.astype(np.float64)
    layer.weight.data[...] = rng.uniform(0.5, 1.5, shape[1])
    layer.bias.data[...] = rng.standard_normal(shape[1])
    layer.running_mean[...] = rng.standard_normal(shape[1])
    layer.running_var[...] = rng.uniform(0.5, 2.0, shape[1])
    _assert_gradcheck(layer, 2.0 * rng.standard_normal(shape) + 1.0, training=training)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 3, 3), (3, 1, 5, 2)])
def test_batchnorm2d(shape, training: bool, rng: np.random.Generator) -> None:
    layer = nn.BatchNorm2D(shape[1])
    layer.astype(np.float64)
    layer.weight.data[...] = rng.uniform(0.5, 1.5, shape[1])
    layer.bias.data[...] = rng.standard_normal(shape[1])
    layer.running_mean[...] = rng.standard_normal(shape[1])
    layer.running_var[...] = rng.uniform(0.5, 2.0, shape[1])
    _assert_gradcheck(layer, 2.0 * rng.standard_normal(shape) + 1.0, training=training)


@pytest.mark.parametrize(
    "layer",
    [nn.ReLU, nn.LeakyReLU, lambda: nn.LeakyReLU(0.2), nn.Sigmoid, nn.Tanh, nn.Flatten],
    ids=["relu", "leaky_relu", "leaky_relu_0.2", "sigmoid", "tanh", "flatten"],
)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 1, 3, 3)])
@pytest.mark.parametrize("training", [True, False])
def test_elementwise_and_flatten(layer, shape, training: bool, rng: np.random.Generator) -> None:
    _assert_gradcheck(layer(), _away_from_zero(rng, shape), training=training)


@pytest.mark.parametrize("shape", [(4, 7), (1, 2, 3, 5), (2, 3, 4, 4)])
def test_dropout_training_and_inference(shape, rng: np.random.Generator) -> None:
    # gradcheck must reuse one dropout mask for every evaluation (it reseeds per forward).
    _assert_gradcheck(nn.Dropout(0.4, rng=rng), rng.standard_normal(shape), training=True)
    _assert_gradcheck(nn.Dropout(0.4, rng=rng), rng.standard_normal(shape), training=False)


@pytest.mark.parametrize(("n", "fin", "fout", "bias"), [(3, 5, 4, True), (1, 7, 2, False)])
@pytest.mark.parametrize("training", [True, False])
def test_dense(n, fin, fout, bias, training: bool, rng: np.random.Generator) -> None:
    layer = nn.Dense(fin, fout, bias=bias, rng=rng)
    _assert_gradcheck(layer, rng.standard_normal((n, fin)), training=training)


def _small_cnn(rng: np.random.Generator) -> nn.Sequential:
    return nn.Sequential(
        [
            # No bias before batch norm: its true gradient is zero in training mode,
            # and a relative error of rounding noise against rounding noise means nothing.
            nn.Conv2D(2, 3, 3, padding=1, bias=False, rng=rng),
            nn.BatchNorm2D(3),
            nn.LeakyReLU(0.1),
            nn.MaxPool2D(2),
            nn.Conv2D(3, 4, 2, stride=1, bias=False, rng=rng),
            nn.Tanh(),
            nn.AvgPool2D(2, stride=1),
            nn.Flatten(),
            nn.Dense(4 * 1 * 2, 6, rng=rng),
            nn.Dropout(0.3, rng=rng),
            nn.BatchNorm1D(6),
            nn.Sigmoid(),
            nn.Dense(6, 3, rng=rng),
        ]
    )


@pytest.mark.parametrize("training", [True, False])
def test_sequential(training: bool, rng: np.random.Generator) -> None:
    model = _small_cnn(rng)
    x = rng.standard_normal((3, 2, 6, 8))
    if not training:
        # Give the running statistics non-trivial values first.
        model.forward(x.astype(np.float32), training=True)
    _assert_gradcheck(model, x, training=training)


def test_sequential_with_cross_entropy(rng: np.random.Generator) -> None:
    model = _small_cnn(rng)
    x = rng.standard_normal((4, 2, 6, 8))
    y = np.array([0, 2, 1, 2])
    _assert_gradcheck(model, x, y, loss_fn=nn.CrossEntropyLoss())


def test_notebook_network_with_cross_entropy(notebook_model) -> None:
    rng = np.random.default_rng(7)
    model = notebook_model(rng=3, dtype=np.float64)
    x = rng.uniform(0.0, 1.0, (2, 1, 28, 28))
    y = np.array([3, 8])
    _assert_gradcheck(model, x, y, loss_fn=nn.CrossEntropyLoss())


class _WrongReLU(nn.ReLU):
    """ReLU whose backward is off by 10 % on every element."""

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return 1.1 * super().backward(dy)


class _WrongDense(nn.Dense):
    """Dense whose weight gradient is transposed-and-scaled wrongly (input grad is right)."""

    def backward(self, dy: np.ndarray) -> np.ndarray:
        before = self.weight.grad.copy()
        dx = super().backward(dy)
        self.weight.grad[...] = before + 2.0 * (self.weight.grad - before)
        return dx


def test_gradcheck_detects_a_wrong_input_gradient(rng: np.random.Generator) -> None:
    layer = _WrongReLU().astype(np.float64)
    result = npcnn.gradcheck(layer, _away_from_zero(rng, (2, 3, 4, 4)))
    assert result.errors["input"] > 1e-2
    assert result.max_error > 1e-2


def test_gradcheck_detects_a_wrong_parameter_gradient(rng: np.random.Generator) -> None:
    layer = _WrongDense(4, 3, rng=rng).astype(np.float64)
    result = npcnn.gradcheck(layer, rng.standard_normal((5, 4)))
    assert result.errors["weight"] > 1e-1
    assert result.errors["input"] < TOLERANCE
    assert result.errors["bias"] < TOLERANCE


def test_gradcheck_detects_a_wrong_layer_inside_sequential(rng: np.random.Generator) -> None:
    model = nn.Sequential([nn.Dense(4, 5, rng=rng), _WrongReLU(), nn.Dense(5, 2, rng=rng)])
    model.astype(np.float64)
    result = npcnn.gradcheck(model, rng.standard_normal((3, 4)))
    assert result.max_error > 1e-2
    # The last layer's weight gradient does not pass through the wrong backward.
    assert result.errors["2.weight"] < TOLERANCE


def test_gradcheck_leaves_the_layer_untouched(rng: np.random.Generator) -> None:
    model = nn.Sequential([nn.Dense(4, 3, rng=rng), nn.BatchNorm1D(3), nn.Dropout(0.5, rng=7)])
    before = model.state_dict()
    dropout_state = model[2].rng.bit_generator.state
    npcnn.gradcheck(model, rng.standard_normal((5, 4)))
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
        assert value.dtype == before[name].dtype
    assert all(not np.any(p.grad) for p in model.parameters())
    assert model[2].rng.bit_generator.state == dropout_state


def test_inference_mode_gradcheck_does_not_leak_its_mode(rng: np.random.Generator) -> None:
    npcnn.gradcheck(nn.BatchNorm1D(3), rng.standard_normal((4, 3)), training=False)
    # Afterwards an inference forward still keeps no backward cache.
    layer = nn.Dense(3, 2, rng=rng)
    layer.forward(np.ones((2, 3), dtype=np.float32), training=False)
    with pytest.raises(RuntimeError):
        layer.backward(np.ones((2, 2), dtype=np.float32))


def _blank_background_digits(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 1, 28, 28) images in [0, 1]: a blank (exactly 0) background around a few
    random strokes, as in MNIST. The blank regions make max-pool windows tie."""
    x = np.zeros((n, 1, 28, 28))
    for image in x[:, 0]:
        for _ in range(6):
            r, c = rng.integers(4, 18, size=2)
            image[r : r + rng.integers(2, 10), c : c + rng.integers(2, 10)] = rng.uniform(0.3, 1)
    return x


def test_a_gradient_that_is_zero_on_both_sides_passes(rng: np.random.Generator) -> None:
    # Batch norm removes a per-channel constant, so the conv bias before it has a zero
    # gradient; both differences are rounding noise and must not count as an error.
    model = nn.Sequential(
        nn.Conv2D(1, 3, 3, padding=1, bias=True, rng=rng), nn.BatchNorm2D(3), nn.Flatten()
    )
    model.astype(np.float64)
    result = npcnn.gradcheck(model, rng.standard_normal((2, 1, 5, 5)))
    assert result.checked["0.bias"] == 3
    assert result.errors["0.bias"] <= TOLERANCE
    assert result.passed()


def test_notebook_network_with_biases_on_blank_background_images(notebook_model) -> None:
    rng = np.random.default_rng(5)
    model = notebook_model(rng=2, dtype=np.float64)
    model[0].bias = nn.Parameter(np.zeros(16))  # a conv bias before batch norm
    x = _blank_background_digits(rng, 3)
    result = npcnn.gradcheck(
        model, x, np.array([1, 7, 3]), loss_fn=nn.CrossEntropyLoss(), eps=1e-6, max_elements=40
    )
    assert result.passed(1e-6), str(result)
    # Pixels of the blank background lie on max-pool ties: excluded, not failed.
    assert result.excluded["input"] > 0 and result.checked["input"] > 0
    assert result.checked["input"] + result.excluded["input"] == 40
    assert all(result.excluded[name] == 0 for name in result.errors if name != "input")
    assert result.num_checked > 280


class _ScaledBackward(nn.Layer):
    """The identity, whose backward is `factor` times too large (default: 1 % too large)."""

    def __init__(self, factor: float = 1.01) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return self.factor * dy


def test_a_backward_wrong_by_one_percent_fails(notebook_model) -> None:
    rng = np.random.default_rng(5)
    model = notebook_model(rng=2, dtype=np.float64)
    model = nn.Sequential([*model.layers[:4], _ScaledBackward(), *model.layers[4:]])
    x = _blank_background_digits(rng, 3)
    result = npcnn.gradcheck(
        model, x, np.array([1, 7, 3]), loss_fn=nn.CrossEntropyLoss(), max_elements=20
    )
    assert not result.passed()
    assert result.errors["0.weight"] == pytest.approx(0.01 / 1.01, rel=0.05)
    assert result.errors["12.weight"] <= TOLERANCE  # after the wrong layer: right


@pytest.fixture(scope="module")
def readme_example() -> tuple[nn.Sequential, np.ndarray, np.ndarray, GradcheckResult]:
    """README's library example on the first 64 bundled digits after one SGD step: the
    model (float32), the two images and labels it gradchecks, and that gradcheck."""
    sample = load_dataset("sample")
    x = (sample.train_images[:64, None] / 255).astype(np.float32)
    y = sample.train_labels[:64]
    model = nn.Sequential(
        [
            nn.Conv2D(1, 16, 3, 1, 1, bias=False),
            nn.BatchNorm2D(16),
            nn.ReLU(),
            nn.MaxPool2D(2),
            nn.Conv2D(16, 18, 4, padding=1, bias=False),
            nn.BatchNorm2D(18),
            nn.ReLU(),
            nn.Flatten(),
            nn.Dense(18 * 13 * 13, 20, bias=False),
            nn.BatchNorm1D(20),
            nn.ReLU(),
            nn.Dense(20, 10),
        ]
    )
    model.reset_parameters(np.random.default_rng(0))
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    loss_fn.forward(model.forward(x, training=True), y)
    model.backward(loss_fn.backward())
    opt.step()
    opt.zero_grad()
    result = npcnn.gradcheck(model, x[:2], y[:2], loss_fn=nn.CrossEntropyLoss())
    return model, x[:2], y[:2], result


def test_readme_example_on_real_digits_passes(readme_example) -> None:
    # Blank backgrounds tie whole max-pool windows after batch norm. Entries there sit on
    # kinks whose one-sided slopes differ by as little as 10x the first step's rounding
    # noise, or less (many windows' slopes cancel), while backward is far from their
    # mean: smaller steps, noisier, must not hide them, nor h's own noise.
    *_, result = readme_example
    assert result.passed(), str(result)
    # Most pixels are blank background, on a tie; the inked ones are compared.
    assert result.checked["input"] + result.excluded["input"] == 256
    assert result.checked["input"] >= 25
    assert all(result.excluded[name] == 0 for name in result.errors if name != "input")


def test_readme_example_with_an_input_gradient_wrong_by_1e_3_fails(readme_example) -> None:
    model, x, y, right = readme_example
    model = nn.Sequential([_ScaledBackward(1.001), *model.layers])
    result = npcnn.gradcheck(model, x, y, loss_fn=nn.CrossEntropyLoss())
    # Input gradients here are below atol / rtol (6e-3): their error is measured against
    # that floor, so 1e-3 of the largest (3e-4) shows as 5e-5, still 50x the tolerance.
    assert not result.passed()
    assert result.errors["input"] > 10 * TOLERANCE
    assert max(e for name, e in result.errors.items() if name != "input") <= TOLERANCE
    # The wrong backward is not excused as kinks: the same entries are left out.
    assert result.excluded["input"] == right.excluded["input"]


def test_entries_on_a_kink_are_excluded_and_near_ones_are_measured_closer() -> None:
    # ReLU at 0 has no derivative; at +-5e-7 it has one, but a step of 1e-6 crosses 0.
    x = np.array([[0.0, 5e-7, -5e-7, 0.5, -0.5]])
    result = npcnn.gradcheck(nn.ReLU(), x, max_elements=None)
    assert result.excluded["input"] == 1
    assert result.checked["input"] == 4
    assert result.errors["input"] <= TOLERANCE


class _SumLoss:
    """L = sum(out) + offset. The offset changes no derivative, only the rounding noise
    that gradcheck allows for: 32 u max(|L|, 1) / h (u = 2^-53, h the step)."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def forward(self, out: np.ndarray, y: object = None) -> float:
        self.shape = out.shape
        return float(out.sum()) + self.offset

    def backward(self) -> np.ndarray:
        return np.ones(self.shape)


@pytest.mark.parametrize("gap_in_noises", [0.5, 2, 5, 20, 50])
def test_a_kink_on_the_entry_stays_excluded_when_smaller_steps_are_noisier(
    gap_in_noises: float,
) -> None:
    # f(x) = relu(x) - (1 - e) relu(-x) at x = 0: one-sided slopes 1 and 1 - e, whose half
    # difference (the gap) is e / 2 at every step, set here from half to 50 times the
    # rounding noise at the first step: hidden in the noise at h, or at h / 10, or at
    # h / 100. The backward's 0 is far from both slopes, as on tied max-pool windows.
    offset, h = 1e3, 1e-6
    noise = NOISE_FACTOR * (np.finfo(np.float64).eps / 2) * offset / h
    model = nn.Sequential([nn.Dense(1, 2, bias=False), nn.ReLU(), nn.Dense(2, 1, bias=False)])
    model.astype(np.float64)
    model[0].weight.data[...] = [[1.0], [-1.0]]
    model[2].weight.data[...] = [[1.0, -(1.0 - 2 * gap_in_noises * noise)]]
    result = npcnn.gradcheck(model, np.zeros((1, 1)), loss_fn=_SumLoss(offset), eps=h)
    assert result.excluded["input"] == 1 and result.checked["input"] == 0
    assert result.passed(), str(result)


def test_a_kink_on_the_entry_is_excluded_under_strong_curvature() -> None:
    # f(x) = tanh(relu(2e-4 x)) + tanh(relu(30 x + 0.6)) at x = 0: a slope jump of 2e-4
    # (gap J / 2 = 1e-4) under a curvature whose share of the gap, h f'' / 2 = -3.4e-3,
    # is 34 times larger. The gap shrinks 5x from h to h / 10, but the kink is still
    # there: excluded. Bias 0.6 is smooth, with the same strong curvature: compared.
    model = nn.Sequential([nn.Dense(1, 2), nn.ReLU(), nn.Tanh()])
    model.astype(np.float64)
    model[0].weight.data[...] = [[2e-4], [30.0]]
    model[0].bias.data[...] = [0.0, 0.6]
    result = npcnn.gradcheck(model, np.zeros((1, 1)), loss_fn=_SumLoss(), eps=1e-5)
    assert result.excluded["input"] == 1
    assert result.checked["0.bias"] == 1 and result.excluded["0.bias"] == 1
    assert result.checked["0.weight"] == 2
    assert result.passed(), str(result)


@pytest.mark.parametrize(("spread", "seed"), [(1e-4, 0), (3e-5, 0), (3e-5, 3)])
def test_ill_conditioned_batch_norm_is_neither_failed_nor_excluded(
    spread: float, seed: int
) -> None:
    # Batch norm over samples `spread` apart divides their differences, and their rounding,
    # by ~3e-3: L's rounding is far above u |L|, the a priori bound. Measured, it must not
    # pass for a kink (the network has none) nor fail a correct backward.
    rng = np.random.default_rng(seed)
    model = nn.Sequential(
        [nn.Dense(5, 6, rng=rng), nn.BatchNorm1D(6), nn.Tanh(), nn.Dense(6, 3, rng=rng)]
    )
    model.astype(np.float64)
    x = 1.0 + spread * rng.standard_normal((3, 5))
    result = npcnn.gradcheck(
        model, x, np.array([0, 1, 2]), loss_fn=nn.CrossEntropyLoss(), max_elements=None
    )
    assert result.num_excluded == 0
    assert result.passed(), str(result)


def test_gradcheck_result_reads_as_a_table(rng: np.random.Generator) -> None:
    result = npcnn.gradcheck(nn.ReLU(), np.array([[0.0, 1.0, -1.0]]), max_elements=None)
    lines = str(result).splitlines()
    assert lines[0].split() == ["tensor", "checked", "excluded", "rel.", "error"]
    assert lines[1].split()[:3] == ["input", "2", "1"]
    assert result.num_checked == 2 and result.num_excluded == 1


def test_cli_gradcheck_says_what_it_compared(capsys) -> None:
    from npcnn.cli.main import main

    assert main(["gradcheck", "--preset", "notebook", "--elements", "8"]) == 0
    out = capsys.readouterr().out
    header, *_, last = out.strip().splitlines()[1:]
    assert header.split() == ["tensor", "checked", "excluded", "rel.", "error"]
    assert "entries compared" in last and "tolerance 1e-06 relative" in last
    assert last.endswith(": OK")
