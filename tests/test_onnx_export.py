"""npcnn.onnx.export and ``npcnn export``: ONNX Runtime runs the file as npcnn runs the model."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import npcnn
from conftest import randomise_batch_norms
from npcnn import nn
from npcnn.cli.main import main
from npcnn.models import PRESETS
from npcnn.onnx import SUPPORTED_OPSETS, export
from npcnn.onnx.export import to_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

RTOL = 1e-5


def run_onnx(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def assert_same_outputs(model: nn.Layer, path, x: np.ndarray) -> None:
    expected = model.forward(x, training=False)
    got = run_onnx(path, x)
    assert got.shape == expected.shape
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=RTOL * scale)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_runs_in_onnx_runtime_as_in_npcnn(preset, tmp_path, rng) -> None:
    model = randomise_batch_norms(PRESETS[preset].model(seed=1), rng)
    path = export(model, tmp_path / f"{preset}.onnx")
    for batch in (1, 7):  # the batch dimension is symbolic
        assert_same_outputs(model, path, rng.random((batch, 1, 28, 28), dtype=np.float32))


def _random_chain(rng: np.random.Generator) -> tuple[nn.Sequential, tuple[int, int, int]]:
    """Conv layers with drawn kernels, strides, paddings and groups, pools that overlap
    or pad, activations, dropout and a dense head, on an odd input size, after a
    zero padding drawn side by side."""
    c, h, w = int(rng.choice([2, 4])), int(rng.integers(11, 18)), int(rng.integers(11, 18))
    groups = int(rng.choice([1, 2, c]))
    out = groups * int(rng.integers(1, 4))
    k, s = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    layers = [
        nn.ZeroPad2D(tuple(int(p) for p in rng.integers(0, 3, 4))),
        nn.Conv2D(c, out, k, stride=s, padding=int(rng.integers(0, k)), groups=groups, rng=rng),
        nn.BatchNorm2D(out),
        [nn.ReLU(), nn.LeakyReLU(0.1), nn.Sigmoid(), nn.Tanh()][int(rng.integers(4))],
        nn.MaxPool2D(3, stride=2, padding=1) if rng.random() < 0.5 else nn.AvgPool2D(2, 1, 1),
        nn.Dropout(0.3, rng=rng),
        nn.Identity(),
    ]
    probe = nn.Sequential(layers).forward(np.zeros((1, c, h, w), np.float32))
    features = int(np.prod(probe.shape[1:]))
    layers += [nn.Flatten(), nn.Dense(features, 6, rng=rng), nn.BatchNorm1D(6), nn.Dense(6, 3)]
    return nn.Sequential(layers), (c, h, w)


@pytest.mark.parametrize("seed", range(8))
def test_drawn_layer_configurations_agree(seed, tmp_path) -> None:
    rng = np.random.default_rng(seed)
    model, shape = _random_chain(rng)
    randomise_batch_norms(model, rng)
    path = export(model, tmp_path / "chain.onnx", input_shape=shape)
    assert_same_outputs(model, path, rng.standard_normal((3, *shape)).astype(np.float32))


def _graph(rng: np.random.Generator) -> nn.Model:
    """A residual block with a projection, a three-branch concatenation, global pooling."""
    x = nn.Input((3, 9, 9))
    y = nn.BatchNorm2D(4)(nn.Conv2D(3, 4, 3, stride=2, padding=1, rng=rng)(x, name="conv"))
    shortcut = nn.Conv2D(3, 4, 1, stride=2, bias=False, rng=rng)(x, name="proj")
    y = nn.ReLU()(nn.Add()([y, shortcut]))
    branches = [
        nn.Conv2D(4, 2, 1, rng=rng)(y),
        nn.Conv2D(4, 4, 3, padding=1, groups=4, rng=rng)(y),
        nn.MaxPool2D(3, 1, 1)(y),
    ]
    y = nn.GlobalAvgPool2D()(nn.Concatenate()(branches))
    return nn.Model(x, nn.Dense(10, 5, rng=rng)(y, name="fc"))


def test_a_graph_with_residual_and_concatenated_branches_agrees(tmp_path, rng) -> None:
    model = randomise_batch_norms(_graph(rng), rng)
    path = export(model, tmp_path / "graph.onnx")  # the Model's own input shape
    assert_same_outputs(model, path, rng.standard_normal((4, 3, 9, 9)).astype(np.float32))


def test_initializers_carry_the_state_dict_names(rng) -> None:
    model = PRESETS["resnet"].model(seed=0)
    proto = to_onnx(model)
    names = {t.name for t in proto.graph.initializer}
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert names == expected
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [1, 28, 28]


@pytest.mark.parametrize("opset", list(SUPPORTED_OPSETS))
def test_every_supported_opset_gives_a_valid_file(opset, tmp_path, rng) -> None:
    model = randomise_batch_norms(PRESETS["small"].model(seed=0), rng)
    path = export(model, tmp_path / "m.onnx", opset=opset)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    assert_same_outputs(model, path, rng.random((2, 1, 28, 28), dtype=np.float32))


def test_softmax_appends_probabilities(tmp_path, rng) -> None:
    model = PRESETS["small"].model(seed=0)
    x = rng.random((3, 1, 28, 28), dtype=np.float32)
    probabilities = run_onnx(export(model, tmp_path / "p.onnx", softmax=True), x)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    logits = model.forward(x)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probabilities, expected / expected.sum(1, keepdims=True), rtol=1e-5)


@pytest.mark.parametrize("opset", [12, 22, "17"])
def test_an_opset_outside_the_range_is_refused(opset, tmp_path) -> None:
    with pytest.raises(ValueError, match="opset must be an integer from 13 to 21"):
        export(PRESETS["small"].model(), tmp_path / "m.onnx", opset=opset)
    assert not (tmp_path / "m.onnx").exists()


def test_a_layer_without_an_onnx_form_is_named_and_nothing_is_written(tmp_path) -> None:
    class Square(nn.Layer):
        def forward(self, x, training=False):
            return x * x

    model = nn.Sequential(nn.Flatten(), Square())
    with pytest.raises(ValueError, match="cannot export layer '1' of type Square"):
        export(model, tmp_path / "m.onnx", input_shape=(4,))
    assert list(tmp_path.iterdir()) == []


def test_the_command_writes_a_file_onnx_runtime_agrees_with(tmp_path, capsys, rng) -> None:
    model = randomise_batch_norms(PRESETS["resnet"].model(seed=2), rng)
    npcnn.save(model, tmp_path / "model.npz")
    out = tmp_path / "model.onnx"
    assert main(["export", str(tmp_path / "model.npz"), str(out), "--opset", "13"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert_same_outputs(model, out, rng.random((2, 1, 28, 28), dtype=np.float32))


def test_without_the_onnx_package_the_command_says_what_to_install(
    tmp_path, capsys, monkeypatch
) -> None:
    npcnn.save(PRESETS["small"].model(), tmp_path / "model.npz")
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    code = main(["export", str(tmp_path / "model.npz"), str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert code == 1
    assert (
        err.strip()
        == 'npcnn: error: ONNX export and import need the onnx package: pip install "npcnn[onnx]"'
    )
    assert not (tmp_path / "m.onnx").exists()
