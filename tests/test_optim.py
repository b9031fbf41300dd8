"""Optimiser semantics checked by hand (no torch): the update rules, state and zero_grad."""

from __future__ import annotations

import math

import numpy as np
import pytest

from npcnn import nn, optim


def _param(values, grad) -> nn.Parameter:
    p = nn.Parameter(np.array(values, dtype=np.float64))
    p.grad[...] = grad
    return p


def test_sgd_plain_step_is_p_minus_lr_g() -> None:
    p = _param([1.0, -2.0, 3.0], [0.5, 0.5, -1.0])
    optim.SGD([p], lr=0.1).step()
    np.testing.assert_allclose(p.data, [0.95, -2.05, 3.1])


def test_sgd_step_updates_in_place_and_keeps_dtype() -> None:
    p = nn.Parameter(np.ones(3, dtype=np.float32))
    data = p.data
    p.grad[...] = 1.0
    optim.SGD([p], lr=0.5).step()
    assert p.data is data or np.shares_memory(p.data, data)
    assert p.data.dtype == np.float32
    np.testing.assert_allclose(data, 0.5)


def test_sgd_momentum_buffer() -> None:
    # PyTorch's rule: b1 = g1; b_t = mu * b_{t-1} + g_t; p -= lr * b_t.
    p = _param([0.0], [1.0])
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    opt.step()
    np.testing.assert_allclose(p.data, [-0.1])
    p.grad[...] = 2.0
    opt.step()
    np.testing.assert_allclose(p.data, [-0.1 - 0.1 * (0.9 * 1.0 + 2.0)])
    p.grad[...] = 0.0
    opt.step()
    np.testing.assert_allclose(p.data, [-0.1 - 0.29 - 0.1 * 0.9 * 2.9])


def test_sgd_weight_decay_and_nesterov() -> None:
    p = _param([2.0], [1.0])
    opt = optim.SGD([p], lr=0.1, momentum=0.5, weight_decay=0.1, nesterov=True)
    opt.step()
    g = 1.0 + 0.1 * 2.0  # weight decay adds wd * p to the gradient
    b = g
    expected = 2.0 - 0.1 * (g + 0.5 * b)
    np.testing.assert_allclose(p.data, [expected])
    opt.step()
    g2 = 1.0 + 0.1 * expected
    b2 = 0.5 * b + g2
    np.testing.assert_allclose(p.data, [expected - 0.1 * (g2 + 0.5 * b2)])


def test_sgd_nesterov_requires_momentum() -> None:
    with pytest.raises(ValueError):
        optim.SGD([_param([1.0], [0.0])], lr=0.1, nesterov=True)


def test_negative_learning_rate_is_refused() -> None:
    with pytest.raises(ValueError):
        optim.SGD([_param([1.0], [0.0])], lr=-0.1)


def test_adam_first_step_moves_by_lr_times_sign() -> None:
    # With bias correction, the first Adam step is lr * g / (|g| + eps'), about lr * sign(g).
    p = _param([1.0, 1.0, 1.0], [3.0, -0.02, 0.0])
    optim.Adam([p], lr=0.01).step()
    np.testing.assert_allclose(p.data, [0.99, 1.01, 1.0], atol=1e-6)


def test_adam_two_steps_by_hand() -> None:
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 0.1
    p = _param([0.5], [1.0])
    opt = optim.Adam([p], lr=lr, betas=(b1, b2), eps=eps)
    opt.step()
    p.grad[...] = -3.0
    opt.step()
    m, v, x = 0.0, 0.0, 0.5
    for step, g in enumerate([1.0, -3.0], start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        x -= lr * (m / (1 - b1**step)) / (math.sqrt(v / (1 - b2**step)) + eps)
    np.testing.assert_allclose(p.data, [x], rtol=1e-12)


def test_adamw_decays_weights_even_with_zero_gradient() -> None:
    p = _param([2.0, -4.0], [0.0, 0.0])
    optim.AdamW([p], lr=0.1, weight_decay=0.5).step()
    # Decoupled decay: p <- p * (1 - lr * wd), then an Adam step of size 0.
    np.testing.assert_allclose(p.data, [2.0 * 0.95, -4.0 * 0.95])


def test_adam_l2_weight_decay_goes_through_the_moments() -> None:
    p = _param([2.0], [0.0])
    optim.Adam([p], lr=0.1, weight_decay=0.5).step()
    # The gradient becomes wd * p = 1.0; the first step then moves by about lr.
    np.testing.assert_allclose(p.data, [1.9], atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.SGD(ps, lr=0.1),
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
        lambda ps: optim.Adam(ps),
        lambda ps: optim.AdamW(ps),
    ],
    ids=["sgd", "momentum", "adam", "adamw"],
)
def test_zero_grad_resets_every_gradient(make) -> None:
    model = nn.Sequential([nn.Dense(3, 4, rng=0), nn.ReLU(), nn.Dense(4, 2, rng=1)])
    opt = make(model.parameters())
    y = model.forward(np.ones((2, 3), dtype=np.float32), training=True)
    model.backward(np.ones_like(y))
    assert any(np.any(p.grad != 0) for p in model.parameters())
    opt.zero_grad()
    for p in model.parameters():
        assert p.grad.shape == p.data.shape
        assert not np.any(p.grad)


def test_lr_is_settable_and_used() -> None:
    p = _param([1.0], [1.0])
    opt = optim.SGD([p], lr=0.1)
    assert opt.lr == pytest.approx(0.1)
    opt.lr = 0.5
    assert opt.lr == pytest.approx(0.5)
    opt.step()
    np.testing.assert_allclose(p.data, [0.5])


def test_adam_lr_is_settable_and_used() -> None:
    p = _param([1.0], [2.0])
    opt = optim.Adam([p], lr=0.1)
    opt.lr = 0.3
    opt.step()
    np.testing.assert_allclose(p.data, [0.7], atol=1e-6)


def _train_steps(
    model: nn.Sequential, opt, rng: np.random.Generator, steps: int
) -> list[np.ndarray]:
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        x = rng.standard_normal((4, 3))
        y = rng.integers(0, 2, 4)
        opt.zero_grad()
        loss_fn.forward(model.forward(x, training=True), y)
        model.backward(loss_fn.backward())
        opt.step()
    return [p.data.copy() for p in model.parameters()]


def _model() -> nn.Sequential:
    return nn.Sequential([nn.Dense(3, 5, rng=0), nn.Tanh(), nn.Dense(5, 2, rng=1)]).astype(
        np.float64
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
        lambda ps: optim.Adam(ps, lr=1e-2, weight_decay=1e-3),
        lambda ps: optim.AdamW(ps, lr=1e-2),
    ],
    ids=["sgd", "adam", "adamw"],
)
def test_state_dict_round_trip_continues_identically(make) -> None:
    # Reference: 6 uninterrupted steps.
    reference = _model()
    expected = _train_steps(reference, make(reference.parameters()), np.random.default_rng(0), 6)

    # Interrupted: 3 steps, save model and optimiser state, rebuild both, 3 more steps.
    rng = np.random.default_rng(0)
    first = _model()
    opt = make(first.parameters())
    _train_steps(first, opt, rng, 3)
    model_state = first.state_dict()
    opt_state = opt.state_dict()
    # The state must be plain arrays and numbers, so that it can go into an .npz.
    for value in _flatten_values(opt_state):
        assert isinstance(value, np.ndarray | int | float | bool | str | np.generic), type(value)

    second = _model()
    second.load_state_dict(model_state)
    opt2 = make(second.parameters())
    opt2.load_state_dict(opt_state)
    got = _train_steps(second, opt2, rng, 3)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_optimiser_state_dict_is_a_copy() -> None:
    p = _param([1.0], [1.0])
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    opt.step()
    state = opt.state_dict()
    before = {k: np.array(v, copy=True) for k, v in state.items() if isinstance(v, np.ndarray)}
    opt.step()
    for key, value in before.items():
        np.testing.assert_array_equal(state[key], value)


def test_state_dict_restores_lr() -> None:
    p = _param([1.0], [1.0])
    opt = optim.SGD([p], lr=0.1)
    opt.lr = 0.01
    opt2 = optim.SGD([_param([1.0], [1.0])], lr=0.1)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.lr == pytest.approx(0.01)


def _flatten_values(state) -> list:
    if isinstance(state, dict):
        return [v for value in state.values() for v in _flatten_values(value)]
    if isinstance(state, list | tuple):
        return [v for value in state for v in _flatten_values(value)]
    return [state]


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
        lambda ps: optim.Adam(ps, weight_decay=0.1),
        lambda ps: optim.AdamW(ps),
    ],
    ids=["sgd", "adam", "adamw"],
)
def test_float32_parameters_stay_float32_and_in_place(make) -> None:
    p = nn.Parameter(np.ones((2, 3), dtype=np.float32))
    data = p.data
    opt = make([p])
    for _ in range(2):
        p.grad[...] = 0.5
        opt.step()
    assert p.data.dtype == np.float32
    assert np.shares_memory(p.data, data)
    assert np.all(p.data < 1)


def test_a_state_of_other_parameters_or_a_negative_second_moment_is_refused() -> None:
    params = [_param([1.0, 2.0], [0.1, 0.2]), _param([3.0], [0.3])]
    adam = optim.Adam(params, lr=0.1)
    adam.step()
    state = adam.state_dict()
    fewer = optim.Adam(params[:1], lr=0.1)
    with pytest.raises(ValueError, match="state of 2 parameters, but this optimiser has 1"):
        fewer.load_state_dict(state)
    more = optim.Adam([*params, _param([4.0], [0.4])], lr=0.1)
    with pytest.raises(ValueError, match="of 2 parameters, but this optimiser has 3"):
        more.load_state_dict(state)
    bad = {**state, "state.0.exp_avg_sq": np.array([0.01, -0.5])}  # sqrt: NaN weights
    with pytest.raises(ValueError, match=r"'state\.0\.exp_avg_sq' holds negative values"):
        optim.Adam(params, lr=0.1).load_state_dict(bad)
    older = {k: v for k, v in state.items() if k != "param_count"}  # files before the count
    optim.Adam(params, lr=0.1).load_state_dict(older)
