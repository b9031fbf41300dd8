"""The packaged MNIST sample, directory loading, Dataset checks and the cache location."""

import gzip
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from npcnn.data import (
    DataError,
    Dataset,
    LabelError,
    default_cache_dir,
    load_dataset,
    load_split,
    write_idx,
)
from npcnn.data.datasets import IDX_FILE_NAMES
from npcnn.data.idx import encode_idx
from npcnn.data.sample import balanced_split, read_packaged, save_sample


@pytest.fixture(scope="module")
def sample():
    return load_dataset()


def test_default_is_the_sample(sample):
    assert sample.name == "sample"
    assert sample.classes == [str(d) for d in range(10)]
    assert sample.train_images.shape == (2000, 28, 28)
    assert sample.test_images.shape == (500, 28, 28)
    assert sample.train_images.dtype == np.uint8 and sample.test_images.dtype == np.uint8
    assert sample.train_labels.shape == (2000,) and sample.test_labels.shape == (500,)
    assert sample.train_labels.dtype == np.int64


def test_sample_is_balanced_over_all_ten_digits(sample):
    assert np.bincount(sample.train_labels, minlength=10).tolist() == [200] * 10
    assert np.bincount(sample.test_labels, minlength=10).tolist() == [50] * 10


def test_sample_looks_like_mnist(sample):
    # Real digits: dark background, bright strokes, centred ink.
    images = sample.train_images.astype(np.float64)
    assert 20 < images.mean() < 50
    assert (sample.train_images == 0).mean() > 0.7
    assert images[:, :, :4].mean() < 1 and images[:, 10:18, 10:18].mean() > 60


def test_sample_splits_are_disjoint(sample):
    arrays, _ = read_packaged("mnist_sample.npz")
    train_idx, test_idx = arrays["train_indices"], arrays["test_indices"]
    assert len(set(train_idx.tolist())) == 2000 and len(set(test_idx.tolist())) == 500
    assert not set(train_idx.tolist()) & set(test_idx.tolist())
    assert train_idx.max() < 10000 and test_idx.max() < 10000
    train = {img.tobytes() for img in sample.train_images}
    assert not any(img.tobytes() in train for img in sample.test_images)


def test_sample_records_provenance_and_licence():
    _, provenance = read_packaged("mnist_sample.npz")
    assert "CC BY-SA 3.0" in provenance["licence"]
    assert "LeCun" in provenance["authors"] and "Cortes" in provenance["authors"]
    assert "Burges" in provenance["authors"]
    assert "t10k" in provenance["source_split"]
    assert isinstance(provenance["seed"], int)


def test_sample_file_is_small():
    resource = resources.files("npcnn.data").joinpath("sample", "mnist_sample.npz")
    assert len(resource.read_bytes()) <= 2 * 1024 * 1024


def test_balanced_split_is_deterministic_and_disjoint():
    labels = np.random.default_rng(3).integers(0, 4, 200)
    a_train, a_test = balanced_split(labels, 5, 3, seed=11)
    b_train, b_test = balanced_split(labels, 5, 3, seed=11)
    np.testing.assert_array_equal(a_train, b_train)
    np.testing.assert_array_equal(a_test, b_test)
    assert np.bincount(labels[a_train]).tolist() == [5] * 4
    assert np.bincount(labels[a_test]).tolist() == [3] * 4
    assert not set(a_train.tolist()) & set(a_test.tolist())
    c_train, _ = balanced_split(labels, 5, 3, seed=12)
    assert not np.array_equal(a_train, c_train)
    with pytest.raises(DataError, match="class"):
        balanced_split(np.array([0, 0, 1]), 1, 1, seed=0)


def test_save_sample_is_byte_reproducible(tmp_path):
    arrays = {"a": np.arange(10, dtype=np.uint8), "b": np.zeros((2, 3))}
    first = save_sample(tmp_path / "1.npz", arrays, {"x": 1}).read_bytes()
    second = save_sample(tmp_path / "2.npz", arrays, {"x": 1}).read_bytes()
    assert first == second
    with np.load(tmp_path / "1.npz", allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["a"], arrays["a"])
        assert str(npz["provenance"]) == '{"x": 1}'


def _write_dir(directory: Path, labels_max=9):
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        np.arange(6, dtype=np.uint8) % (labels_max + 1),
        rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        np.array([0, 1, 2, labels_max], dtype=np.uint8),
    ]
    directory.mkdir()
    for i, (name, array) in enumerate(zip(IDX_FILE_NAMES, arrays, strict=True)):
        # Mix compressed and decompressed files, as users do.
        write_idx(directory / (name if i % 2 else name.removesuffix(".gz")), array)
    return arrays


def test_directory_path(tmp_path):
    arrays = _write_dir(tmp_path / "mydigits")
    for where in (str(tmp_path / "mydigits"), tmp_path / "mydigits"):
        ds = load_dataset(where)
        assert ds.name == "mydigits"
        assert ds.classes == [str(d) for d in range(10)]
        np.testing.assert_array_equal(ds.train_images, arrays[0])
        np.testing.assert_array_equal(ds.test_labels, arrays[3])


def test_directory_with_more_classes_says_so(tmp_path):
    # The labels never decide the number of classes: it is 10 unless told.
    _write_dir(tmp_path / "many", labels_max=11)
    with pytest.raises(LabelError, match=r"outside 0\.\.9"):
        load_dataset(tmp_path / "many")
    assert load_dataset(tmp_path / "many", num_classes=12).classes == [str(i) for i in range(12)]


def test_directory_missing_a_file(tmp_path):
    _write_dir(tmp_path / "d")
    (tmp_path / "d" / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataError, match=r"missing IDX file\(s\) t10k-images-idx3-ubyte"):
        load_dataset(tmp_path / "d")


def test_one_split_of_a_directory_needs_only_its_two_files(tmp_path):
    arrays = _write_dir(tmp_path / "d", labels_max=11)
    for name in IDX_FILE_NAMES[:2]:
        (tmp_path / "d" / name).unlink(missing_ok=True)
        (tmp_path / "d" / name.removesuffix(".gz")).unlink(missing_ok=True)
    test = load_split(tmp_path / "d", "test", num_classes=12)
    assert (test.name, test.split, test.num_classes) == ("d", "test", 12)
    np.testing.assert_array_equal(test.images, arrays[2])
    np.testing.assert_array_equal(test.labels, arrays[3])
    assert len(test.head(3).labels) == 3 and test.image_shape == (28, 28)
    with pytest.raises(DataError, match=r"missing IDX file\(s\) train-images-idx3-ubyte\[\.gz\], "):
        load_split(tmp_path / "d", "train", num_classes=12)
    with pytest.raises(LabelError, match=r"outside 0\.\.9"):
        load_split(tmp_path / "d", "test")


def test_one_split_of_the_sample_is_that_of_the_whole(sample):
    test = load_split("sample", "test")
    np.testing.assert_array_equal(test.images, sample.test_images)
    np.testing.assert_array_equal(test.labels, sample.test_labels)
    assert test.classes == sample.classes and test.source == sample.source
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_split("sample", "validation")


def test_directory_with_a_corrupt_file(tmp_path):
    _write_dir(tmp_path / "d")
    path = tmp_path / "d" / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(encode_idx(np.zeros(6, np.uint8)))[:-10])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz"):
        load_dataset(tmp_path / "d")


def test_dataset_rejects_inconsistent_arrays():
    images = np.zeros((3, 28, 28), np.uint8)
    good = np.array([0, 1, 2])
    with pytest.raises(DataError, match="outside"):
        Dataset("x", images, np.array([0, 1, 3]), images, good, ["a", "b", "c"])
    with pytest.raises(DataError, match="to match the images"):
        Dataset("x", images, good[:2], images, good, ["a", "b", "c"])
    with pytest.raises(DataError, match="uint8"):
        Dataset("x", images.astype(np.float32), good, images, good, ["a", "b", "c"])
    with pytest.raises(DataError, match="integers"):
        Dataset("x", images, good.astype(float), images, good, ["a", "b", "c"])


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("NPCNN_DATA", str(tmp_path / "data"))
    assert default_cache_dir() == tmp_path / "data"
    monkeypatch.delenv("NPCNN_DATA")
    assert default_cache_dir().name.lower() in {"npcnn", "cache"}
    # Without platformdirs: the XDG cache directory.
    monkeypatch.setitem(sys.modules, "platformdirs", None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "npcnn"
