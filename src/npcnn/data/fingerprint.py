"""A short digest of a data set's contents: does a path still hold the data a run used?

A run records its data by name or directory; the files at that directory can
be replaced by others of the same sizes. The digest covers what training and
testing see (after the run's limits): every array's dtype, shape and bytes,
and the class names.
"""

from __future__ import annotations

import hashlib

import numpy as np

from npcnn.data.datasets import Dataset


def fingerprint(data: Dataset) -> str:
    """blake2b (16 bytes, 32 hex digits) of the four arrays and the class names."""
    digest = hashlib.blake2b(digest_size=16)
    for array in (data.train_images, data.train_labels, data.test_images, data.test_labels):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    digest.update("\n".join(data.classes).encode("utf-8", "replace"))
    return digest.hexdigest()
