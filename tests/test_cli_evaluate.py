"""``evaluate`` and ``predict`` on what users hand them: only the test files of a data
set, a model without parameters, a run whose data folder has moved, a damaged run.json
beside explicit options, and the run's test-time augmentation and test limit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import npcnn
from npcnn import nn
from npcnn.cli.main import main
from npcnn.data import DATASETS, DatasetSpec, FileSpec, load_dataset, write_idx
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


def test_evaluate_needs_only_the_test_files_of_a_directory(run_dir, tmp_path, capsys) -> None:
    data = write_test_files(tmp_path / "t")
    code, out, err = run_cli(capsys, "evaluate", "--data", data, run_dir / "model.npz")
    assert code == 0, err
    assert "Data: t test split, 40 images" in out


def test_evaluate_needs_only_the_test_files_of_a_named_data_set(
    run_dir, tmp_path, capsys, monkeypatch
) -> None:
    cache = tmp_path / "cache"
    write_test_files(cache / "toy")
    md5 = {n: hashlib.md5((cache / "toy" / n).read_bytes()).hexdigest() for n in TEST_FILES}
    files = tuple(FileSpec(name, md5.get(name)) for name in IDX_FILE_NAMES)
    monkeypatch.setitem(DATASETS, "toy", DatasetSpec("toy", DIGITS, files))  # no mirrors
    monkeypatch.setenv("NPCNN_DATA", str(cache))
    code, out, err = run_cli(capsys, "evaluate", "--data", "toy", run_dir / "model.npz")
    assert code == 0, err
    assert "Data: toy test split, 40 images" in out


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


def test_evaluate_says_when_the_runs_data_folder_has_gone(run_dir, tmp_path, capsys) -> None:
    gone = tmp_path / "digits"
    write_record(run_dir, data=str(gone), num_classes=None, tta="none")
    code, _, err = run_cli(capsys, "evaluate", run_dir / "model.npz")
    assert_one_error_line(
        code, err, f"the run's data folder {gone} (from {run_dir / 'run.json'}) no longer exists",
        "pass --data",
    )  # fmt: skip


def test_evaluate_names_the_record_whose_data_folder_holds_no_data(run_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    write_record(run_dir, data=str(tmp_path / "empty"), num_classes=None, tta="none")
    code, _, err = run_cli(capsys, "evaluate", run_dir / "model.npz")
    assert_one_error_line(
        code, err, f"the run's data {tmp_path / 'empty'} (from {run_dir / 'run.json'}): ",
        "missing IDX file(s)", "; pass --data NAME|DIR",
    )  # fmt: skip
    code, _, err = run_cli(capsys, "evaluate", run_dir / "model.npz", "--data", tmp_path / "empty")
    assert code == 1 and "run.json" not in err  # a folder given: the run's record is no cause
    write_record(run_dir, data="sample", num_classes=None, tta="none")
    code, _, err = run_cli(capsys, "evaluate", run_dir / "model.npz", "--num-classes", "5")
    assert code == 2 and "run.json" not in err and "--num-classes 5" in err, err


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, "{not json", '{"config": {"data": [[1]], "tta": 5, "num_classes": "x"}}'],
)
def test_a_damaged_run_record_does_not_matter_to_explicit_options(run_dir, capsys, text) -> None:
    (run_dir / "run.json").write_text(text)
    options = ["--data", "sample", "--tta", "none", "--limit-test", "20"]
    code, out, err = run_cli(capsys, "evaluate", run_dir / "model.npz", *options)
    assert code == 0 and err == "", err
    assert "Data: sample test split, 20 images" in out


def test_a_damaged_run_record_value_that_is_needed_is_one_error_line(run_dir, capsys) -> None:
    (run_dir / "run.json").write_text('{"config": {"data": [[1]], "tta": 5}}')
    model = run_dir / "model.npz"
    code, _, err = run_cli(capsys, "evaluate", model, "--data", "sample", "--limit-test", "20")
    assert_one_error_line(code, err, f"{run_dir / 'run.json'}: damaged run record ('tta' is 5)")
    code, _, err = run_cli(capsys, "evaluate", model, "--tta", "none", "--limit-test", "20")
    assert_one_error_line(code, err, "damaged run record ('data' is [[1]])")


def test_predict_notes_the_runs_test_time_augmentation_once(run_dir, digit, capsys) -> None:
    write_record(run_dir, data="sample", tta="flip")
    model = run_dir / "model.npz"
    code, out, err = run_cli(capsys, "predict", model, digit, digit)
    assert code == 0 and out.count("\n") == 2 and out.startswith(f"{digit}: ")
    assert err == (
        "note: test-time augmentation: flip (the run's, from run.json); --tta none turns it off\n"
    )
    for tta in ("flip", "none"):
        code, _, err = run_cli(capsys, "predict", model, digit, "--tta", tta)
        assert code == 0 and err == "", err


def test_evaluate_notes_a_run_tested_on_fewer_images(run_dir, capsys) -> None:
    write_record(run_dir, test_images=100, data="sample", limit_test=100, tta="none")
    model = run_dir / "model.npz"
    code, out, err = run_cli(capsys, "evaluate", model)
    assert code == 0 and "Data: sample test split, 500 images" in out
    assert err == (
        "note: the run was tested on its first 100 test images (metrics.json); evaluating "
        "all 500: pass --limit-test 100 to compare\n"
    )
    for options in (["--limit-test", "100"], ["--limit-test", "300"], ["--data", "Sample"]):
        code, _, err = run_cli(capsys, "evaluate", model, *options)
        assert code == 0 and ("note:" in err) == (options[0] == "--data"), (options, err)


def test_predict_reads_only_the_class_names_of_a_record_damaged_elsewhere(
    run_dir, digit, capsys
) -> None:
    names = [f"kind-{i}" for i in range(10)]
    config = {"lr": "fast", "epochs": 1.5, "data": [[1]]}  # settings predict does not read
    (run_dir / "run.json").write_text(json.dumps({"config": config, "data": {"classes": names}}))
    code, out, err = run_cli(capsys, "predict", run_dir / "model.npz", digit)
    assert code == 0 and err == "", err
    assert out.startswith(f"{digit}: kind-") and out.count("kind-") == 3


def test_a_record_whose_data_section_is_not_a_mapping_leaves_only_the_facts_unknown(
    run_dir, digit, capsys
) -> None:
    config = {"data": "sample", "tta": "none"}
    (run_dir / "run.json").write_text(json.dumps({"config": config, "data": [1]}))
    code, out, err = run_cli(capsys, "evaluate", run_dir / "model.npz")
    assert code == 0 and err == "", err  # no note on a limit the record cannot tell
    assert "Data: sample test split, 500 images" in out
    code, out, err = run_cli(capsys, "predict", run_dir / "model.npz", digit)
    assert code == 0 and err == "", err
    assert out.startswith(f"{digit}: ")  # class indices: the record names no classes
