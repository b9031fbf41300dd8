"""Saving and loading models as .npz (no pickle), and the model summary."""

from __future__ import annotations

import io
import json
import struct
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

import npcnn
from npcnn import nn
from npcnn.serialization import ARCHITECTURE_KEY, layer_spec, model_from_arrays, model_to_arrays


def _trained(model: nn.Sequential, rng: np.random.Generator, shape) -> nn.Sequential:
    """Move the batch-norm running statistics away from their initial values."""
    for _ in range(3):
        model.forward(rng.uniform(0, 1, shape).astype(np.float32), training=True)
    return model


def _every_layer_model(rng: np.random.Generator) -> nn.Sequential:
    return nn.Sequential(
        [
            nn.Conv2D(2, 4, (3, 2), stride=(1, 2), padding=(1, 0), rng=rng),
            nn.BatchNorm2D(4, eps=1e-3, momentum=0.2),
            nn.LeakyReLU(0.05),
            nn.MaxPool2D(2, stride=1, padding=1),
            nn.AvgPool2D(3, stride=2, padding=1),
            nn.Tanh(),
            nn.Flatten(),
            nn.Dense(4 * 4 * 3, 6, bias=False, rng=rng),
            nn.BatchNorm1D(6),
            nn.Sigmoid(),
            nn.Dropout(0.25, rng=rng),
            nn.ReLU(),
            nn.Dense(6, 3, rng=rng),
        ]
    )


def test_round_trip_notebook(tmp_path: Path, notebook_model, rng) -> None:
    model = _trained(notebook_model(rng=2), rng, (4, 1, 28, 28))
    path = tmp_path / "model.npz"
    npcnn.save(model, path)
    loaded = npcnn.load(path)
    x = rng.uniform(0, 1, (3, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert list(loaded_state) == list(state)
    for name, value in state.items():
        np.testing.assert_array_equal(loaded_state[name], value, err_msg=name)
        assert loaded_state[name].dtype == value.dtype, name
    assert int(loaded[1].num_batches_tracked) == 3


def test_round_trip_every_layer_type(tmp_path: Path, rng) -> None:
    model = _trained(_every_layer_model(rng), rng, (4, 2, 7, 8))
    path = tmp_path / "every.npz"
    npcnn.save(model, path)
    loaded = npcnn.load(path)
    assert [type(layer) for layer in loaded] == [type(layer) for layer in model]
    assert [layer.config() for layer in loaded] == [layer.config() for layer in model]
    x = rng.uniform(0, 1, (2, 2, 7, 8)).astype(np.float32)
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


def test_round_trip_float64(tmp_path: Path, rng) -> None:
    model = nn.Sequential([nn.Dense(3, 2, rng=rng), nn.BatchNorm1D(2)]).astype(np.float64)
    npcnn.save(model, tmp_path / "f64.npz")
    loaded = npcnn.load(tmp_path / "f64.npz")
    assert all(p.dtype == np.float64 for p in loaded.parameters())
    x = rng.standard_normal((4, 3))
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


def test_model_to_arrays_is_what_save_writes(tmp_path: Path, rng) -> None:
    model = _every_layer_model(rng)
    arrays = model_to_arrays(model)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(arrays[name], value)
    # Anything else is the architecture, stored without objects.
    extra = set(arrays) - set(model.state_dict())
    assert extra
    assert all(arrays[k].dtype != object for k in arrays)
    npcnn.save(model, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as saved:
        assert set(saved.files) == set(arrays)
    rebuilt = model_from_arrays(arrays)
    x = rng.uniform(0, 1, (2, 2, 7, 8)).astype(np.float32)
    np.testing.assert_array_equal(rebuilt.forward(x), model.forward(x))


def test_unexpected_array_is_refused_naming_it(tmp_path: Path, rng) -> None:
    # Loading is strict: a checkpoint's own arrays must be split off before rebuilding.
    arrays = model_to_arrays(_every_layer_model(rng))
    arrays["epoch"] = np.array(3)
    np.savez(tmp_path / "extra.npz", **arrays)
    with pytest.raises(ValueError, match="epoch"):
        npcnn.load(tmp_path / "extra.npz")
    del arrays["epoch"]
    assert isinstance(model_from_arrays(arrays), nn.Sequential)


def test_object_array_is_refused_not_unpickled(tmp_path: Path, rng) -> None:
    arrays = model_to_arrays(nn.Sequential([nn.Dense(2, 2, rng=rng)]))
    marker = tmp_path / "unpickled"
    arrays["evil"] = np.array([_Boom(str(marker))], dtype=object)
    path = tmp_path / "evil.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError):
        npcnn.load(path)
    assert not marker.exists()


class _Boom:
    """Pickled into an object array; unpickling it would create a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _with_record(arrays: dict[str, np.ndarray], **changes) -> dict[str, np.ndarray]:
    """A copy of `arrays` whose architecture record has some fields replaced."""
    record = json.loads(str(arrays[ARCHITECTURE_KEY]))
    record.update(changes)
    return {**arrays, ARCHITECTURE_KEY: np.array(json.dumps(record))}


_DENSE = {"type": "Dense", "config": {"in_features": 2, "out_features": 2}}


@pytest.mark.parametrize(
    "changes",
    [
        {"model": {"type": "system", "config": {"command": "touch x"}}},
        {"model": {"type": "Sequential", "config": {"layers": [_DENSE, {"type": "eval"}]}}},
        {"model": {"type": "Sequential", "config": {"layers": 5}}},
        {"model": {"type": "Sequential", "config": [1, 2]}},
        {"model": {"type": "Dense", "config": {"in_features": 2, "out_features": 2, "x": 1}}},
        {"model": [1, 2]},
        {"format": "something-else"},
        {"version": 99},
        {"version": "x"},
        {"dtype": "bogus"},
        {"dtype": "object"},
    ],
    ids=[
        "unknown_type",
        "unknown_nested_type",
        "layers_not_a_list",
        "config_not_a_dict",
        "unexpected_argument",
        "model_not_a_dict",
        "format",
        "newer_version",
        "version_not_a_number",
        "dtype_unknown",
        "dtype_object",
    ],
)
def test_malformed_architecture_record_is_a_value_error(changes, tmp_path: Path) -> None:
    arrays = model_to_arrays(nn.Sequential([nn.Dense(2, 2, rng=0)]))
    path = tmp_path / "bad.npz"
    np.savez(path, **_with_record(arrays, **changes))
    with pytest.raises(ValueError):
        npcnn.load(path)


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_a_switch_that_is_not_true_or_false_is_named(value, tmp_path: Path) -> None:
    # "yes" would count as true: the model would then ask the file for a bias it never
    # had, and the message would blame a missing array rather than the setting.
    arrays = model_to_arrays(nn.Sequential([nn.Dense(2, 2, bias=False, rng=0)]))
    dense = {"type": "Dense", "config": {"in_features": 2, "out_features": 2, "bias": value}}
    model = {"type": "Sequential", "config": {"layers": [dense]}}
    np.savez(tmp_path / "bad.npz", **_with_record(arrays, model=model))
    with pytest.raises(ValueError, match=f"bias must be true or false, got {value!r}"):
        npcnn.load(tmp_path / "bad.npz")


def test_a_negative_running_variance_is_refused_on_load(tmp_path: Path) -> None:
    arrays = model_to_arrays(nn.Sequential([nn.Conv2D(1, 2, 3), nn.BatchNorm2D(2)]))
    arrays["1.running_var"] = np.array([1.0, -0.5], np.float32)  # sqrt(var + eps): NaN
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=r"the running variance '1\.running_var' is negative"):
        npcnn.load(tmp_path / "bad.npz")


def test_architecture_record_that_is_not_json_is_refused(tmp_path: Path) -> None:
    arrays = model_to_arrays(nn.Sequential([nn.Dense(2, 2, rng=0)]))
    path = tmp_path / "bad.npz"
    np.savez(path, **{**arrays, ARCHITECTURE_KEY: np.array("{not json")})
    with pytest.raises(ValueError, match="JSON"):
        npcnn.load(path)


def test_random_npz_is_refused(tmp_path: Path, rng) -> None:
    path = tmp_path / "other.npz"
    np.savez(path, a=rng.standard_normal(3), b=np.arange(4))
    with pytest.raises(ValueError, match=r"(?i)npcnn|architecture|model"):
        npcnn.load(path)


def test_text_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.npz"
    path.write_text("this is not a model\n")
    with pytest.raises(ValueError, match=r"(?i)npz|zip|npcnn|read|model"):
        npcnn.load(path)


def test_truncated_file_is_refused(tmp_path: Path, notebook_model) -> None:
    path = tmp_path / "model.npz"
    npcnn.save(notebook_model(), path)
    data = path.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"(?i)npz|zip|corrupt|truncat|read|model"):
        npcnn.load(cut)


def test_wrong_shape_array_is_refused_naming_it(tmp_path: Path, rng) -> None:
    arrays = model_to_arrays(_every_layer_model(rng))
    arrays["7.weight"] = np.zeros((6, 5), dtype=np.float32)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"7\.weight"):
        npcnn.load(path)


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("0.weight", "int64"),
        ("0.weight", "bool"),
        ("0.weight", "complex128"),
        ("0.weight", "float16"),
        ("1.running_mean", "int32"),
        ("1.num_batches_tracked", "float32"),
    ],
)
def test_an_array_of_the_wrong_dtype_is_refused_naming_it(
    name: str, dtype: str, tmp_path: Path, rng, capsys
) -> None:
    arrays = model_to_arrays(_every_layer_model(rng))
    arrays[name] = arrays[name].astype(dtype)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    _short_value_error(path, f"'{name}'", f"dtype {dtype}")
    assert f"dtype {dtype}" in _cli_error(capsys, "summary", path)


def test_load_state_dict_refuses_an_array_of_another_kind(rng) -> None:
    model = nn.Sequential(nn.Dense(3, 4, rng=rng), nn.BatchNorm1D(4))
    state = model.state_dict()
    with pytest.raises(ValueError, match=r"0\.weight: dtype int64 in the state dict, float32"):
        model.load_state_dict({**state, "0.weight": state["0.weight"].astype(np.int64)})
    with pytest.raises(ValueError, match=r"1\.num_batches_tracked: dtype float64"):
        model.load_state_dict({**state, "1.num_batches_tracked": np.array(1.0)})
    model.load_state_dict({**state, "0.weight": state["0.weight"].astype(np.float64)})


def test_missing_array_is_refused_naming_it(tmp_path: Path, rng) -> None:
    arrays = model_to_arrays(_every_layer_model(rng))
    del arrays["1.running_var"]
    path = tmp_path / "missing.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"1\.running_var"):
        npcnn.load(path)


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        npcnn.load(tmp_path / "nope.npz")


def test_save_leaves_no_temporary_files(tmp_path: Path, rng) -> None:
    npcnn.save(nn.Sequential([nn.Dense(2, 2, rng=rng)]), tmp_path / "m.npz")
    npcnn.save(nn.Sequential([nn.Dense(2, 3, rng=rng)]), tmp_path / "m.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]
    assert npcnn.load(tmp_path / "m.npz")[0].weight.shape == (3, 2)


def test_summary_of_notebook(notebook_model, capsys) -> None:
    model = notebook_model()
    all_rows = model.summary(input_shape=(1, 28, 28))
    printed = capsys.readouterr().out
    total = 16 * 9 + 2 * 16 + 18 * 16 * 16 + 2 * 18 + 20 * 3042 + 2 * 20 + 10 * 20 + 10
    # One row per layer, optionally followed by a "total" row.
    rows = [row for row in all_rows if row["name"] != "total"]
    assert len(all_rows) - len(rows) in (0, 1)
    if len(all_rows) > len(rows):
        assert all_rows[-1]["params"] == total
    assert len(rows) == len(model)
    expected_shapes = [
        (16, 28, 28),
        (16, 28, 28),
        (16, 28, 28),
        (16, 14, 14),
        (18, 13, 13),
        (18, 13, 13),
        (18, 13, 13),
        (18 * 13 * 13,),
        (20,),
        (20,),
        (20,),
        (10,),
    ]
    # Output shapes may or may not include the batch axis.
    shapes = [tuple(row["output_shape"]) for row in rows]
    assert [s[-len(e) :] for s, e in zip(shapes, expected_shapes, strict=True)] == expected_shapes
    expected_params = [16 * 9, 2 * 16, 0, 0, 18 * 16 * 16, 2 * 18, 0, 0, 20 * 3042, 2 * 20, 0]
    expected_params.append(10 * 20 + 10)
    assert [row["params"] for row in rows] == expected_params
    assert total == sum(p.data.size for p in model.parameters())
    assert [row["type"] for row in rows][:2] == ["Conv2D", "BatchNorm2D"]
    assert f"{total:,}" in printed or str(total) in printed
    assert "Conv2D" in printed


def test_summary_columns_fit_a_long_layer_name(capsys) -> None:
    model = nn.Sequential(nn.Conv2D(2, 4, 3, groups=2, rng=0), nn.GlobalAvgPool2D())
    model.summary(input_shape=(2, 5, 5))
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if "GlobalAvgPool2D" in line)
    assert row.split() == ["1", "GlobalAvgPool2D", "(None,", "4)", "0"]
    header = next(line for line in lines if line.startswith("#"))
    assert row.index("(None") == header.index("Output shape")


def test_summary_rejects_an_input_that_does_not_fit(notebook_model) -> None:
    with pytest.raises(ValueError):
        notebook_model().summary(input_shape=(3, 28, 28))


# --- damaged and crafted files: refused quickly, in one short line -------------------


def _cli_error(capsys, *argv) -> str:
    """Run the command line, expecting one short `npcnn: error:` line; return it."""
    from npcnn.cli.main import main

    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith("npcnn: error: ") and "Traceback" not in err
    return lines[0]


def _short_value_error(path: Path, *fragments: str, limit: int = 200) -> str:
    """npcnn.load(path) must raise a ValueError of at most `limit` characters that
    starts with the file's name and says each fragment."""
    with pytest.raises(ValueError) as info:
        npcnn.load(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert len(message) - len(str(path)) <= limit, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def _with_model(arrays: dict[str, np.ndarray], model: dict | str) -> dict[str, np.ndarray]:
    """`arrays` with another model in the architecture record (a dict, or its JSON text)."""
    record = json.loads(str(arrays[ARCHITECTURE_KEY]))
    text = json.dumps({**record, "model": "MODEL"})
    text = text.replace('"MODEL"', model if isinstance(model, str) else json.dumps(model))
    return {**arrays, ARCHITECTURE_KEY: np.array(text)}


def test_a_huge_layer_with_tiny_arrays_is_refused_before_allocating(tmp_path, capsys) -> None:
    arrays = model_to_arrays(nn.Sequential(nn.Dense(2, 2, rng=0)))
    huge = {"type": "Dense", "config": {"in_features": 10**6, "out_features": 10**6}}
    path = tmp_path / "huge.npz"
    np.savez(path, **_with_model(arrays, {"type": "Sequential", "config": {"layers": [huge]}}))
    _short_value_error(path, "'0.weight'", "(2, 2)", "(1000000, 1000000)")
    # A huge layer whose arrays are not in the file at all.
    layers = [{"type": "Dense", "config": {"in_features": 2, "out_features": 2}}, huge]
    np.savez(path, **_with_model(arrays, {"type": "Sequential", "config": {"layers": layers}}))
    _short_value_error(path, "'1.weight'", "missing")
    assert "'1.weight'" in _cli_error(capsys, "summary", path)


def _nested(depth: int) -> str:
    """The JSON text of a Dense(2, 2) inside `depth` Sequentials (json.dumps could
    not write it: it recurses as deep as the nesting)."""
    dense = '{"type": "Dense", "config": {"in_features": 2, "out_features": 2}}'
    return '{"type": "Sequential", "config": {"layers": [' * depth + dense + "]}}" * depth


@pytest.mark.parametrize("depth", [100, 10_000])
def test_deeply_nested_layers_are_refused(depth: int, tmp_path, capsys) -> None:
    # 100 levels parse as JSON but nest deeper than any sane model; 10,000 exceed
    # what json (and Python's recursion) can take at all.
    inner = nn.Dense(2, 2, rng=0)
    state = {"0." * depth + name: value for name, value in inner.state_dict().items()}
    arrays = {**model_to_arrays(inner), **state}
    for name in inner.state_dict():
        del arrays[name]
    path = tmp_path / "deep.npz"
    np.savez(path, **_with_model(arrays, _nested(depth)))
    message = _short_value_error(path, "deep")
    assert "nest" in message
    assert "nest" in _cli_error(capsys, "summary", path)


def test_a_user_layer_claiming_more_than_the_file_holds_is_refused(tmp_path) -> None:
    # A class that does not state its shapes is built, then counted against the file.
    model = nn.Sequential(_Table(3))
    arrays = model_to_arrays(model)
    path = tmp_path / "table.npz"
    table = layer_spec(_Table(10**4))
    np.savez(path, **_with_model(arrays, {"type": "Sequential", "config": {"layers": [table]}}))
    _short_value_error(path, "needs more than the 3 parameter and buffer values")


@nn.register_layer
class _Table(nn.Layer):
    """A lookup table with no `state_shapes`: y = x + values (values (n,))."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.values = nn.Parameter(np.zeros(n, dtype=np.float32))

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return x + self.values.data

    def config(self) -> dict:
        return {"n": self.n}


def _npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    buffer = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)  # the magic string, then the header
    return buffer.getvalue()


def test_an_array_claiming_more_than_it_holds_is_refused_unread(tmp_path, capsys) -> None:
    arrays = model_to_arrays(nn.Sequential(nn.Dense(2, 2, rng=0)))
    path = tmp_path / "liar.npz"
    np.savez(path, **arrays)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("big.npy", _npy_header((10**12,), "<f8") + bytes(16))
    _short_value_error(path, "'big'", "claims shape (1000000000000,)", "holds 16 bytes")
    assert "claims shape" in _cli_error(capsys, "evaluate", path)


def _zip_bomb(path: Path, name: str, header: bytes, zeros: int) -> None:
    """Write a zip whose member `name` is `header` then `zeros` zero bytes, deflated.

    Compressing gigabytes would take seconds, so the deflate stream is made of one
    compressed chunk repeated: after a full flush the compressor starts afresh, so
    each chunk compresses to the same bytes. The CRC is left 0 (never checked:
    the file must be refused before its data is read).
    """
    chunk = 2**20
    assert zeros % chunk == 0
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(header) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    data = head + block * (zeros // chunk) + compressor.flush()
    size, encoded = len(header) + zeros, name.encode()
    local = struct.pack(
        "<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, 0, len(data), size, len(encoded), 0
    )
    central = struct.pack(
        "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, 0, len(data), size,
        len(encoded), 0, 0, 0, 0, 0, 0,
    )  # fmt: skip
    offset = len(local) + len(encoded) + len(data)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(encoded), offset, 0)
    path.write_bytes(local + encoded + data + central + encoded + end)


def test_a_zip_bomb_is_refused_before_decompressing(tmp_path, capsys) -> None:
    path = tmp_path / "bomb.npz"
    zeros = 2**31 - 2**24  # about 2 GB (below 2**31, where zip64 records begin)
    header = _npy_header((zeros // 8,), "<f8")
    _zip_bomb(path, "0.weight.npy", header, zeros)
    assert path.stat().st_size < 4 * 2**20
    with zipfile.ZipFile(path) as archive:  # a well-formed archive, as far as zip goes
        assert archive.getinfo("0.weight.npy").file_size > 2 * 10**9
    start = time.perf_counter()
    _short_value_error(path, f"decompress to {len(header) + zeros:,} bytes", "zip bomb")
    assert time.perf_counter() - start < 2.0
    assert "zip bomb" in _cli_error(capsys, "predict", path, "digit.png")


def test_unknown_layer_type_is_said_first_in_a_short_line(tmp_path, capsys) -> None:
    arrays = model_to_arrays(nn.Sequential(nn.ReLU()))
    layers = [{"type": "ReLU", "config": {}}] * 300 + [{"type": "Foo", "config": {"x": "y" * 999}}]
    path = tmp_path / "foo.npz"
    np.savez(path, **_with_model(arrays, {"type": "Sequential", "config": {"layers": layers}}))
    message = _short_value_error(path, "unknown layer type 'Foo'", "(layer '300')")
    assert message.index("unknown layer type") < len(str(path)) + 5
    line = _cli_error(capsys, "summary", path)
    assert line.startswith(f"npcnn: error: {path}: unknown layer type 'Foo'")
    assert len(line) - len(str(path)) < 200


def test_damaged_files_never_raise_anything_but_value_error(tmp_path, rng) -> None:
    """Random damage to a small model file (bytes changed, cut short): npcnn.load
    either loads a model or raises ValueError, never another exception."""
    path = tmp_path / "model.npz"
    npcnn.save(nn.Sequential(nn.Conv2D(1, 2, 3, rng=0), nn.BatchNorm2D(2)), path)
    original = path.read_bytes()
    damaged = tmp_path / "damaged.npz"
    for trial in range(300):
        data = bytearray(original)
        for position in rng.integers(0, len(data), size=1 + trial % 4):
            data[position] = rng.integers(0, 256)
        if trial % 5 == 0:
            data = data[: rng.integers(1, len(data))]
        damaged.write_bytes(bytes(data))
        try:
            npcnn.load(damaged)
        except ValueError:
            pass


# --- training checkpoints and non-finite weights -----------------------------------


@pytest.fixture
def checkpoint(tmp_path: Path, notebook_model) -> Path:
    """A training checkpoint of the notebook network after one epoch on 20 digits."""
    from npcnn import optim
    from npcnn.data import BatchIterator, load_dataset
    from npcnn.training import Trainer

    data = load_dataset("sample").head(20, 20)
    model = notebook_model(rng=0)
    path = tmp_path / "run" / "checkpoint.npz"
    trainer = Trainer(
        model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01), checkpoint_path=path
    )
    trainer.fit(BatchIterator(data.train_images, data.train_labels, 10, rng=0), 1)
    assert path.is_file()
    return path


def test_npcnn_load_refuses_a_checkpoint_saying_what_it_is(checkpoint: Path) -> None:
    _short_value_error(checkpoint, "training checkpoint", "load_checkpoint")


def test_the_commands_take_a_checkpoint_for_a_model(checkpoint: Path, capsys) -> None:
    from npcnn.cli.main import main
    from npcnn.training import load_checkpoint

    assert main(["evaluate", str(checkpoint), "--limit-test", "30"]) == 0
    out, err = capsys.readouterr()
    assert err == f"note: {checkpoint} is a training checkpoint; using its model\n"
    assert "test accuracy" in out
    image = checkpoint.parent / "digit.png"
    pixels = np.zeros((28, 28), np.uint8)
    pixels[6:22, 12:16] = 255  # a "1"
    pytest.importorskip("PIL.Image").fromarray(pixels).save(image)
    assert main(["predict", str(checkpoint), str(image)]) == 0
    out, err = capsys.readouterr()
    assert "training checkpoint" in err and out.startswith(f"{image}: ")
    # The same predictions as from the checkpoint's model itself.
    model = load_checkpoint(checkpoint)["model"]
    npcnn.save(model, checkpoint.parent / "model.npz")
    assert main(["predict", str(checkpoint.parent / "model.npz"), str(image)]) == 0
    assert capsys.readouterr().out == out


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_are_refused(bad: float, tmp_path: Path, capsys) -> None:
    model = nn.Sequential(nn.Dense(3, 4, rng=0), nn.BatchNorm1D(4))
    path = tmp_path / "bad.npz"
    arrays = dict(np.load(npcnn.save(model, path)))  # save itself refuses bad weights
    arrays["0.weight"][1, :2] = bad
    arrays["1.running_var"][3] = bad
    np.savez(path, **arrays)
    _short_value_error(
        path, "the model's weights contain NaN or infinity (2 values in '0.weight', and 1 more"
    )
    assert "NaN or infinity" in _cli_error(capsys, "summary", path)
