"""npcnn.onnx.load and ``npcnn import``: npcnn's files round trip, PyTorch's import, hostile
files are refused with one clear line."""

from __future__ import annotations

import os
import sys
import time
import warnings

import numpy as np
import pytest

import npcnn
from conftest import load_benchmark_module, randomise_batch_norms
from npcnn import nn
from npcnn.cli.main import main
from npcnn.models import PRESETS
from npcnn.onnx import export, load
from npcnn.serialization import ARCHITECTURE_KEY, model_to_arrays

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

# --- npcnn's own files ------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_export_then_import_gives_back_the_same_model(preset, tmp_path, rng) -> None:
    model = randomise_batch_norms(PRESETS[preset].model(seed=3), rng, batches_tracked=True)
    _assert_same_model(load(export(model, tmp_path / "m.onnx")), model)


def _assert_same_model(back: nn.Layer, model: nn.Layer) -> None:
    """Same architecture JSON and the same state dict, bit for bit."""
    assert str(model_to_arrays(back)[ARCHITECTURE_KEY]) == str(
        model_to_arrays(model)[ARCHITECTURE_KEY]
    )
    theirs, ours = back.state_dict(), model.state_dict()
    assert theirs.keys() == ours.keys()
    for name in ours:
        assert theirs[name].dtype == ours[name].dtype, name
        np.testing.assert_array_equal(theirs[name], ours[name], err_msg=name)


@pytest.mark.parametrize("softmax", [False, True])
def test_a_model_with_zero_padding_comes_back_as_itself(softmax, tmp_path, rng) -> None:
    # The Pad node's int64 pads are no weight of the model: they once made the
    # import fall back to node-by-node conversion (other names, no counters), which
    # cannot take a Softmax over a 4-D output at all.
    x = nn.Input((1, 6, 6))
    y = nn.ZeroPad2D((1, 0, 1, 0))(x, name="pad")
    y = nn.BatchNorm2D(2)(nn.Conv2D(1, 2, 3, rng=0)(y, name="conv"), name="bn")
    model = randomise_batch_norms(nn.Model(x, y), rng, batches_tracked=True)
    _assert_same_model(load(export(model, tmp_path / "m.onnx", softmax=softmax)), model)


def _without_metadata(path, out):
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(out))
    return out


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_the_graph_alone_converts_to_a_model_with_the_same_outputs(preset, tmp_path, rng):
    model = randomise_batch_norms(PRESETS[preset].model(seed=4), rng, batches_tracked=True)
    bare = _without_metadata(export(model, tmp_path / "m.onnx"), tmp_path / "bare.onnx")
    converted = load(bare)
    assert isinstance(converted, nn.Model)
    x = rng.random((3, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(converted.forward(x), model.forward(x), rtol=1e-5, atol=1e-5)


def test_metadata_that_does_not_match_the_graph_is_ignored(tmp_path, rng) -> None:
    """A file whose architecture record disagrees with its graph is read from the graph."""
    model = randomise_batch_norms(PRESETS["small"].model(seed=0), rng, batches_tracked=True)
    proto = onnx.load(str(export(model, tmp_path / "m.onnx")))
    other = model_to_arrays(nn.Sequential(nn.Flatten(), nn.Dense(784, 10)))
    for prop in proto.metadata_props:
        if prop.key == "npcnn.architecture":
            prop.value = str(other[ARCHITECTURE_KEY])
    onnx.save(proto, str(tmp_path / "lying.onnx"))
    converted = load(tmp_path / "lying.onnx")
    assert isinstance(converted, nn.Model) and len(list(converted.parameters())) > 2
    x = rng.random((2, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(converted.forward(x), model.forward(x), rtol=1e-5, atol=1e-5)


# --- PyTorch's exporters ------------------------------------------------------------------


def _torch_nets():
    import torch
    from torch import nn as tnn

    class ViewFlatten(tnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = tnn.Conv2d(1, 6, 3, stride=2, padding=1)
            self.bn = tnn.BatchNorm2d(6)
            self.fc = tnn.Linear(6 * 7 * 7, 10)

        def forward(self, x):
            x = torch.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
            return self.fc(x.view(x.size(0), -1))

    sequential = tnn.Sequential(
        tnn.Conv2d(1, 4, 3, padding=1, bias=False),
        tnn.BatchNorm2d(4),
        tnn.ReLU(),
        tnn.MaxPool2d(2),
        tnn.Conv2d(4, 8, 3, padding=1, groups=4),
        tnn.LeakyReLU(0.2),
        tnn.Flatten(),
        tnn.Dropout(0.5),
        tnn.Linear(8 * 14 * 14, 10),
    )
    ceil = tnn.Sequential(  # ceil_mode where the windows fit exactly: the same as floor
        tnn.Conv2d(1, 4, 3, padding=1), tnn.Sigmoid(), tnn.MaxPool2d(2, ceil_mode=True)
    )
    ceil.extend([tnn.Flatten(), tnn.Linear(4 * 14 * 14, 10)])
    resnet = tnn.Sequential(
        tnn.Conv2d(1, 8, 3, padding=1, bias=False),
        tnn.BatchNorm2d(8),
        tnn.ReLU(),
        load_benchmark_module("torch_twins").torch_basic_block(8, 16, 2),
        tnn.AdaptiveAvgPool2d(1),
        tnn.Flatten(),
        tnn.Linear(16, 10),
    )
    return {"sequential": sequential, "view": ViewFlatten(), "ceil": ceil, "resnet": resnet}


EXPORTS = [(False, 11), (False, 13), (False, 17), (True, 18), (True, 20)]


def _export_torch(net, path, dynamo: bool, opset: int) -> None:
    import torch

    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 2)
    net.eval()
    kwargs = {"dynamo": dynamo, "opset_version": opset, "input_names": ["input"]}
    if dynamo:
        kwargs["external_data"] = False
    else:
        kwargs["dynamic_axes"] = {"input": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(2, 1, 28, 28),), str(path), **kwargs)


@pytest.mark.parametrize(("dynamo", "opset"), EXPORTS, ids=[f"dynamo{d}-{o}" for d, o in EXPORTS])
@pytest.mark.parametrize("net", ["sequential", "view", "ceil", "resnet"])
def test_pytorch_exports_import_and_match_at_another_batch_size(net, dynamo, opset, tmp_path):
    torch = pytest.importorskip("torch")
    if dynamo:
        pytest.importorskip("onnxscript")
    module = _torch_nets()[net]
    _export_torch(module, tmp_path / "t.onnx", dynamo, opset)
    model = load(tmp_path / "t.onnx")
    x = torch.rand(5, 1, 28, 28)  # the export used a batch of 2
    with torch.no_grad():
        expected = module(x).numpy()
    np.testing.assert_allclose(model.forward(x.numpy()), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("dynamo", "opset"), [(False, 9), (False, 11), (False, 17), (True, 18)])
def test_zero_pad_nodes_fold_into_the_next_conv_or_average_pool(dynamo, opset, tmp_path):
    torch = pytest.importorskip("torch")
    if dynamo:
        pytest.importorskip("onnxscript")
    tnn = torch.nn
    net = tnn.Sequential(
        tnn.ZeroPad2d(1), tnn.Conv2d(1, 2, 3), tnn.ReLU(), tnn.ZeroPad2d(2), tnn.AvgPool2d(4, 2)
    )
    _export_torch(net, tmp_path / "pad.onnx", dynamo, opset)  # Pad's pads: an input from 11
    model = load(tmp_path / "pad.onnx")
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        expected = net(x).numpy()
    np.testing.assert_allclose(model.forward(x.numpy()), expected, rtol=1e-5, atol=1e-6)


def test_pads_npcnn_cannot_fold_import_as_zero_pad_layers(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    tnn = torch.nn
    for net in (
        tnn.Sequential(tnn.ZeroPad2d((1, 0, 2, 0)), tnn.Conv2d(1, 2, 3)),  # one side only
        tnn.Sequential(tnn.ZeroPad2d(1), tnn.MaxPool2d(2)),  # zeros a max pool must see
    ):
        _export_torch(net, tmp_path / "p.onnx", False, 13)
        model = load(tmp_path / "p.onnx")
        assert any(isinstance(layer, nn.ZeroPad2D) for _, layer in model.named_layers())
        x = torch.rand(3, 1, 28, 28) - 0.5
        with torch.no_grad():
            expected = net(x).numpy()
        np.testing.assert_allclose(model.forward(x.numpy()), expected, rtol=1e-5, atol=1e-6)


def test_padding_other_than_zeros_of_h_and_w_is_refused(tmp_path) -> None:
    pads = helper.make_tensor("pads", TensorProto.INT64, [8], [0, 0, 1, 1, 0, 0, 1, 1])
    node = helper.make_node("Pad", ["input", "pads"], ["y"], name="p", mode="reflect")
    with pytest.raises(ValueError, match=r"node 'p' \(Pad\): only zero padding"):
        load(_graph_file(tmp_path / "reflect.onnx", [node], [pads]))
    pads = helper.make_tensor("pads", TensorProto.INT64, [8], [0, 1, 0, 0, 0, 0, 0, 0])
    node = helper.make_node("Pad", ["input", "pads"], ["y"], name="p")
    with pytest.raises(ValueError, match=r"node 'p' \(Pad\): pads .* H and W only"):
        load(_graph_file(tmp_path / "channels.onnx", [node], [pads]))


def test_a_ceil_mode_pool_with_a_partial_window_imports(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.MaxPool2d(3, 2, ceil_mode=True))
    _export_torch(net, tmp_path / "c.onnx", False, 13)  # 26 -> 13 windows, the last partial
    model = load(tmp_path / "c.onnx")
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        expected = net(x).numpy()
    assert expected.shape == (3, 2, 13, 13)
    np.testing.assert_allclose(model.forward(x.numpy()), expected, rtol=1e-5, atol=1e-6)
    exported = export(model, tmp_path / "again.onnx")  # and out again, ceil_mode kept
    attrs = [a for n in onnx.load(str(exported)).graph.node for a in n.attribute]
    assert any(a.name == "ceil_mode" and a.i == 1 for a in attrs)


def test_the_imported_resnet_fine_tunes(tmp_path, rng) -> None:
    pytest.importorskip("torch")
    _export_torch(_torch_nets()["resnet"], tmp_path / "r.onnx", False, 17)
    model = load(tmp_path / "r.onnx")
    x, y = rng.random((32, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 32)
    loss_fn, opt = nn.CrossEntropyLoss(), npcnn.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        losses.append(loss_fn(model.forward(x, training=True), y))
        model.backward(loss_fn.backward())
        opt.step()
    assert losses[-1] < losses[0]


# --- what npcnn cannot represent, and hostile files ------------------------------------


def _graph_file(path, nodes, initializers=(), inputs=None, output="y", ir=8):
    inputs = inputs or [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 4, 4])]
    out = [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "g", inputs, out, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=ir)
    path.write_bytes(model.SerializeToString())
    return path


def test_an_unsupported_operator_is_named_and_nothing_is_written(tmp_path, capsys) -> None:
    nodes = [helper.make_node("Elu", ["input"], ["y"], name="elu1")]
    path = _graph_file(tmp_path / "elu.onnx", nodes)
    with pytest.raises(ValueError, match=r"node 'elu1' \(Elu\): operator Elu .* not supported"):
        load(path)
    assert main(["import", str(path), str(tmp_path / "out.npz")]) == 1
    assert "npcnn: error:" in capsys.readouterr().err
    assert not (tmp_path / "out.npz").exists()


def test_asymmetric_conv_pads_become_a_zero_pad_layer(tmp_path, rng) -> None:
    import onnxruntime

    w = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    weight = helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel())
    node = helper.make_node(
        "Conv", ["input", "w"], ["y"], name="c", pads=[0, 0, 1, 1], strides=[2, 2]
    )
    path = _graph_file(tmp_path / "pads.onnx", [node], [weight])
    model = load(path)
    names = [name for name, _ in model.named_children()]
    assert names == ["c_pad", "c"] and model.c_pad.padding == (0, 1, 0, 1)
    x = rng.standard_normal((3, 1, 4, 4)).astype(np.float32)
    expected = onnxruntime.InferenceSession(str(path)).run(None, {"input": x})[0]
    np.testing.assert_allclose(model.forward(x), expected, rtol=1e-5, atol=1e-6)


# --- Keras models through tf2onnx (files in tests/data/keras, see make_keras_onnx.py) ---

KERAS = os.path.join(os.path.dirname(__file__), "data", "keras")


@pytest.mark.parametrize(
    "name",
    ["keras_seq_op13", "keras_res_op17", "keras_flatten_dense_op13", "keras_rgb_op15"],
)
def test_keras_models_written_by_tf2onnx_import_and_give_keras_outputs(name, tmp_path) -> None:
    """Channels-last input folded (the model takes NCHW), BN folded into the convs,
    TensorFlow's one-sided SAME pads, Transpose back to NHWC before Flatten (the Dense
    columns reordered), MatMul + Add, GlobalAveragePool + Squeeze: Keras' logits."""
    io = np.load(os.path.join(KERAS, name.rsplit("_op", 1)[0] + "_io.npz"))
    path = os.path.join(KERAS, name + ".onnx")
    assert main(["import", path, str(tmp_path / "k.npz")]) == 0
    for model in (load(path), npcnn.load(tmp_path / "k.npz")):
        nchw = np.ascontiguousarray(io["x"].transpose(0, 3, 1, 2))
        assert model.input_shape == nchw.shape[1:]
        np.testing.assert_allclose(model.forward(nchw), io["y"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(model.forward(nchw[:1]), io["y"][:1], rtol=1e-5, atol=1e-5)


def test_data_left_channels_last_is_refused_by_the_layer_that_reads_it(tmp_path) -> None:
    perm = helper.make_node("Transpose", ["input"], ["t"], name="to_nhwc", perm=[0, 2, 3, 1])
    relu = helper.make_node("Relu", ["t"], ["y"], name="r")
    with pytest.raises(ValueError, match=r"node 'r' \(Relu\): data transposed away from NCHW"):
        load(_graph_file(tmp_path / "t.onnx", [perm, relu]))


def _check_refused(path, match: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ValueError, match=match):
        load(path)
    assert time.perf_counter() - start < 5  # refused at once, not after allocating


def test_truncated_and_random_files_are_refused(tmp_path, rng) -> None:
    good = export(PRESETS["small"].model(), tmp_path / "good.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(good[: len(good) // 2])
    (tmp_path / "noise.onnx").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (tmp_path / "empty.onnx").write_bytes(b"")
    for name in ("cut", "noise", "empty"):
        _check_refused(tmp_path / f"{name}.onnx", "is not an ONNX model|holds|declares")


def test_huge_declared_dims_without_data_are_refused(tmp_path) -> None:
    bomb = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 20, 1, 1])
    node = helper.make_node("Conv", ["input", "w"], ["y"], name="c")
    _check_refused(_graph_file(tmp_path / "bomb.onnx", [node], [bomb]), "declares")
    lie = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 1, 3, 3])
    lie.raw_data = b"\0" * 8
    _check_refused(_graph_file(tmp_path / "lie.onnx", [node], [lie]), "but holds 8 bytes")


def _external(path, location: str, length: int = 72):
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2, 1, 3, 3])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    node = helper.make_node("Conv", ["input", "w"], ["y"], name="c")
    return _graph_file(path, [node], [tensor])


def test_external_data_is_off_by_default_and_confined_to_the_folder(tmp_path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "w.bin").write_bytes(np.ones(18, np.float32).tobytes())
    (tmp_path / "secret.bin").write_bytes(b"\1" * 72)
    path = _external(folder / "m.onnx", "w.bin")
    with pytest.raises(ValueError, match="external data is off"):
        load(path)
    model = load(path, allow_external_data=True)
    np.testing.assert_array_equal(model.state_dict()["c.weight"], np.ones((2, 1, 3, 3)))
    for location in ("../secret.bin", str(tmp_path / "secret.bin")):
        with pytest.raises(ValueError, match="refused"):
            load(_external(folder / "m.onnx", location), allow_external_data=True)
    os.symlink(tmp_path / "secret.bin", folder / "link.bin")
    with pytest.raises(ValueError, match="no links"):
        load(_external(folder / "m.onnx", "link.bin"), allow_external_data=True)
    with pytest.raises(ValueError, match="does not hold"):
        load(_external(folder / "m.onnx", "w.bin", length=4), allow_external_data=True)


def test_a_trailing_softmax_is_dropped_the_logits_remain(tmp_path, rng) -> None:
    import onnxruntime

    model = randomise_batch_norms(PRESETS["small"].model(seed=0), rng, batches_tracked=True)
    path = export(model, tmp_path / "p.onnx", softmax=True)
    back = load(path)
    x = rng.random((3, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(back.forward(x), model.forward(x))  # logits, as before
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {"input": x})[0]
    logits = back.forward(x)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probabilities, expected / expected.sum(1, keepdims=True), rtol=1e-5)


def test_a_softmax_inside_the_network_is_refused(tmp_path) -> None:
    nodes = [
        helper.make_node("Flatten", ["input"], ["f"], name="flat"),
        helper.make_node("Softmax", ["f"], ["s"], name="sm", axis=1),
        helper.make_node("Relu", ["s"], ["y"], name="r"),
    ]
    with pytest.raises(ValueError, match=r"node 'sm' \(Softmax\): a Softmax inside the network"):
        load(_graph_file(tmp_path / "sm.onnx", nodes))


def test_pads_of_the_wrong_length_are_refused_by_name(tmp_path) -> None:
    pads = helper.make_tensor("pads", TensorProto.INT64, [4], [0, 1, 0, 1])
    nodes = [helper.make_node("Pad", ["input", "pads"], ["y"], name="p")]
    with pytest.raises(ValueError, match=r"node 'p' \(Pad\): pads \[0, 1, 0, 1\] do not fit"):
        load(_graph_file(tmp_path / "pad.onnx", nodes, [pads]))


def test_weights_read_by_two_nodes_are_copied_with_a_warning(tmp_path, rng) -> None:
    # One PyTorch module applied twice: two layers with equal weights, no longer tied.
    w = rng.standard_normal((1, 1, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["h"], name="first", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["h", "w"], ["y"], name="again", pads=[1, 1, 1, 1]),
    ]
    path = _graph_file(tmp_path / "twice.onnx", nodes, [onnx.numpy_helper.from_array(w, "w")])
    with pytest.warns(UserWarning, match=r"several nodes read \('w'\) are copied"):
        model = load(path)
    convs = [layer for _, layer in model.named_layers() if isinstance(layer, nn.Conv2D)]
    assert len(convs) == 2 and convs[0].weight is not convs[1].weight
    for conv in convs:
        np.testing.assert_array_equal(conv.weight.data, w)
    zeros = onnx.numpy_helper.from_array(np.zeros_like(w), "w")  # equal values: maybe
    with warnings.catch_warnings():  # merged by an exporter that dedupes, not shared
        warnings.simplefilter("error")
        load(_graph_file(tmp_path / "zeros.onnx", nodes, [zeros]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a weight read once warns of nothing
        once = _graph_file(
            tmp_path / "once.onnx", nodes[:1], [onnx.numpy_helper.from_array(w, "w")], output="h"
        )
        load(once)


def test_a_layer_that_refuses_its_input_is_named(tmp_path) -> None:
    """A conv on GlobalAveragePool's (N, C, 1, 1), which npcnn holds as (N, C)."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 1, 1, 1], np.ones(2, np.float32))
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["g"], name="gap"),
        helper.make_node("Conv", ["g", "w"], ["y"], name="head"),
    ]
    with pytest.raises(ValueError, match=r"cannot import node 'head' \(Conv\): "):
        load(_graph_file(tmp_path / "gap.onnx", nodes, [w]))


def _two_inputs(tmp_path):
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 1, 4, 4]) for name in "ab"
    ]
    nodes = [helper.make_node("Add", ["a", "b"], ["y"], name="add")]
    return _graph_file(tmp_path / "two.onnx", nodes, inputs=inputs)


def _two_outputs(tmp_path):
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 4, 4])]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "z")]
    nodes = [
        helper.make_node("Relu", ["input"], ["y"], name="r"),
        helper.make_node("Sigmoid", ["input"], ["z"], name="s"),
    ]
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = tmp_path / "outs.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda tmp: _graph_file(
                tmp / "id.onnx", [helper.make_node("Identity", ["input"], ["y"], name="i")]
            ),
            "cannot import a graph whose output does not depend on its input through layers",
        ),
        (_two_inputs, "cannot import a graph of 2 inputs (a, b): npcnn models take one"),
        (_two_outputs, "cannot import a graph of 2 outputs: npcnn models give one"),
        (
            lambda tmp: _graph_file(
                tmp / "dyn.onnx",
                [helper.make_node("Relu", ["x"], ["y"], name="r")],
                inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", 4])],
            ),
            "cannot import input 'x' of shape [None, 1, None, 4]: npcnn needs (batch, fixed",
        ),
        (
            lambda tmp: _graph_file(
                tmp / "mask.onnx",
                [
                    helper.make_node("Dropout", ["input"], ["d", "mask"], name="drop"),
                    helper.make_node("Relu", ["mask"], ["y"], name="r"),
                ],
            ),
            "cannot import node 'r' (Relu): it reads 'mask', an output npcnn does not compute",
        ),
    ],
)
def test_graph_level_refusals_read_as_sentences(make, message, tmp_path) -> None:
    path = make(tmp_path)
    with pytest.raises(ValueError) as info:
        load(path)
    assert str(info.value).startswith(f"{path}: {message}"), str(info.value)


def test_initializers_listed_as_graph_inputs_are_weights(tmp_path, rng) -> None:
    """Old IR versions list every initializer among the graph's inputs too."""
    w = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    weight = helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel())
    inputs = [
        helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 4, 4]),
        helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 1, 3, 3]),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["c"], ["y"], name="flat"),
    ]
    model = load(_graph_file(tmp_path / "old.onnx", nodes, [weight], inputs=inputs, ir=3))
    np.testing.assert_array_equal(model.state_dict()["conv.weight"], w)
    x = rng.standard_normal((2, 1, 4, 4)).astype(np.float32)
    assert model.forward(x).shape == (2, 32)


def test_a_node_reading_an_undefined_name_is_refused(tmp_path) -> None:
    nodes = [
        helper.make_node("Relu", ["later"], ["y"], name="r"),
        helper.make_node("Relu", ["input"], ["later"], name="s"),
    ]
    _check_refused(_graph_file(tmp_path / "order.onnx", nodes), "not in topological order")


# --- the command line ---------------------------------------------------------------------


def test_evaluate_and_import_take_onnx_files(tmp_path, capsys, rng) -> None:
    model = randomise_batch_norms(PRESETS["small"].model(seed=0), rng, batches_tracked=True)
    path = export(model, tmp_path / "m.onnx")
    assert main(["import", str(path), str(tmp_path / "m.npz")]) == 0
    again = npcnn.load(tmp_path / "m.npz")
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[name], value)
    capsys.readouterr()
    assert main(["evaluate", str(path), "--data", "sample"]) == 0
    from_onnx = capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "m.npz"), "--data", "sample"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == from_onnx.splitlines()[-1]


def test_without_onnx_import_says_what_to_install(tmp_path, capsys, monkeypatch) -> None:
    (tmp_path / "m.onnx").write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["import", str(tmp_path / "m.onnx"), str(tmp_path / "m.npz")]) == 1
    assert 'pip install "npcnn[onnx]"' in capsys.readouterr().err


def test_the_readme_onnx_example_runs(tmp_path, monkeypatch, capsys) -> None:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## ONNX: models in and out") :]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(block, namespace)
    assert float(capsys.readouterr().out) < 1e-4
    theirs, ours = namespace["again"].state_dict(), namespace["model"].state_dict()
    assert all(np.array_equal(theirs[k], ours[k]) for k in ours) and theirs.keys() == ours.keys()


def test_export_and_import_refuse_to_overwrite_without_force(tmp_path, capsys) -> None:
    model_file, onnx_file, npz_file = (
        tmp_path / "model.npz",
        tmp_path / "m.onnx",
        tmp_path / "o.npz",
    )
    npcnn.save(PRESETS["small"].model(seed=0), model_file)
    onnx_file.write_bytes(b"an earlier file")
    npcnn.save(PRESETS["small"].model(seed=1), npz_file)  # an earlier run's model
    for argv, path in (
        (["export", model_file, onnx_file], onnx_file),
        (["import", onnx_file, npz_file], npz_file),
    ):
        earlier = path.read_bytes()
        assert main([str(a) for a in argv]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err == f"npcnn: error: {path} exists; add --force to overwrite it\n"
        assert path.read_bytes() == earlier
        assert main([str(a) for a in [*argv, "--force"]]) == 0
        assert f"wrote {path}" in capsys.readouterr().out
        assert path.read_bytes() != earlier
    assert npz_file.read_bytes() == model_file.read_bytes()  # the seed-0 model, round trip
