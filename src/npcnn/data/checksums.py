"""Which checksum a data file must match, and checking it.

Two kinds of published checksum exist for the MNIST family:

* the md5 of the ``.gz`` file as the authors published it, and
* the sha256 of the decompressed IDX bytes.

The second survives recompression (Debian's Fashion-MNIST package, for one,
ships recompressed files whose md5 differs), so it is preferred whenever it
is known; the md5 of the archive is the fallback.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from npcnn.data.errors import ChecksumError, DataError
from npcnn.data.idx import GZIP_MAGIC, decompress_idx, read_raw


@dataclass(frozen=True)
class FileSpec:
    """One file of a data set.

    ``name`` is the file name on the mirrors (e.g. ``train-images-idx3-ubyte.gz``);
    ``md5`` the published md5 of that file; ``sha256`` the sha256 of its
    decompressed bytes. Either may be ``None`` when unknown.
    """

    name: str
    md5: str | None = None
    sha256: str | None = None

    @property
    def stem(self) -> str:
        """The name without a trailing ``.gz`` (the name of a decompressed copy)."""
        return self.name.removesuffix(".gz")


def check_digests(
    raw: bytes,
    data: bytes,
    spec: FileSpec,
    label: str,
    *,
    allow_decompressed: bool = True,
) -> bool:
    """Check a file's stored bytes ``raw`` and decompressed bytes ``data``.

    Returns True when a checksum was checked, False when none applies: no
    checksum is known, or only the md5 of the archive is known and the file
    is a decompressed copy (accepted for files placed by hand, refused for
    downloads with ``allow_decompressed=False``). Raises
    :class:`ChecksumError` naming ``label``, the expected and the actual
    checksum on a mismatch.
    """
    if spec.sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != spec.sha256:
            raise ChecksumError(
                f"{label}: checksum mismatch for {spec.name}: expected sha256 of the "
                f"decompressed bytes {spec.sha256}, got {actual}"
            )
        return True
    if spec.md5 is not None:
        if raw[:2] != GZIP_MAGIC and allow_decompressed:
            return False
        actual = hashlib.md5(raw).hexdigest()
        if actual != spec.md5:
            raise ChecksumError(
                f"{label}: checksum mismatch for {spec.name}: expected md5 {spec.md5}, got {actual}"
            )
        return True
    return False


def verify_file(
    path: str | os.PathLike[str],
    spec: FileSpec,
    *,
    label: str | None = None,
    allow_decompressed: bool = True,
) -> bool:
    """Check the file at ``path`` against ``spec``; see :func:`check_digests`.

    A gzip stream that cannot be decompressed counts as a mismatch.
    """
    label = str(path) if label is None else label
    raw = read_raw(path)
    try:
        data = decompress_idx(raw, label) if spec.sha256 is not None else raw
    except DataError as exc:
        raise ChecksumError(str(exc)) from exc
    return check_digests(raw, data, spec, label, allow_decompressed=allow_decompressed)
