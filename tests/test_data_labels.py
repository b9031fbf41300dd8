"""The number of classes comes from the data set's definition; stray labels are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from npcnn.cli.main import main
from npcnn.data import (
    DataError,
    DatasetSpec,
    FileSpec,
    LabelError,
    directory_classes,
    load_dataset,
    write_idx,
)
from npcnn.data.datasets import IDX_FILE_NAMES


def write_directory(
    directory: Path, train_labels: np.ndarray, test_labels: np.ndarray | None = None
) -> Path:
    """Four MNIST-named IDX files with random images and the given labels."""
    rng = np.random.default_rng(0)
    if test_labels is None:
        test_labels = np.arange(20, dtype=np.uint8) % 10
    directory.mkdir(parents=True)
    arrays = [
        rng.integers(0, 256, (len(train_labels), 28, 28), dtype=np.uint8),
        train_labels,
        rng.integers(0, 256, (len(test_labels), 28, 28), dtype=np.uint8),
        test_labels,
    ]
    for name, array in zip(IDX_FILE_NAMES, arrays, strict=True):
        write_idx(directory / name, array)
    return directory


def digits(n: int, stray: dict[int, int] | None = None, dtype: str = "u1") -> np.ndarray:
    """n labels cycling through 0-9, with ``stray`` {index: value} put in."""
    labels = (np.arange(n) % 10).astype(dtype)
    for index, value in (stray or {}).items():
        labels[index] = value
    return labels


def test_one_stray_label_is_refused_naming_the_file_the_count_and_the_value(tmp_path):
    directory = write_directory(tmp_path / "d", digits(1000, {7: 255}))
    with pytest.raises(LabelError) as info:
        load_dataset(directory)
    headline = info.value.summary
    assert headline == (
        f"{directory / 'train-labels-idx1-ubyte.gz'}: 1 of 1,000 labels are outside 0..9 "
        "(values: 255)"
    )
    assert "num_classes=N" in str(info.value) and "classes.txt" in str(info.value)


def test_many_stray_labels_show_how_many_and_the_first_values(tmp_path):
    test_stray = {i: 10 + i % 3 for i in range(0, 50, 7)}
    directory = write_directory(tmp_path / "d", digits(1000), digits(50, test_stray))
    with pytest.raises(LabelError, match=r"t10k-labels.*: 8 of 50 labels are outside 0\.\.9 "):
        load_dataset(directory)
    stray = {i: 10 + (i // 7) % 7 for i in range(0, 700, 7)} | {3: 12}
    directory = write_directory(tmp_path / "e", digits(1000, stray))
    with pytest.raises(LabelError, match=r"101 of 1,000 .* \(values: 10, 11, 12, 13, 14, \.\.\.\)"):
        load_dataset(directory)


def test_negative_labels_of_a_signed_idx_file_are_refused(tmp_path):
    directory = write_directory(tmp_path / "d", digits(30, {4: -1, 9: -128}, "i1"))
    with pytest.raises(LabelError, match=r"2 of 30 labels are outside 0\.\.9 \(values: -128, -1\)"):
        load_dataset(directory)


def test_a_directory_has_ten_classes_unless_told(tmp_path):
    directory = write_directory(tmp_path / "d", digits(40), np.array([0, 3, 11, 2], np.uint8))
    with pytest.raises(LabelError, match=r"1 of 4 labels are outside 0\.\.9 \(values: 11\)"):
        load_dataset(directory)
    data = load_dataset(directory, num_classes=12)
    assert data.classes == [str(i) for i in range(12)] and data.num_classes == 12
    # Fewer labels than classes is fine: the digits of a 5-digit subset are still 10 classes.
    few = write_directory(tmp_path / "few", digits(40) % 5, digits(20) % 5)
    assert load_dataset(few).num_classes == 10
    assert load_dataset(few, num_classes=5).num_classes == 5


def test_classes_txt_names_the_classes_of_a_directory(tmp_path):
    directory = write_directory(tmp_path / "d", digits(40) % 3, np.array([0, 1, 2], np.uint8))
    (directory / "classes.txt").write_text("cat\ndog\n\nbird\n", encoding="utf-8")
    assert load_dataset(directory).classes == ["cat", "dog", "bird"]
    assert load_dataset(directory, num_classes=3).classes == ["cat", "dog", "bird"]
    with pytest.raises(DataError, match=r"classes\.txt lists 3 classes, not 4"):
        load_dataset(directory, num_classes=4)
    (directory / "classes.txt").write_text("cat\ndog\n", encoding="utf-8")
    with pytest.raises(LabelError, match=r"outside 0\.\.1 \(values: 2\)"):
        load_dataset(directory)


@pytest.mark.parametrize(
    ("classes", "num_classes", "message"),
    [
        (["a", "b", "a"], None, "class names repeated: a"),
        (["only"], None, "at least 2 classes, got 1"),
        (None, 1, "at least 2 classes, got 1"),
        (None, True, "must be an integer"),
        (None, 2.5, "must be an integer"),
        (["a", "b"], 3, "lists 2 classes, not 3"),
    ],
)
def test_directory_classes_refuses_what_cannot_be_a_classifier(
    tmp_path, classes, num_classes, message
):
    with pytest.raises(DataError, match=message):
        directory_classes(tmp_path, classes, num_classes)


def test_a_named_data_set_keeps_its_own_classes():
    assert load_dataset("sample", num_classes=10).num_classes == 10
    with pytest.raises(DataError, match="'sample' data set has 10 classes, not 12"):
        load_dataset("sample", num_classes=12)


def test_a_named_data_set_file_with_a_stray_label_is_refused_naming_it(tmp_path):
    spec = DatasetSpec("tiny", ("a", "b", "c"), files=tuple(map(FileSpec, IDX_FILE_NAMES)))
    write_directory(tmp_path / "tiny", digits(12) % 3, np.array([0, 1, 2, 3], np.uint8))
    with pytest.raises(LabelError) as info:
        load_dataset(spec=spec, cache_dir=tmp_path, download=False)
    assert info.value.summary == (
        f"{tmp_path / 'tiny' / 't10k-labels-idx1-ubyte.gz'}: 1 of 4 labels are outside 0..2 "
        "(values: 3)"
    )


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


QUICK = ["--epochs", "1", "--limit-train", "40", "--limit-test", "20", "--no-progress"]


def test_cli_train_refuses_a_stray_label_in_one_line(tmp_path, capsys):
    directory = write_directory(tmp_path / "d", digits(200, {7: 255}))
    code, out, err = cli(capsys, "train", "--data", directory, "--out", tmp_path / "run", *QUICK)
    assert code == 1 and out == ""
    assert err == (
        f"npcnn: error: {directory / 'train-labels-idx1-ubyte.gz'}: 1 of 200 labels are "
        "outside 0..9 (values: 255); pass --num-classes N if the data set has more classes\n"
    )
    assert not (tmp_path / "run").exists()


def test_cli_num_classes_with_a_named_data_set_of_another_count(tmp_path, capsys):
    code, out, err = cli(capsys, "train", "--data", "sample", "--num-classes", "12", *QUICK)
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("npcnn: error: --num-classes 12: the 'sample' data set has 10 classes")
    code, _, err = cli(capsys, "train", "--num-classes", "1", *QUICK)
    assert code == 2 and "at least 2 classes, got 1" in err


def test_cli_num_classes_trains_and_evaluates_a_directory(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    directory = write_directory(tmp_path / "d", digits(40) + 2, digits(20) + 2)  # labels 2..11
    run = tmp_path / "run"
    code, _, err = cli(
        capsys, "train", "--data", directory, "--num-classes", "12", "--out", run, *QUICK
    )
    assert code == 0, err
    import npcnn

    model = npcnn.load(run / "model.npz")
    assert model.forward(np.zeros((1, 1, 28, 28), np.float32)).shape == (1, 12)
    # evaluate takes the number of classes from the run, or from the option.
    for extra in ([], ["--data", directory, "--num-classes", "12"]):
        code, out, err = cli(capsys, "evaluate", run / "model.npz", *extra)
        assert code == 0, err
        assert "Data: d test split, 20 images" in out
    code, _, err = cli(capsys, "evaluate", run / "model.npz", "--data", "sample")
    assert code == 1 and "12 outputs" in err


def test_cli_predict_names_a_directory_s_classes_without_reading_its_labels(tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    import npcnn
    from npcnn.models import get_preset

    model = tmp_path / "model.npz"
    npcnn.save(get_preset("small").model(seed=0, num_classes=12), model)
    image = tmp_path / "digit.png"
    Image.fromarray(np.pad(np.full((12, 6), 255, np.uint8), 8)).save(image)
    # Labels that would be refused: predict needs the names only.
    directory = write_directory(tmp_path / "d", digits(30, {0: 200}))
    names = [f"class-{i}" for i in range(12)]
    (directory / "classes.txt").write_text("\n".join(names), encoding="utf-8")
    code, out, err = cli(capsys, "predict", model, image, "--data", directory, "--top", "12")
    assert code == 0, err
    assert sorted(part.split(" (")[0] for part in out.split(": ", 1)[1].split(", ")) == sorted(
        names
    )
    (directory / "classes.txt").write_text("a\nb\n", encoding="utf-8")
    code, _, err = cli(capsys, "predict", model, image, "--data", directory)
    assert code == 1
    listed = directory / "classes.txt"
    assert err == f"npcnn: error: the model has 12 outputs but {listed} lists 2 classes, not 12\n"


def test_a_directory_whose_test_images_have_another_size_is_refused(tmp_path) -> None:
    # A model trained on 28x28 would fail only at the first test pass, naming no file.
    directory = write_directory(tmp_path / "d", digits(40))
    rng = np.random.default_rng(1)
    write_idx(directory / IDX_FILE_NAMES[2], rng.integers(0, 256, (20, 32, 32), dtype=np.uint8))
    sizes = r"the splits' images differ in size: train-images\S* 28x28 and t10k-images\S* 32x32"
    with pytest.raises(DataError, match=sizes):
        load_dataset(directory)
