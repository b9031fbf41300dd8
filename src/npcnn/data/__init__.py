"""Data sets, IDX files and mini-batches.

>>> from npcnn.data import load_dataset, load_split, BatchIterator
>>> ds = load_dataset("sample")            # ships with npcnn, no network
>>> test = load_split("sample", "test")    # one split: only its two files are read
>>> batches = BatchIterator(ds.train_images, ds.train_labels, 64, rng=0)
>>> x, y = next(iter(batches))             # x (64, 1, 28, 28) float32 in [0, 1]
"""

from npcnn.data.augment import random_crop, random_flip, random_flip_and_crop
from npcnn.data.batches import BatchIterator
from npcnn.data.checksums import FileSpec
from npcnn.data.datasets import DATASETS, SPLITS, Dataset, DatasetSpec, DatasetSplit, dataset_spec
from npcnn.data.errors import ChecksumError, DataError, DownloadError, LabelError
from npcnn.data.idx import read_idx, write_idx
from npcnn.data.load import (
    default_cache_dir,
    directory_classes,
    load_dataset,
    load_directory,
    load_split,
)

__all__ = [
    "DATASETS",
    "SPLITS",
    "BatchIterator",
    "ChecksumError",
    "DataError",
    "Dataset",
    "DatasetSpec",
    "DatasetSplit",
    "DownloadError",
    "FileSpec",
    "LabelError",
    "dataset_spec",
    "default_cache_dir",
    "directory_classes",
    "load_dataset",
    "load_directory",
    "load_split",
    "random_crop",
    "random_flip",
    "random_flip_and_crop",
    "read_idx",
    "write_idx",
]
