"""The contract every registered layer keeps, checked over one table of examples.

As Keras' `run_layer_test` and Chainer's `FunctionTestCase`: each row of
`EXAMPLES` builds a layer and names an input shape, and every test below runs
on every row. A new layer needs a class, a registry entry and one row here;
`test_every_registered_built_in_layer_has_an_example` fails until it has one.

The contracts, each a test:
- config: `from_config(config())` rebuilds an equal layer; the config is JSON data;
  `state_shapes(config)` states the shapes of the layer's own arrays;
- save/load: `npcnn.save` and `npcnn.load` keep the outputs, gradients and state;
- gradcheck: backward agrees with finite differences (float64), training and inference;
- dtype: float32 stays float32, float64 stays float64 (outputs, gradients, state);
- layout: strided, Fortran-ordered and channels-last input give the contiguous results;
- fast == reference: the fast kernels (fused or not) agree with `npcnn.use_reference()`;
- empty batch: 0 images in, 0 images out, of the right shape, both passes;
- need_input_grad=False: backward returns None, the parameter gradients unchanged.
Every pass also checks that the layer writes neither into its input nor into dy.

Rows hold their layer's state away from its initial values (`_prepared`): a
batch norm with weight 1, bias 0 and statistics 0 and 1 would hide mix-ups.
A row may list contracts it is known to break (`known_failures`): those cases
are strict xfails, so that the fix shows as a failure to remove the entry.

Tolerances: float64, rtol 1e-10 with atol 1e-12 (all values are of order 1)
wherever the same maths is computed in another order; exact where it is not.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

import npcnn
from npcnn import nn
from npcnn.nn.fusion import FUSIONS
from npcnn.nn.registry import layer_type_name
from npcnn.runtime import threads

TIGHT = {"rtol": 1e-10, "atol": 1e-12}
MODES = ("training", "inference")
#: Both modes on either kernel set: the fast kernels, and npcnn.use_reference()'s.
KERNEL_MODES = (*MODES, "training-reference", "inference-reference")


@dataclass(frozen=True)
class Example:
    """One row: `make()` builds a fresh layer, fed batches of `shape` (batch axis first).

    `known_failures` maps a contract ("save_load", or "save_load:training" for one
    mode) to the reason it fails; those cases are strict xfails. `subject` names the
    layer type the row is for when it is not `make()`'s own type: a layer with several
    inputs (Add, Concatenate) is tested inside a one-input `nn.Model`.
    """

    name: str
    make: Callable[[], nn.Layer]
    shape: tuple[int, ...]
    known_failures: Mapping[str, str] = field(default_factory=dict)
    subject: str = ""


def _chain_with_the_notebook_s_fusions() -> nn.Sequential:
    """(3, 2, 6, 6) -> (3, 4): BatchNorm2D+ReLU+MaxPool2D, Flatten+Dense, BatchNorm1D+ReLU."""
    return nn.Sequential(
        nn.Conv2D(2, 3, 3, padding=1, bias=False, rng=0),
        nn.BatchNorm2D(3),
        nn.ReLU(),
        nn.MaxPool2D(2),
        nn.Flatten(),
        nn.Dense(27, 5, bias=False, rng=0),
        nn.BatchNorm1D(5),
        nn.ReLU(),
        nn.Dense(5, 4, rng=0),
    )


def _chain_with_the_other_fusions() -> nn.Sequential:
    """(3, 2, 10, 10) -> (3, 2): BatchNorm2D+MaxPool2D+ReLU, BatchNorm2D+ReLU,
    MaxPool2D+ReLU, ReLU+MaxPool2D."""
    return nn.Sequential(
        nn.BatchNorm2D(2),
        nn.MaxPool2D(2),
        nn.ReLU(),  # (3, 2, 5, 5)
        nn.Conv2D(2, 3, 2, rng=0),  # (3, 3, 4, 4)
        nn.BatchNorm2D(3),
        nn.ReLU(),
        nn.Conv2D(3, 3, 1, rng=0),
        nn.MaxPool2D(2),
        nn.ReLU(),  # (3, 3, 2, 2)
        nn.Conv2D(3, 2, 1, rng=0),
        nn.ReLU(),
        nn.MaxPool2D(2),  # (3, 2, 1, 1)
        nn.Flatten(),
    )


def _depthwise_separable_chain() -> nn.Sequential:
    """(3, 2, 6, 6) -> (3, 3): MobileNet's block (depthwise 3x3, pointwise 1x1, each with
    BatchNorm2D+ReLU fused), a grouped conv, Identity, GlobalAvgPool2D and Dense."""
    return nn.Sequential(
        nn.Conv2D(2, 4, 3, stride=2, padding=1, groups=2, bias=False, rng=0),
        nn.BatchNorm2D(4),
        nn.ReLU(),
        nn.Conv2D(4, 6, 1, bias=False, rng=1),
        nn.BatchNorm2D(6),
        nn.ReLU(),
        nn.Conv2D(6, 6, 3, padding=1, groups=3, rng=2),
        nn.Identity(),
        nn.GlobalAvgPool2D(),
        nn.Dense(6, 3, rng=3),
    )


def _add_graph() -> nn.Model:
    """(2, 2, 4, 4) -> (2, 2, 4, 4): x + conv(x) + tanh(conv(x)), x used twice."""
    x = nn.Input((2, 4, 4))
    a = nn.Conv2D(2, 2, 3, padding=1, rng=0)(x)
    return nn.Model(x, nn.Add()([x, a, nn.Tanh()(a)]))


def _concatenate_graph() -> nn.Model:
    """(2, 2, 4, 4) -> (2, 7, 4, 4): a 1x1 conv, x itself and a 3x3 max pool, joined."""
    x = nn.Input((2, 4, 4))
    branches = [nn.Conv2D(2, 3, 1, rng=0)(x), x, nn.MaxPool2D(3, 1, 1)(x)]
    return nn.Model(x, nn.Concatenate()(branches))


def _residual_graph() -> nn.Model:
    """(3, 2, 6, 6) -> (3, 4): a residual block with a projection shortcut (1x1 conv,
    stride 2, batch norm) inside a graph, used as a layer, then Flatten+Dense."""
    x = nn.Input((2, 6, 6))
    y = nn.Conv2D(2, 4, 3, stride=2, padding=1, bias=False, rng=0)(x, name="conv1")
    y = nn.ReLU()(nn.BatchNorm2D(4)(y, name="bn1"))
    y = nn.BatchNorm2D(4)(nn.Conv2D(4, 4, 3, padding=1, bias=False, rng=1)(y), name="bn2")
    s = nn.Conv2D(2, 4, 1, stride=2, bias=False, rng=2)(x, name="proj")
    s = nn.BatchNorm2D(4)(s, name="proj_bn")
    block = nn.Model(x, nn.ReLU()(nn.Add()([y, s])))
    outer = nn.Input((2, 6, 6))
    y = nn.Dense(36, 4, rng=3)(nn.Flatten()(block(outer, name="block1")), name="fc")
    return nn.Model(outer, y)


#: One row per registered built-in layer type, and rows for the variants that
#: take other code paths (strides, padding, no bias, cumulative statistics).
EXAMPLES: tuple[Example, ...] = (
    Example("Conv2D", lambda: nn.Conv2D(2, 3, 3, rng=0), (2, 2, 5, 5)),
    Example(
        "Conv2D-strided-padded-no-bias",
        lambda: nn.Conv2D(2, 3, (3, 2), stride=(2, 1), padding=(1, 0), bias=False, rng=0),
        (2, 2, 6, 5),
    ),
    Example(
        "Conv2D-grouped",
        lambda: nn.Conv2D(4, 6, (3, 2), stride=(2, 1), padding=1, groups=2, rng=0),
        (2, 4, 6, 5),
    ),
    Example(
        "Conv2D-depthwise",
        lambda: nn.Conv2D(3, 6, 3, stride=2, padding=1, groups=3, bias=False, rng=0),
        (2, 3, 7, 6),
    ),
    Example("Dense", lambda: nn.Dense(4, 3, rng=0), (3, 4)),
    Example("Dense-no-bias", lambda: nn.Dense(4, 3, bias=False, rng=0), (3, 4)),
    Example("MaxPool2D", lambda: nn.MaxPool2D(2), (2, 2, 4, 6)),
    Example("MaxPool2D-overlapping-padded", lambda: nn.MaxPool2D(3, 2, 1), (2, 2, 5, 6)),
    Example("MaxPool2D-ceil-mode", lambda: nn.MaxPool2D(3, 2, ceil_mode=True), (2, 2, 6, 8)),
    Example("AvgPool2D", lambda: nn.AvgPool2D(2), (2, 2, 4, 6)),
    Example("AvgPool2D-overlapping-padded", lambda: nn.AvgPool2D(3, 2, 1), (2, 2, 5, 6)),
    Example("GlobalAvgPool2D", nn.GlobalAvgPool2D, (2, 3, 4, 5)),
    Example("Identity", nn.Identity, (2, 3, 4, 4)),
    Example("ZeroPad2D", lambda: nn.ZeroPad2D((0, 1, 2, 1)), (2, 3, 4, 5)),
    Example("BatchNorm1D", lambda: nn.BatchNorm1D(3), (4, 3)),
    Example("BatchNorm2D", lambda: nn.BatchNorm2D(2), (3, 2, 3, 4)),
    Example("BatchNorm2D-momentum-None", lambda: nn.BatchNorm2D(2, momentum=None), (3, 2, 3, 4)),
    Example("ReLU", nn.ReLU, (2, 3, 4, 4)),
    Example("LeakyReLU", lambda: nn.LeakyReLU(0.2), (2, 3, 4)),
    Example("Sigmoid", nn.Sigmoid, (3, 5)),
    Example("Tanh", nn.Tanh, (2, 3, 2, 2)),
    Example("Dropout", lambda: nn.Dropout(0.5, rng=0), (3, 8)),
    Example("Flatten", nn.Flatten, (2, 3, 2, 4)),
    Example("Sequential", _chain_with_the_notebook_s_fusions, (3, 2, 6, 6)),
    Example("Sequential-other-fusions", _chain_with_the_other_fusions, (3, 2, 10, 10)),
    Example("Sequential-depthwise-separable", _depthwise_separable_chain, (3, 2, 6, 6)),
    Example("Add", _add_graph, (2, 2, 4, 4), subject="Add"),
    Example("Concatenate", _concatenate_graph, (2, 2, 4, 4), subject="Concatenate"),
    Example("Model", _residual_graph, (3, 2, 6, 6)),
)


#: The contracts, as `known_failures` and the tests' parameters name them.
CONTRACTS = (
    "config",
    "save_load",
    "gradcheck",
    "dtype",
    "layout",
    "fast_vs_reference",
    "empty_batch",
    "need_input_grad",
)


def _cases(contract: str, modes: tuple[str, ...] = ("",)) -> list[Any]:
    """pytest params (example, mode) of every row and mode; a known failure is a strict xfail."""
    assert contract in CONTRACTS
    params = []
    for example in EXAMPLES:
        for mode in modes:
            reason = example.known_failures.get(f"{contract}:{mode}" if mode else contract)
            reason = reason or example.known_failures.get(contract)
            marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
            case_id = f"{example.name}-{mode}" if mode else example.name
            params.append(pytest.param(example, mode, marks=marks, id=case_id))
    return params


# --- helpers -------------------------------------------------------------------------------


def _prepared(example: Example, dtype: type = np.float64, seed: int = 0) -> nn.Layer:
    """The row's layer in `dtype`, with random parameters and positive random float
    buffers (running variances must be positive; means may as well be)."""
    rng = np.random.default_rng(seed)
    layer = example.make().astype(dtype)
    for _, p in layer.named_parameters():
        p.data[...] = rng.standard_normal(p.shape)
    for _, buffer in layer.named_buffers():
        if np.issubdtype(buffer.dtype, np.floating):
            buffer[...] = rng.uniform(0.5, 2.0, buffer.shape)
    return layer


def _input(example: Example, dtype: type = np.float64, batch: int | None = None) -> np.ndarray:
    shape = example.shape if batch is None else (batch, *example.shape[1:])
    return np.random.default_rng(1).standard_normal(shape).astype(dtype)


@dataclass
class Pass:
    """What one forward and backward produced (copies)."""

    y: np.ndarray
    dx: np.ndarray | None
    grads: dict[str, np.ndarray]
    state: dict[str, np.ndarray]


def _identity(a: np.ndarray) -> np.ndarray:
    return a


def _run(
    layer: nn.Layer,
    x: np.ndarray,
    training: bool,
    relayout: Callable[[np.ndarray], np.ndarray] = _identity,
    need_input_grad: bool = True,
) -> Pass:
    """Forward x (through `relayout`), then backward a fixed random dy of y's shape and
    dtype (also through `relayout`), from zeroed gradients; inference mode inside
    `inference_backward`. Asserts that neither x nor dy was written to."""
    layer.zero_grad()
    x = relayout(x)
    x_before = x.copy()
    with nn.inference_backward():
        y = layer.forward(x, training=training).copy()
        dy = relayout(np.random.default_rng(2).standard_normal(y.shape).astype(y.dtype))
        dy_before = dy.copy()
        dx = layer.backward(dy, need_input_grad=need_input_grad)
    np.testing.assert_array_equal(x, x_before, err_msg="forward or backward wrote into x")
    np.testing.assert_array_equal(dy, dy_before, err_msg="backward wrote into dy")
    grads = {name: p.grad.copy() for name, p in layer.named_parameters()}
    return Pass(y, None if dx is None else dx.copy(), grads, layer.state_dict())


def _assert_same(ours: Pass, theirs: Pass, exact: bool = False) -> None:
    """Same outputs, input gradient, parameter gradients and state (TIGHT unless exact)."""

    def check(a: np.ndarray | None, b: np.ndarray | None, what: str) -> None:
        assert (a is None) == (b is None), what
        if a is None or b is None:
            return
        assert a.shape == b.shape and a.dtype == b.dtype, f"{what}: {a.shape} {a.dtype}"
        if exact:
            np.testing.assert_array_equal(a, b, err_msg=what)
        else:
            np.testing.assert_allclose(a, b, **TIGHT, err_msg=what)

    check(ours.y, theirs.y, "output")
    check(ours.dx, theirs.dx, "input gradient")
    assert ours.grads.keys() == theirs.grads.keys()
    assert list(ours.state) == list(theirs.state)
    for name in ours.grads:
        check(ours.grads[name], theirs.grads[name], f"gradient of {name}")
    for name in ours.state:
        check(ours.state[name], theirs.state[name], f"state {name}")


# --- the table covers the registry ---------------------------------------------------------


def test_every_registered_built_in_layer_has_an_example() -> None:
    built_in = {name for name, cls in nn.LAYERS.items() if cls.__module__.split(".")[0] == "npcnn"}
    covered = {example.subject or layer_type_name(type(example.make())) for example in EXAMPLES}
    missing = sorted(built_in - covered)
    assert not missing, f"add a row to EXAMPLES for {', '.join(missing)}"


def test_the_rows_are_named_once_and_their_known_failures_name_contracts() -> None:
    assert len({example.name for example in EXAMPLES}) == len(EXAMPLES)
    for example in EXAMPLES:
        for key in example.known_failures:
            assert key.split(":")[0] in CONTRACTS, f"{example.name}: unknown contract {key!r}"


def test_the_sequential_examples_run_every_fusion_of_the_table() -> None:
    fused = set()
    for example in EXAMPLES:
        layer = example.make()
        if isinstance(layer, nn.Sequential):
            fused |= {tuple(map(type, s.layers)) for s in layer.plan() if s.fused}
    missing = [fusion.pattern for fusion in FUSIONS if fusion.pattern not in fused]
    assert not missing, f"no Sequential row runs the fusion of {missing}"


# --- the contracts -------------------------------------------------------------------------


@pytest.mark.parametrize(("example", "mode"), _cases("config", MODES))
def test_config_rebuilds_an_equal_layer(example: Example, mode: str) -> None:
    layer = _prepared(example)
    config = layer.config()
    assert json.loads(json.dumps(config)) == config, "config() must be JSON data"
    rebuilt = type(layer).from_config(config)
    assert type(rebuilt) is type(layer) and rebuilt.config() == config
    # What npcnn.load checks a file's arrays against before building the layer.
    stated = type(layer).state_shapes(config)
    own = {name: p.shape for name, p in layer.named_parameters(recurse=False)}
    own |= {name: b.shape for name, b in layer.named_buffers(recurse=False)}
    assert (stated is None and not own) or stated == own, f"state_shapes: {stated} != {own}"
    # The dtype is the model's (npcnn.save records it), not each layer's config; the
    # state is the arrays and the random generators (dropout's masks).
    rebuilt.astype(np.float64).load_state_dict(layer.state_dict())
    nn.set_generator_states(rebuilt, nn.generator_states(layer))
    x, training = _input(example), mode == "training"
    _assert_same(_run(rebuilt, x, training), _run(layer, x, training), exact=True)


@pytest.mark.parametrize(("example", "mode"), _cases("save_load", MODES))
def test_save_and_load_keep_outputs_gradients_and_state(
    example: Example, mode: str, tmp_path
) -> None:
    model = nn.Sequential([_prepared(example)])
    path = npcnn.save(model, tmp_path / "model.npz")
    loaded = npcnn.load(path)
    assert loaded.config() == model.config()
    saved_state, loaded_state = model.state_dict(), loaded.state_dict()
    assert list(loaded_state) == list(saved_state)
    for name, value in saved_state.items():
        assert loaded_state[name].dtype == value.dtype, name
        np.testing.assert_array_equal(loaded_state[name], value, err_msg=name)
    x, training = _input(example), mode == "training"
    _assert_same(_run(loaded, x, training), _run(model, x, training), exact=True)


@pytest.mark.parametrize(("example", "mode"), _cases("gradcheck", MODES))
def test_gradcheck_passes(example: Example, mode: str) -> None:
    # gradcheck copies the layer to float64 and resets every random generator the
    # layers hold before each evaluation, so that dropout's mask stays fixed; ReLU and
    # max-pool kinks are excluded, not failed.
    layer = _prepared(example)
    result = npcnn.gradcheck(layer, _input(example), training=mode == "training", max_elements=None)
    assert result.passed(), f"\n{result}"


@pytest.mark.parametrize(("example", "mode"), _cases("dtype", ("fast", "reference")))
def test_the_dtype_is_kept(example: Example, mode: str) -> None:
    layer = _prepared(example, np.float32)
    for dtype in (np.float32, np.float64):
        layer.astype(dtype)
        for training in (True, False):
            with npcnn.use_reference(mode == "reference"):
                result = _run(layer, _input(example, dtype), training)
            assert result.y.dtype == dtype and result.dx is not None and result.dx.dtype == dtype
            for name, p in layer.named_parameters():
                assert p.data.dtype == dtype and p.grad.dtype == dtype, name
            for name, value in layer.named_buffers():
                assert value.dtype in (dtype, np.int64), name


def _strided(a: np.ndarray) -> np.ndarray:
    """a as every other column of an array twice as wide (a view, not contiguous)."""
    wide = np.full((*a.shape[:-1], 2 * a.shape[-1]), np.nan, dtype=a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


def _channels_last(a: np.ndarray) -> np.ndarray:
    """a with axis 1 laid out last in memory (NHWC for images; (N, F) in Fortran order)."""
    if a.ndim == 2:
        return np.asfortranarray(a)
    return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 1, -1)), -1, 1)


def _reversed(a: np.ndarray) -> np.ndarray:
    """a as a view with a negative stride on its last axis."""
    return np.flip(np.flip(a, -1).copy(), -1)


LAYOUTS = {
    "strided": _strided,
    "fortran": np.asfortranarray,
    "channels_last": _channels_last,
    "reversed": _reversed,
}


@pytest.mark.parametrize(
    ("example", "mode"),
    _cases("layout", (*LAYOUTS, *(f"{layout}-reference" for layout in LAYOUTS))),
)
def test_a_non_contiguous_input_gives_the_contiguous_results(example: Example, mode: str) -> None:
    layer, x, relayout = _prepared(example), _input(example), LAYOUTS[mode.split("-")[0]]
    assert not relayout(x).flags.c_contiguous
    with npcnn.use_reference(mode.endswith("reference")):
        for training in (True, False):
            contiguous = _run(copy.deepcopy(layer), x, training)
            _assert_same(_run(copy.deepcopy(layer), x, training, relayout), contiguous)


@contextmanager
def _batch_split_over_threads() -> Iterator[None]:
    """The fast kernels split even these small batches, one image per chunk on 3 threads
    (below 1 MB they keep a batch whole): chunk boundaries must not change the results."""
    before = npcnn.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        # The threshold is private to the runtime; only a test has reason to lower it.
        patch.setattr(threads, "_MIN_PARALLEL_BYTES", 0)
        npcnn.set_num_threads(3)
        try:
            yield
        finally:
            npcnn.set_num_threads(before)


@pytest.mark.parametrize(("example", "mode"), _cases("fast_vs_reference", MODES))
def test_the_fast_kernels_agree_with_the_reference(example: Example, mode: str) -> None:
    layer, x, training = _prepared(example), _input(example), mode == "training"
    with npcnn.use_reference():
        reference = _run(copy.deepcopy(layer), x, training)
    _assert_same(_run(copy.deepcopy(layer), x, training), reference)
    with nn.no_fusion():
        _assert_same(_run(copy.deepcopy(layer), x, training), reference)
    with _batch_split_over_threads():
        _assert_same(_run(copy.deepcopy(layer), x, training), reference)
        with nn.no_fusion():
            _assert_same(_run(copy.deepcopy(layer), x, training), reference)


@pytest.mark.parametrize(("example", "mode"), _cases("empty_batch", KERNEL_MODES))
def test_an_empty_batch_gives_an_empty_output(example: Example, mode: str) -> None:
    layer, training = _prepared(example), mode.startswith("training")
    with npcnn.use_reference(mode.endswith("reference")):
        full = _run(copy.deepcopy(layer), _input(example), training)
        empty = _run(layer, _input(example, batch=0), training)
    assert empty.y.shape == (0, *full.y.shape[1:]) and empty.y.dtype == full.y.dtype
    assert empty.dx is not None and empty.dx.shape == (0, *example.shape[1:])
    for name, grad in empty.grads.items():
        np.testing.assert_array_equal(grad, 0, err_msg=name)
    before = _prepared(example).state_dict()  # nothing to learn statistics from
    for name, value in empty.state.items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


@pytest.mark.parametrize(("example", "mode"), _cases("need_input_grad", KERNEL_MODES))
def test_backward_without_the_input_gradient_keeps_the_parameter_gradients(
    example: Example, mode: str
) -> None:
    layer, x, training = _prepared(example), _input(example), mode.startswith("training")
    with npcnn.use_reference(mode.endswith("reference")):
        full = _run(copy.deepcopy(layer), x, training)
        partial = _run(layer, x, training, need_input_grad=False)
    assert partial.dx is None
    _assert_same(partial, Pass(full.y, None, full.grads, full.state))
