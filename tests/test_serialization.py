"""Saving and loading models as .npz (no pickle), and the model summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import npcnn
from npcnn import nn
from npcnn.serialization import ARCHITECTURE_KEY, model_from_arrays, model_to_arrays


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


def test_summary_rejects_an_input_that_does_not_fit(notebook_model) -> None:
    with pytest.raises(ValueError):
        notebook_model().summary(input_shape=(3, 28, 28))
