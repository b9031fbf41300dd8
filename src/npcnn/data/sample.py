"""The small MNIST sample that ships inside the package.

It is a class-balanced subset of the official MNIST *test* split (t10k),
cut into disjoint "train" and "test" parts by ``scripts/make_sample.py``
with a fixed seed. The ``.npz`` holds the images, the labels, the t10k
indices each example came from and a JSON provenance record (source files,
their sha256, seed, licence and credit), all readable with
``allow_pickle=False``.

MNIST: Y. LeCun, C. Cortes, C. J. C. Burges, licensed CC BY-SA 3.0; the
sample is a subset of it and is shared under the same licence.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np

from npcnn.data.errors import DataError

ARRAY_KEYS = (
    "train_images",
    "train_labels",
    "test_images",
    "test_labels",
    "train_indices",
    "test_indices",
)
PROVENANCE_KEY = "provenance"
# A fixed timestamp keeps the archive byte-for-byte reproducible.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def balanced_split(
    labels: np.ndarray, n_train: int, n_test: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pick disjoint index sets with ``n_train``/``n_test`` examples per class.

    For each class the indices of its examples are permuted by a
    ``default_rng(seed)`` Generator (classes in increasing order) and the first
    ``n_train`` go to train, the next ``n_test`` to test. Both results are
    sorted, so the classes stay interleaved as in the source.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if idx.size < n_train + n_test:
            raise DataError(f"class {c} has {idx.size} examples, need {n_train + n_test}")
        train.append(idx[:n_train])
        test.append(idx[n_train : n_train + n_test])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def save_sample(
    path: str | os.PathLike[str], arrays: dict[str, np.ndarray], provenance: dict
) -> Path:
    """Write ``arrays`` and the JSON ``provenance`` to a compressed ``.npz``.

    Unlike ``np.savez_compressed`` the zip entries carry a fixed date, so the
    same input always gives the same bytes.
    """
    path = Path(path)
    entries = {**arrays, PROVENANCE_KEY: np.array(json.dumps(provenance, sort_keys=True))}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key, value in entries.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buffer.getvalue(), compresslevel=9)
    return path


def read_packaged(filename: str) -> tuple[dict[str, np.ndarray], dict]:
    """Read ``npcnn/data/sample/<filename>``: (arrays, provenance dict)."""
    resource = resources.files("npcnn.data").joinpath("sample", filename)
    try:
        with resource.open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"packaged data set {filename}: cannot read ({exc})") from exc
    missing = [key for key in ARRAY_KEYS if key not in arrays]
    if missing:
        raise DataError(f"packaged data set {filename}: missing arrays {missing}")
    provenance = json.loads(str(arrays.pop(PROVENANCE_KEY, "{}")))
    return arrays, provenance
