"""Graphs of layers (`nn.Model`, Keras' functional API) and the merge layers Add and Concatenate.

Gradients against finite differences in float64 for the new layers and whole
graphs; the Model's names, files, summary and build-time errors; the
notebook network as a Model runs the same fused steps as the Sequential one,
bit for bit; the Trainer fits and resumes a Model exactly.
"""

from __future__ import annotations

import gc
import json
import re
import weakref
from pathlib import Path

import numpy as np
import pytest

import npcnn
from npcnn import nn, optim
from npcnn.cli.main import main
from npcnn.training import Trainer
from test_training_helpers import NUM_CLASSES, assert_same_state, batches, validation

TOLERANCE = 1e-6


def _assert_gradcheck(layer: nn.Layer, x: np.ndarray, training: bool = True) -> None:
    layer.astype(np.float64)
    result = npcnn.gradcheck(layer, x.astype(np.float64), training=training, max_elements=64)
    assert set(result.errors) == {"input"} | {name for name, _ in layer.named_parameters()}
    assert result.max_error < TOLERANCE, result.errors


def _x(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def residual_block(x: nn.SymbolicTensor, out_channels: int, stride: int, prefix: str):
    """conv-bn-relu-conv-bn + shortcut, then ReLU; a projection shortcut (1x1 conv with
    `stride`, batch norm) when the shape changes, else the identity."""
    c = x.shape[1]
    y = nn.Conv2D(c, out_channels, 3, stride=stride, padding=1, bias=False, rng=0)(
        x, name=f"{prefix}conv1"
    )
    y = nn.ReLU()(nn.BatchNorm2D(out_channels)(y, name=f"{prefix}bn1"), name=f"{prefix}relu1")
    y = nn.Conv2D(out_channels, out_channels, 3, padding=1, bias=False, rng=1)(
        y, name=f"{prefix}conv2"
    )
    y = nn.BatchNorm2D(out_channels)(y, name=f"{prefix}bn2")
    shortcut = x
    if stride != 1 or c != out_channels:
        shortcut = nn.Conv2D(c, out_channels, 1, stride=stride, bias=False, rng=2)(
            x, name=f"{prefix}proj"
        )
        shortcut = nn.BatchNorm2D(out_channels)(shortcut, name=f"{prefix}proj_bn")
    return nn.ReLU()(nn.Add()([y, shortcut], name=f"{prefix}add"), name=f"{prefix}relu2")


def identity_block() -> nn.Model:
    x = nn.Input((3, 6, 6))
    return nn.Model(x, residual_block(x, 3, 1, ""))


def projection_block() -> nn.Model:
    x = nn.Input((2, 6, 6))
    return nn.Model(x, residual_block(x, 4, 2, ""))


def three_branches() -> nn.Model:
    """1x1 conv, 3x3 conv and max pool branches, concatenated (an Inception block)."""
    x = nn.Input((2, 5, 5))
    a = nn.Conv2D(2, 3, 1, rng=0)(x)
    b = nn.ReLU()(nn.Conv2D(2, 2, 3, padding=1, rng=1)(x))
    c = nn.MaxPool2D(3, 1, 1)(x)
    return nn.Model(x, nn.Concatenate()([a, b, c]))


def four_uses() -> nn.Model:
    """One tensor feeding four layers: two convs, an Add (twice) and a Concatenate."""
    x = nn.Input((2, 4, 4))
    t = nn.Tanh()(nn.Conv2D(2, 2, 3, padding=1, rng=0)(x))
    u = nn.Conv2D(2, 2, 1, rng=1)(t)
    v = nn.Sigmoid()(t)
    s = nn.Add()([t, u, t])
    return nn.Model(x, nn.Concatenate()([s, v, x]))


def nested() -> nn.Model:
    """Two residual blocks, each a Model used as a layer, then a dense head."""
    x = nn.Input((2, 6, 6))
    y = projection_block()(x, name="block1")
    inner = nn.Input((4, 3, 3))
    y = nn.Model(inner, residual_block(inner, 4, 1, ""))(y, name="block2")
    y = nn.Dense(36, 3, rng=3)(nn.Flatten()(y), name="fc")
    return nn.Model(x, y)


GRAPHS = {
    "identity-shortcut": (identity_block, (2, 3, 6, 6)),
    "projection-shortcut": (projection_block, (3, 2, 6, 6)),
    "three-branches": (three_branches, (2, 2, 5, 5)),
    "four-uses": (four_uses, (2, 2, 4, 4)),
    "graph-in-graph": (nested, (3, 2, 6, 6)),
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
@pytest.mark.parametrize("training", [True, False])
def test_graphs_against_finite_differences(name: str, training: bool) -> None:
    make, shape = GRAPHS[name]
    _assert_gradcheck(make(), _x(shape), training)


@pytest.mark.parametrize("count", [2, 3])
def test_add_and_concatenate_against_finite_differences(count: int) -> None:
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((2, 3, 2, 2)) for _ in range(count)]
    sizes = [1, 3, 2][:count]
    cs = [rng.standard_normal((2, n, 2, 2)) for n in sizes]
    for layer, inputs in ((nn.Add(), xs), (nn.Concatenate(), cs)):
        y = layer.forward(inputs, training=True)
        dy = rng.standard_normal(y.shape)
        dxs = layer.backward(dy)
        for i, x in enumerate(inputs):
            numeric = np.zeros_like(x)
            for j in np.ndindex(x.shape):
                for sign in (1, -1):
                    shifted = [a.copy() for a in inputs]
                    shifted[i][j] += sign * 1e-6
                    numeric[j] += sign * np.sum(layer.forward(shifted) * dy) / 2e-6
            np.testing.assert_allclose(dxs[i], numeric, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(nn.Add().forward(xs), sum(xs))


@pytest.mark.parametrize("wide", [0, 1, 2])
def test_add_keeps_the_widest_dtype_wherever_it_comes(wide: int) -> None:
    xs = [np.ones((1, 2), np.float32) for _ in range(3)]
    xs[wide] = np.full((1, 2), 1 + 1e-9)  # float64: its 1e-9 is lost in float32
    y = nn.Add().forward(xs)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, 3 + 1e-9)


def test_a_tensor_used_by_several_layers_gets_the_sum_of_their_gradients() -> None:
    x = nn.Input((3,))
    model = nn.Model(x, nn.Add()([x, x, x, x]))
    model.forward(np.ones((2, 3)), training=True)
    np.testing.assert_array_equal(model.backward(np.full((2, 3), 0.5)), np.full((2, 3), 2.0))
    assert model.backward(np.ones((2, 3)), need_input_grad=False) is None


def test_state_dict_names_follow_the_layer_names_and_nest() -> None:
    model = nested()
    names = list(model.state_dict())
    assert names[:3] == ["block1.conv1.weight", "block1.bn1.weight", "block1.bn1.bias"]
    assert "block1.proj_bn.running_var" in names and "fc.weight" in names
    x = nn.Input((1, 4, 4))
    y = nn.MaxPool2D(2)(nn.ReLU()(nn.BatchNorm2D(2)(nn.Conv2D(1, 2, 3, padding=1)(x))))
    unnamed = nn.Model(x, y)
    assert [name for name, _ in unnamed.named_children()] == [
        "conv2d_1",
        "batch_norm2d_1",
        "relu_1",
        "max_pool2d_1",
    ]


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_save_and_load_round_trip(tmp_path, name: str) -> None:
    make, shape = GRAPHS[name]
    model = make()
    x = _x(shape).astype(np.float32)
    model.forward(x, training=True)  # running statistics away from their start
    npcnn.save(model, tmp_path / "m.npz")
    loaded = npcnn.load(tmp_path / "m.npz")
    assert type(loaded) is nn.Model
    assert loaded.config() == model.config()
    json.dumps(loaded.config())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key], value)
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


def _saved_architecture(tmp_path, edit) -> str:
    """Save a small graph, let `edit` change its architecture record, write it back."""
    model = identity_block()
    npcnn.save(model, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        arrays = dict(f)
    record = json.loads(str(arrays["__npcnn_architecture__"]))
    edit(record["model"]["config"])
    arrays["__npcnn_architecture__"] = np.array(json.dumps(record))
    np.savez(tmp_path / "bad.npz", **arrays)
    return str(tmp_path / "bad.npz")


def test_load_refuses_a_graph_that_uses_a_tensor_before_it_is_made(tmp_path) -> None:
    def cycle(config):  # the first layer takes the last one's output
        config["layers"][0]["inbound"] = config["layers"][-1]["name"]

    with pytest.raises(ValueError, match=r"conv1.*made by no earlier layer"):
        npcnn.load(_saved_architecture(tmp_path, cycle))


def test_load_refuses_a_dotted_layer_name_as_such(tmp_path) -> None:
    def dotted(config):  # "conv1" -> "conv.1": its arrays would be looked for as conv.1.*
        config["layers"][0]["name"] = "conv.1"
        config["layers"][1]["inbound"] = "conv.1"

    with pytest.raises(ValueError, match=r"without '\.', got 'conv\.1'"):
        npcnn.load(_saved_architecture(tmp_path, dotted))


def test_load_refuses_a_one_input_layer_given_a_list_of_tensors(tmp_path) -> None:
    def listed(config):  # the third layer (a ReLU) reads a list
        config["layers"][2]["inbound"] = [config["layers"][2]["inbound"]]

    with pytest.raises(ValueError, match=r"bad.npz: cannot build Model: cannot call ReLU 'relu1'"):
        npcnn.load(_saved_architecture(tmp_path, listed))


def test_a_layer_called_on_the_wrong_number_of_inputs_is_refused_by_name() -> None:
    x = nn.Input((3, 6, 6))
    a = nn.Conv2D(3, 3, 1)(x, name="conv")
    with pytest.raises(ValueError, match=r"ReLU on Conv2D 'conv' .*, Input .*takes one input"):
        nn.ReLU()([a, x])
    for one_input in (nn.Flatten(), nn.Identity(), nn.Dropout(0.5), nn.Sequential(nn.ReLU())):
        with pytest.raises(ValueError, match="takes one input, not a list"):
            one_input([a, x])
        with pytest.raises(TypeError, match=r"takes one input \(a numpy array"):
            one_input([np.ones((1, 3))])
    with pytest.raises(ValueError, match=r"cannot call Add on Conv2D 'conv' .*: Add takes a list"):
        nn.Add()(a)
    with pytest.raises(TypeError, match="got a list holding list"):
        nn.Add()([[a], [x]])
    # A Sequential takes what its first layer takes; a layer of one's own says so.
    joined = nn.Sequential(nn.Concatenate(), nn.ReLU())([a, x], name="joined")
    assert joined.shape == (None, 6, 6, 6)

    class Product(nn.Layer):
        takes_several_inputs = True

        def forward(self, xs, training=False):
            return xs[0] * xs[1]

    assert Product()([a, x]).shape == (None, 3, 6, 6)
    np.testing.assert_array_equal(Product()([np.full(2, 3.0), np.full(2, 2.0)]), [6.0, 6.0])


def test_build_errors_name_the_layers_and_shapes() -> None:
    x = nn.Input((3, 8, 8))
    a = nn.Conv2D(3, 4, 3, padding=1)(x, name="conv1")
    with pytest.raises(
        ValueError,
        match=r"Add 'add'.*Conv2D 'conv1' \(None, 4, 8, 8\).*"
        r"Input 'input' \(None, 3, 8, 8\).*one shape",
    ):
        nn.Add()([a, x], name="add")
    b = nn.Conv2D(3, 2, 3)(x, name="conv2")
    with pytest.raises(ValueError, match=r"Concatenate.*\(N, 4, 8, 8\) and \(N, 2, 6, 6\)"):
        nn.Concatenate()([a, b])
    with pytest.raises(ValueError, match=r"Conv2D 'c'.*expects 5 channels.*\(N, 3, 8, 8\)"):
        nn.Conv2D(5, 2, 3)(x, name="c")
    with pytest.raises(ValueError, match="Dense expects 10 features"):
        nn.Dense(10, 2)(nn.Flatten()(x))
    relu = nn.ReLU()
    relu(a)
    with pytest.raises(ValueError, match=r"already called in a graph.*shared weights"):
        relu(b)
    other = nn.Input((3,), name="other")
    with pytest.raises(ValueError, match="depends on Input 'other'"):
        nn.Model(x, nn.Concatenate()([nn.Flatten()(x), other]))
    unused = r"Input 'input' \(None, 3\): nothing uses it \(the output depends on Input 'other'"
    with pytest.raises(ValueError, match=unused):
        nn.Model(nn.Input((3,)), nn.ReLU()(other))
    with pytest.raises(ValueError, match="named 'conv1'"):
        nn.Model(x, nn.Conv2D(4, 4, 1)(a, name="conv1"))
    with pytest.raises(ValueError, match="cannot name a layer 'nodes'"):
        nn.Model(x, nn.ReLU()(a, name="nodes"))
    with pytest.raises(ValueError, match="cannot register layer 'forward'"):
        nn.Model(x, nn.ReLU()(a, name="forward"))
    with pytest.raises(ValueError, match="no layers"):
        nn.Model(x, x)
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 3, 8, 8\)"):
        nn.Model(x, a).forward(np.zeros((1, 3, 4, 4), np.float32))
    with pytest.raises(TypeError, match="one numpy array"):
        nn.Model(x, a).forward([np.zeros((1, 3, 8, 8), np.float32)])
    with pytest.raises(TypeError, match=r"a tuple such as \(1, 28, 28\), got 3"):
        nn.Input(3)
    features = nn.Input((2,))
    with pytest.raises(ValueError, match=r"shape \(N, 2\), got \(1, 3\)$"):
        nn.Model(features, nn.Dense(2, 3)(features)).forward(np.ones((1, 3)))


def test_summary_has_a_connected_to_column_and_marks_fused_blocks() -> None:
    lines = []
    rows = identity_block().summary(print_fn=lines.append)
    text = lines[0]
    assert "Connected to" in text
    add = next(r for r in rows if r["type"] == "Add")
    assert add["connected_to"] == ["bn2", "input"]
    assert "BatchNorm2D+ReLU" in text
    assert rows[-1]["params"] == sum(p.data.size for p in identity_block().parameters())


def test_summary_columns_stay_apart_for_long_names_and_types() -> None:
    x = nn.Input((3, 4, 4))
    y = nn.GlobalAvgPool2D()(x)  # "global_avg_pool2d_1 (GlobalAvgPool2D)": a long type
    y = nn.Dense(3, 2)(y, name="fc")
    lines: list[str] = []
    nn.Model(x, y).summary(print_fn=lines.append)
    rows = [line for line in lines[0].splitlines() if line[:1].isdigit()]
    assert len(rows) == 2
    for row in rows:
        assert re.search(r"\)\s{2,}\(None, ", row), row


def _notebook_layers() -> list[nn.Layer]:
    return [
        nn.Conv2D(1, 16, 3, padding=1, bias=False, rng=0),
        nn.BatchNorm2D(16),
        nn.ReLU(),
        nn.MaxPool2D(2),
        nn.Conv2D(16, 18, 4, padding=1, bias=False, rng=1),
        nn.BatchNorm2D(18),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dense(18 * 13 * 13, 20, bias=False, rng=2),
        nn.BatchNorm1D(20),
        nn.ReLU(),
        nn.Dense(20, 10, rng=3),
    ]


def test_the_notebook_network_as_a_model_equals_the_sequential_bit_for_bit() -> None:
    sequential = nn.Sequential(_notebook_layers())
    x = nn.Input((1, 28, 28))
    y = x
    for layer in _notebook_layers():
        y = layer(y)
    model = nn.Model(x, y)
    model.load_state_dict(
        dict(zip(model.state_dict(), sequential.state_dict().values(), strict=True))
    )
    assert [s.name for s in model.plan()] == [s.name for s in sequential.plan()]
    assert any(s.fused for s in model.plan())
    rng = np.random.default_rng(0)
    images = rng.random((16, 1, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, 16)
    outputs = []
    for net in (sequential, model):
        opt, loss = optim.SGD(net.parameters(), lr=0.1, momentum=0.9), nn.CrossEntropyLoss()
        for _ in range(3):
            net.zero_grad()
            loss.forward(net.forward(images, training=True), labels)
            dx = net.backward(loss.backward())
            opt.step()
        outputs.append((net.forward(images), dx, list(net.state_dict().values())))
    (ys, dxs, ss), (ym, dxm, sm) = outputs
    assert ys.dtype == np.float32
    np.testing.assert_array_equal(ys, ym)
    np.testing.assert_array_equal(dxs, dxm)
    for a, b in zip(ss, sm, strict=True):
        np.testing.assert_array_equal(a, b)


def _tiny_graph(seed: int = 0) -> nn.Model:
    """tiny_model of the training tests with a residual block and a dropout in it."""
    rng = np.random.default_rng(seed)
    x = nn.Input((1, 8, 8))
    y = nn.ReLU()(nn.BatchNorm2D(4)(nn.Conv2D(1, 4, 3, padding=1, rng=rng)(x)))
    z = nn.BatchNorm2D(4)(nn.Conv2D(4, 4, 3, padding=1, rng=rng)(y))
    y = nn.MaxPool2D(2)(nn.ReLU()(nn.Add()([y, z])))
    y = nn.Dropout(0.25, rng=rng.integers(2**32))(nn.Flatten()(y))
    return nn.Model(x, nn.Dense(4 * 4 * 4, NUM_CLASSES, rng=rng)(y))


def _trainer(seed: int = 0, checkpoint_path=None) -> Trainer:
    model = _tiny_graph(seed)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return Trainer(model, nn.CrossEntropyLoss(), opt, checkpoint_path=checkpoint_path)


def test_trainer_fits_a_model_and_resumes_it_exactly(tmp_path) -> None:
    straight = _trainer()
    full = straight.fit(batches(), 4, validation=validation())
    assert full.epochs[-1]["val_accuracy"] > 0.5
    ckpt = tmp_path / "ckpt.npz"
    _trainer(checkpoint_path=ckpt).fit(batches(), 2, validation=validation())
    resumed = _trainer(seed=7, checkpoint_path=ckpt)
    resumed.fit(batches(seed=99), 4, validation=validation(), resume_from=ckpt)
    assert_same_state(straight, resumed)


def test_the_readme_graph_example_runs(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # it saves resnet.npz in the current directory
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Graphs") :]
    namespace: dict = {}
    exec(re.search(r"```python\n(.*?)```", section, re.S).group(1), namespace)
    model = namespace["model"]
    assert "Connected to" in capsys.readouterr().out
    assert namespace["logits"].shape == (4, 10)
    assert "block2.proj_bn.running_var" in model.state_dict()
    assert npcnn.load(tmp_path / "resnet.npz").config() == model.config()


def test_the_cli_summarises_a_saved_model_and_refuses_a_broken_one(tmp_path, capsys) -> None:
    npcnn.save(projection_block(), tmp_path / "block.npz")
    assert main(["summary", str(tmp_path / "block.npz")]) == 0
    out = capsys.readouterr().out
    assert "Connected to" in out and "proj_bn (BatchNorm2D)" in out and "bn2, proj_bn" in out

    def no_output(config):
        config["output"] = "nowhere"

    assert main(["summary", _saved_architecture(tmp_path, no_output)]) != 0
    err = capsys.readouterr().err
    assert err.startswith("npcnn: error: ") and err.count("\n") == 1
    assert "'nowhere' is no layer's name" in err


def test_a_dropped_model_frees_its_layers() -> None:
    # The record that refuses a second call of a layer must not keep the layer alive.
    model = identity_block()
    probe = weakref.ref(next(model.children()))
    del model
    gc.collect()
    assert probe() is None


def test_a_layer_instance_in_two_places_of_one_network_is_refused() -> None:
    # One instance at two places would keep one forward's cache for both calls (wrong
    # weight gradients) and list its parameters twice: refused when a container that
    # already holds it, or holds it twice, is built or given it.
    conv = nn.Conv2D(4, 4, 3, padding=1)
    with pytest.raises(ValueError, match=r"layer '1' to this Sequential: that Conv2D.* \(as '0'\)"):
        nn.Sequential(conv, conv)
    with pytest.raises(ValueError, match=r"Conv2D '1\.1' .* already in it \(as '0'\)"):
        nn.Sequential(conv, nn.Sequential(nn.ReLU(), conv))
    inner = nn.Input((4, 8, 8))
    out = conv(inner)
    first, second = nn.Model(inner, out), nn.Model(inner, out)  # two Models of one graph
    x = nn.Input((4, 8, 8))
    with pytest.raises(ValueError, match=r"that Conv2D is already in it \(as 'model_1\.conv2d"):
        nn.Model(x, second(first(x)))
    block = nn.Sequential(nn.ReLU())
    with pytest.raises(ValueError, match="cannot contain itself"):
        block.add_layer("again", block)
    block.add_layer("0", block[0])  # the child it replaces is no other place


def test_a_layer_put_at_a_second_place_through_an_inner_container_is_refused() -> None:
    # Adding to `inner` checks inner's tree only; `outer` then holds `relu` twice, which
    # parameters() (and so every optimiser) refuses, naming both places.
    relu, conv = nn.ReLU(), nn.Conv2D(2, 2, 3)
    inner = nn.Sequential(conv)
    outer = nn.Sequential(inner, relu)
    assert len(outer.parameters()) == 2
    inner.add_layer("late", relu)
    assert len(inner.parameters()) == 2  # inner alone holds it once
    twice = r"layer ReLU '1' of this Sequential is also its layer '0\.late'"
    with pytest.raises(ValueError, match=twice):
        outer.parameters()
    with pytest.raises(ValueError, match="one place only"):
        optim.SGD(outer.parameters(), lr=0.1)
    inner.add_layer("late", nn.ReLU())  # another instance in its place: accepted again
    assert len(outer.parameters()) == 2


def test_a_parameter_two_layers_hold_is_stepped_once_with_both_gradients(tmp_path) -> None:
    first, second = nn.Dense(3, 3, bias=False, rng=0), nn.Dense(3, 3, bias=False, rng=1)
    second.weight = first.weight
    model = nn.Sequential(first, second).astype(np.float64)
    assert model.parameters() == [first.weight]
    assert list(model.state_dict()) == ["0.weight", "1.weight"]  # as PyTorch's state_dict
    x, w = _x((5, 3)), first.weight.data.copy()
    model.forward(x, training=True)
    model.backward(np.ones((5, 3)))
    # y = x W^T W^T: dL/dW = sum of the two layers' terms, each seen through the other
    expected = np.ones((5, 3)).T @ (x @ w.T) + (np.ones((5, 3)) @ w).T @ x
    np.testing.assert_allclose(first.weight.grad, expected, rtol=1e-12)
    optim.SGD(model.parameters(), lr=0.1).step()
    np.testing.assert_allclose(second.weight.data, w - 0.1 * expected, rtol=1e-12)
    # A file would untie them (and its optimiser state would no longer fit): refused.
    with pytest.raises(ValueError, match=r"0\.weight and 1\.weight are one Parameter"):
        npcnn.save(model, tmp_path / "tied.npz")
    assert not (tmp_path / "tied.npz").exists()


def test_a_name_that_model_files_reserve_is_refused_when_the_graph_is_built() -> None:
    # '__fc.weight' would be saved, then read back as a record beside the model.
    x = nn.Input((4,))
    with pytest.raises(ValueError, match=r"must not begin with '__'.*got '__fc'"):
        nn.Model(x, nn.Dense(4, 2)(x, name="__fc"))
    with pytest.raises(ValueError, match="buffer name must not begin with '__'"):
        nn.Dense(2, 2).register_buffer("__count", None)
