"""The fast kernels (`npcnn.kernels`) held to the reference computation in float64.

Each fast kernel is run beside its reference: the `npcnn.nn.functional` kernel
of the same name, or, for a fused kernel, the chain of reference kernels it
replaces (written out below with the fused kernel's signature). Outputs,
new running statistics and every gradient must agree to rtol 1e-10 (values
of order 1), with inputs in C order and as the channels-last views the fast
kernels hand each other, with ties, negative and zero batch-norm weights,
padded and overlapping windows, and both settings of `need_cache` and
`need_input_grad`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from npcnn import kernels as K
from npcnn.nn import functional as F

TIGHT = {"rtol": 1e-10, "atol": 1e-12}


# --- the reference computation of each fused kernel: its chain of reference kernels ---


def _bn_relu_pool_forward(x, w, b, rm, rv, training, momentum, eps, nbt, k, s=None, p=0, **_):
    z, norm_cache, rm, rv = F.batch_norm_forward(x, w, b, rm, rv, training, momentum, eps, nbt)
    r, relu_cache = F.relu_forward(z)
    y, pool_cache = F.max_pool2d_forward(r, k, s, p)
    return y, (norm_cache, relu_cache, pool_cache), rm, rv


def _bn_relu_pool_backward(dy, cache):
    norm_cache, relu_cache, pool_cache = cache
    dz = F.relu_backward(F.max_pool2d_backward(dy, pool_cache), relu_cache)
    return F.batch_norm_backward(dz, norm_cache)


def _bn_relu_forward(x, w, b, rm, rv, training, momentum=0.1, eps=1e-5, nbt=0, **_):
    z, norm_cache, rm, rv = F.batch_norm_forward(x, w, b, rm, rv, training, momentum, eps, nbt)
    y, relu_cache = F.relu_forward(z)
    return y, (norm_cache, relu_cache), rm, rv


def _bn_relu_backward(dy, cache):
    norm_cache, relu_cache = cache
    return F.batch_norm_backward(F.relu_backward(dy, relu_cache), norm_cache)


def _pool_relu_forward(x, k, s=None, p=0, **_):
    r, relu_cache = F.relu_forward(x)  # max-pooling and ReLU commute
    y, pool_cache = F.max_pool2d_forward(r, k, s, p)
    return y, (relu_cache, pool_cache)


def _pool_relu_backward(dy, cache):
    relu_cache, pool_cache = cache
    return F.relu_backward(F.max_pool2d_backward(dy, pool_cache), relu_cache)


def _flatten_dense_forward(x, weight, bias=None):
    flat, flatten_cache = F.flatten_forward(x)
    y, dense_cache = F.dense_forward(flat, weight, bias)
    return y, (flatten_cache, dense_cache)


def _flatten_dense_backward(dy, cache, need_input_grad=True):
    flatten_cache, dense_cache = cache
    dx, dweight, dbias = F.dense_backward(dy, dense_cache, need_input_grad)
    return (None if dx is None else F.flatten_backward(dx, flatten_cache)), dweight, dbias


#: The reference computation of every fast kernel: (forward, backward).
REFERENCE: dict[str, tuple[Callable, Callable]] = {
    "batch_norm_relu_max_pool2d": (_bn_relu_pool_forward, _bn_relu_pool_backward),
    "batch_norm_relu": (_bn_relu_forward, _bn_relu_backward),
    "max_pool2d_relu": (_pool_relu_forward, _pool_relu_backward),
    "flatten_dense": (_flatten_dense_forward, _flatten_dense_backward),
}
for _name in (
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "global_avg_pool2d",
    "batch_norm",
    "dense",
    "flatten",
    "relu",
):
    REFERENCE[_name] = (getattr(F, f"{_name}_forward"), getattr(F, f"{_name}_backward"))


# --- the cases ------------------------------------------------------------------------


@dataclass
class Case:
    """One call of kernel `op`: forward(*args, **kwargs), then backward(dy, cache, **back)."""

    op: str
    make: Callable[[np.random.Generator], tuple]  # rng -> args
    kwargs: dict = field(default_factory=dict)
    back: dict = field(default_factory=dict)
    backward: bool = True  # False: a forward that keeps no cache
    channels_last: bool = False  # hand x over as an NCHW view of NHWC memory


def channels_last(x: np.ndarray) -> np.ndarray:
    """x's values in channels-last memory, as an NCHW view (what the fast kernels hand on)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _conv(n, c, h, w, o, k, s, p, bias=True, groups=1):
    def make(rng):
        kh, kw = (k, k) if isinstance(k, int) else k
        b = rng.standard_normal(o) if bias else None
        x = rng.standard_normal((n, c, h, w))
        return x, rng.standard_normal((o, c // groups, kh, kw)), b, s, p, groups

    return make


def _pool_input(shape, ties=False):
    def make(rng):
        if ties:  # small integers: ties in most windows, some all negative
            return rng.integers(-2, 3, shape).astype(np.float64)
        return rng.standard_normal(shape)

    return make


def _pool(shape, k, s, p, ties=False):
    make_x = _pool_input(shape, ties)
    return lambda rng: (make_x(rng), k, s, p)


def _norm_args(shape, weight=None, training=True, momentum=0.1, mean=0.0):
    """batch_norm_forward's arguments: x (a mean far from 0 when asked), weight (given, or
    random with a negative entry), bias, running statistics away from 0 and 1."""

    def make(rng):
        c = shape[1]
        x = rng.standard_normal(shape) * 2 + mean
        if len(shape) == 4 and weight is not None:  # integer-valued: ties in the windows
            x = np.round(x)
        w = np.array(weight, dtype=float) if weight is not None else rng.uniform(0.5, 2, c)
        if weight is None:
            w[0] = -w[0]
        rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2, c)
        return x, w, rng.standard_normal(c), rm, rv, training, momentum, 1e-3, 3

    return make


def _with_pool(make_norm, k, s=None, p=0):
    return lambda rng: (*make_norm(rng), k, s, p)


def _dense(n, fin, fout, bias=True):
    def make(rng):
        b = rng.standard_normal(fout) if bias else None
        return rng.standard_normal((n, fin)), rng.standard_normal((fout, fin)), b

    return make


def _flatten_dense(shape, fout):
    def make(rng):
        features = int(np.prod(shape[1:]))
        return (
            rng.standard_normal(shape),
            rng.standard_normal((fout, features)),
            rng.standard_normal(fout),
        )

    return make


NO_INPUT_GRAD = {"need_input_grad": False}
NO_CACHE = {"need_cache": False}
WEIGHTS = [1.5, -0.7, 0.3]

CASES: dict[str, Case] = {
    # conv2d: few channels (im2col built transposed) and many; strides, paddings, kernels
    "conv2d_3x3": Case("conv2d", _conv(2, 3, 7, 6, 4, 3, 2, 1)),
    "conv2d_one_channel": Case("conv2d", _conv(3, 1, 8, 8, 5, 3, 1, 1, bias=False)),
    "conv2d_many_channels": Case("conv2d", _conv(2, 6, 7, 5, 3, (3, 2), (2, 1), (1, 0))),
    "conv2d_channels_last": Case("conv2d", _conv(2, 5, 6, 6, 4, 4, 1, 1), channels_last=True),
    "conv2d_stride_3": Case("conv2d", _conv(2, 4, 9, 7, 5, (4, 2), (3, 2), (2, 1))),
    # strided with dx: col2im of dy @ W^T; a 1x1 projection over several chunks of
    # images, and a stride over the kernel's size (pixels no window reads)
    "conv2d_1x1_stride_2": Case("conv2d", _conv(11, 6, 7, 8, 5, 1, 2, 0, bias=False)),
    "conv2d_stride_over_kernel": Case("conv2d", _conv(2, 4, 9, 10, 3, 2, 3, 1)),
    "conv2d_no_dx": Case("conv2d", _conv(2, 5, 6, 6, 4, 3, 1, 1), back=NO_INPUT_GRAD),
    "conv2d_no_dx_one_channel": Case("conv2d", _conv(2, 1, 6, 6, 4, 3, 2, 1), back=NO_INPUT_GRAD),
    # grouped (a batched GEMM per chunk) and depthwise (shifted slices), with and without dx
    "conv2d_grouped": Case("conv2d", _conv(3, 6, 7, 6, 4, 3, 2, 1, groups=2)),
    "conv2d_grouped_non_square": Case(
        "conv2d", _conv(2, 6, 8, 7, 9, (3, 2), (2, 1), (1, 0), bias=False, groups=3)
    ),
    "conv2d_grouped_channels_last": Case(
        "conv2d", _conv(2, 8, 6, 6, 8, 3, 1, 1, groups=4), channels_last=True
    ),
    "conv2d_grouped_no_dx": Case(
        "conv2d", _conv(2, 4, 6, 6, 6, 3, 2, 1, groups=2), back=NO_INPUT_GRAD
    ),
    "global_avg_pool2d": Case(
        "global_avg_pool2d", lambda rng: (rng.standard_normal((3, 4, 5, 6)),)
    ),
    "global_avg_pool2d_channels_last": Case(
        "global_avg_pool2d", lambda rng: (rng.standard_normal((2, 5, 3, 4)),), channels_last=True
    ),
    "conv2d_depthwise": Case("conv2d", _conv(3, 5, 7, 6, 5, 3, 1, 1, groups=5)),
    "conv2d_depthwise_strided": Case(
        "conv2d", _conv(2, 4, 9, 8, 4, (3, 2), (2, 3), (1, 1), groups=4)
    ),
    "conv2d_depthwise_multiplier": Case(
        "conv2d", _conv(2, 3, 6, 7, 6, 3, 2, 1, bias=False, groups=3), channels_last=True
    ),
    "conv2d_depthwise_no_dx": Case(
        "conv2d", _conv(2, 4, 6, 6, 8, 5, 1, 2, groups=4), back=NO_INPUT_GRAD
    ),
    # max pooling: the 2x2 fast path (even sizes), the general loop, overlapping, padded
    "max_pool2d_2x2_ties": Case("max_pool2d", _pool((2, 3, 6, 8), 2, None, 0, ties=True)),
    "max_pool2d_2x2_odd": Case("max_pool2d", _pool((2, 3, 9, 7), 2, None, 0, ties=True)),
    "max_pool2d_overlapping": Case("max_pool2d", _pool((2, 2, 9, 8), 3, 2, 1)),
    "max_pool2d_non_square": Case("max_pool2d", _pool((2, 2, 6, 9), (2, 3), (1, 2), (1, 1))),
    "max_pool2d_channels_last": Case(
        "max_pool2d", _pool((2, 4, 8, 8), 2, None, 0, ties=True), channels_last=True
    ),
    "max_pool2d_no_cache": Case(
        "max_pool2d", _pool((2, 3, 9, 8), 3, 2, 1), NO_CACHE, backward=False
    ),
    "max_pool2d_relu": Case("max_pool2d_relu", _pool((2, 3, 6, 8), 2, None, 0, ties=True)),
    "max_pool2d_relu_overlapping": Case("max_pool2d_relu", _pool((2, 2, 9, 8), 3, 2, 1)),
    "max_pool2d_relu_no_cache": Case(
        "max_pool2d_relu", _pool((2, 3, 8, 8), 2, None, 0), NO_CACHE, backward=False
    ),
    "avg_pool2d": Case("avg_pool2d", _pool((3, 2, 5, 5), (3, 2), (2, 1), (1, 0))),
    "avg_pool2d_channels_last": Case(
        "avg_pool2d", _pool((2, 3, 6, 6), 2, None, 0), channels_last=True
    ),
    # batch norm: (N, C) and (N, C, H, W), training and inference, momentum None
    "batch_norm_1d": Case("batch_norm", _norm_args((8, 5), mean=50.0)),
    "batch_norm_2d": Case("batch_norm", _norm_args((4, 3, 5, 6), momentum=None)),
    "batch_norm_2d_channels_last": Case(
        "batch_norm", _norm_args((4, 3, 5, 6), mean=-20.0), channels_last=True
    ),
    "batch_norm_inference": Case("batch_norm", _norm_args((4, 3, 5, 6), training=False)),
    "batch_norm_no_cache": Case("batch_norm", _norm_args((4, 3, 5, 6)), NO_CACHE, backward=False),
    # batch norm then ReLU (fused), and its inference forms
    "batch_norm_relu_1d": Case("batch_norm_relu", _norm_args((9, 3), mean=50.0)),
    "batch_norm_relu_2d": Case("batch_norm_relu", _norm_args((4, 3, 5, 6), momentum=None)),
    "batch_norm_relu_inference": Case("batch_norm_relu", _norm_args((4, 3, 5, 6), training=False)),
    "batch_norm_relu_inference_no_cache": Case(
        "batch_norm_relu", _norm_args((4, 3, 5, 6), training=False), NO_CACHE, backward=False
    ),
    # batch norm, ReLU and max pooling (fused): negative and zero weights, windows no
    # pixel of which is covered, overlapping and padded windows, inference
    "bn_relu_pool_2x2": Case(
        "batch_norm_relu_max_pool2d", _with_pool(_norm_args((4, 3, 8, 10), WEIGHTS), 2)
    ),
    "bn_relu_pool_uncovered": Case(
        "batch_norm_relu_max_pool2d", _with_pool(_norm_args((4, 3, 9, 7), WEIGHTS), 2)
    ),
    "bn_relu_pool_overlapping": Case(
        "batch_norm_relu_max_pool2d", _with_pool(_norm_args((4, 3, 9, 8), WEIGHTS), 3, 2, 1)
    ),
    "bn_relu_pool_padded": Case(
        "batch_norm_relu_max_pool2d", _with_pool(_norm_args((4, 3, 8, 8), WEIGHTS), 2, 2, 1)
    ),
    "bn_relu_pool_mean_far_from_0": Case(
        "batch_norm_relu_max_pool2d",
        _with_pool(_norm_args((3, 3, 6, 6), mean=100.0), 2),
        channels_last=True,
    ),
    "bn_relu_pool_zero_weight": Case(
        "batch_norm_relu_max_pool2d", _with_pool(_norm_args((3, 2, 6, 6), [0.0, 1.0]), 2)
    ),
    "bn_relu_pool_inference": Case(
        "batch_norm_relu_max_pool2d",
        _with_pool(_norm_args((3, 3, 6, 6), WEIGHTS, training=False), 2),
    ),
    "bn_relu_pool_inference_no_cache": Case(
        "batch_norm_relu_max_pool2d",
        _with_pool(_norm_args((3, 3, 9, 8), training=False), 3, 2, 1),
        NO_CACHE,
        backward=False,
    ),
    # dense, flatten and both together
    "dense": Case("dense", _dense(5, 7, 4)),
    "dense_no_bias_no_dx": Case("dense", _dense(6, 9, 3, bias=False), back=NO_INPUT_GRAD),
    "flatten": Case("flatten", lambda rng: (rng.standard_normal((2, 3, 4, 5)),)),
    "flatten_channels_last": Case(
        "flatten", lambda rng: (rng.standard_normal((2, 3, 4, 5)),), channels_last=True
    ),
    "flatten_dense_channels_last": Case(
        "flatten_dense", _flatten_dense((2, 3, 5, 6), 4), channels_last=True
    ),
    "flatten_dense_one_channel": Case(
        "flatten_dense", _flatten_dense((2, 1, 5, 6), 4), channels_last=True
    ),
    "flatten_dense_c_order": Case("flatten_dense", _flatten_dense((3, 2, 4, 4), 5)),
    "flatten_dense_no_dx": Case(
        "flatten_dense", _flatten_dense((2, 3, 5, 6), 4), back=NO_INPUT_GRAD, channels_last=True
    ),
    "relu": Case("relu", lambda rng: (rng.integers(-2, 3, (3, 2, 4, 4)).astype(float),)),
    "relu_channels_last": Case(
        "relu", lambda rng: (rng.standard_normal((3, 4, 4, 5)),), channels_last=True
    ),
}


def _assert_close(ours, theirs, what: str) -> None:
    if theirs is None or ours is None:
        assert ours is None and theirs is None, what
        return
    assert ours.shape == theirs.shape, what
    np.testing.assert_allclose(ours, theirs, **TIGHT, err_msg=what)


@pytest.mark.parametrize("name", CASES)
def test_fast_kernel_matches_the_reference(name: str, rng: np.random.Generator) -> None:
    case = CASES[name]
    args = list(case.make(rng))
    if case.channels_last:
        args[0] = channels_last(args[0])
    inputs = copy.deepcopy(args)
    fast = getattr(K, f"{case.op}_forward")(*args, **case.kwargs)
    reference = REFERENCE[case.op][0](*copy.deepcopy(args))
    for i, (ours, theirs) in enumerate(zip(fast, reference, strict=True)):
        if i != 1:  # the output, and the new running statistics
            _assert_close(ours, theirs, f"{name}: forward result {i}")
    for before, after in zip(inputs, args, strict=True):  # inputs are left as they were
        if isinstance(before, np.ndarray):
            np.testing.assert_array_equal(after, before)
    if not case.backward:
        assert fast[1] is None  # need_cache=False: nothing kept for a backward
        return
    dy = rng.standard_normal(fast[0].shape)
    ours = getattr(K, f"{case.op}_backward")(dy, fast[1], **case.back)
    theirs = REFERENCE[case.op][1](dy, reference[1], **case.back)
    ours, theirs = (g if isinstance(g, tuple) else (g,) for g in (ours, theirs))
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        _assert_close(a, b, f"{name}: gradient {i}")


def test_every_fast_kernel_is_held_to_the_reference() -> None:
    forwards = {n.removesuffix("_forward") for n in K.__all__ if n.endswith("_forward")}
    assert forwards == set(REFERENCE) == {case.op for case in CASES.values()}
    assert {n.removesuffix("_backward") for n in K.__all__ if n.endswith("_backward")} == forwards


@pytest.mark.parametrize("op", ["batch_norm", "batch_norm_relu"])
def test_batch_norm_kernels_leave_an_empty_batch_unnormalised(op: str) -> None:
    x = np.zeros((0, 3, 4, 4))
    weight, bias, mean, var = np.ones(3), np.zeros(3), np.full(3, 0.5), np.full(3, 2.0)
    y, cache, new_mean, new_var = getattr(K, f"{op}_forward")(x, weight, bias, mean, var, True)
    assert y.shape == x.shape
    np.testing.assert_array_equal(new_mean, mean)
    np.testing.assert_array_equal(new_var, var)
    dx, dweight, dbias = getattr(K, f"{op}_backward")(np.zeros_like(y), cache)
    assert dx.shape == x.shape and not dweight.any() and not dbias.any()


def test_fast_conv2d_refuses_channels_that_do_not_split_into_groups() -> None:
    with pytest.raises(ValueError, match="groups=3 does not fit"):
        K.conv2d_forward(np.zeros((1, 4, 5, 5)), np.zeros((6, 1, 3, 3)), groups=3)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: K.conv2d_backward(np.zeros((1, 3, 3, 2)), _conv_cache()), r"dy must have shape"),
        (lambda: K.max_pool2d_backward(np.zeros((1, 2, 2, 3)), _pool_cache()), r"dy must have"),
        (lambda: K.dense_backward(np.zeros((2, 4)), K.dense_forward(*_dense_xw())[1]), "dy must"),
    ],
    ids=["conv2d", "max_pool2d", "dense"],
)
def test_a_gradient_of_another_shape_is_refused(call: Callable, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def _conv_cache() -> tuple:
    return K.conv2d_forward(np.zeros((1, 1, 4, 4)), np.ones((2, 1, 2, 2)))[1]


def _pool_cache() -> tuple:
    return K.max_pool2d_forward(np.zeros((1, 3, 4, 4)), 2)[1]


def _dense_xw() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((2, 3)), np.zeros((5, 3))
