"""``evaluate`` and ``predict`` on what users hand them: only the test files of a data
set, a model without parameters, a run whose data folder has moved, a damaged run.json
beside explicit options, and the run's test-time augmentation and test limit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import npcnn
from npcnn import nn
from npcnn.cli.main import main
from npcnn.data import load_dataset, write_idx
from npcnn.data.datasets import DIGITS, IDX_FILE_NAMES
from npcnn.models import get_preset

TEST_FILES = IDX_FILE_NAMES[2:]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code: int, err: str, *fragments: str) -> None:
    assert code == 1 and err.count("\n") == 1 and err.startswith("npcnn: error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def write_test_files(directory: Path, count: int = 40) -> Path:
    """Only the test split of the packaged sample, as MNIST's two t10k files."""
    sample = load_dataset("sample")
    directory.mkdir(parents=True)
    write_idx(directory / TEST_FILES[0], sample.test_images[:count])
    write_idx(directory / TEST_FILES[1], sample.test_labels[:count].astype(np.uint8))
    return directory


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A folder with a model of the small preset (untrained) and no run.json yet."""
    path = tmp_path / "run"
    path.mkdir()
    npcnn.save(get_preset("small").model(seed=0), path / "model.npz")
    return path


def write_record(run_dir: Path, test_images: int | None = None, **config: object) -> None:
    """A run.json as 'npcnn train' writes it, with the given settings."""
    data = {"name": "sample", "classes": list(DIGITS)}
    if test_images is not None:
        data["test_images"] = test_images
    (run_dir / "run.json").write_text(json.dumps({"config": config, "data": data}))


@pytest.fixture
def digit(tmp_path: Path) -> Path:
    image_module = pytest.importorskip("PIL.Image")
    path = tmp_path / "digit.png"
    image_module.fromarray(load_dataset("sample").test_images[0]).save(path)
    return path


def test_predict_with_a_model_without_parameters(tmp_path, digit, capsys) -> None:
    path = tmp_path / "pool.npz"
    npcnn.save(nn.Sequential([nn.AvgPool2D(14), nn.Flatten()]), path)  # 4 outputs
    code, out, err = run_cli(capsys, "predict", path, digit)
    assert code == 0 and err == "", err
    assert out.startswith(f"{digit}: ") and out.count("%") == 3
    npcnn.save(nn.Sequential([nn.ReLU()]), path)  # images out, not class scores
    code, out, err = run_cli(capsys, "predict", path, digit)
    assert out == ""
    assert_one_error_line(code, err, "the model's outputs for 1 image are (1, 1, 28, 28), not")
