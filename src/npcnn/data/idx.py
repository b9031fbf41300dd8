"""Read and write IDX files, the format of MNIST and its drop-in relatives.

Layout (all integers big-endian)::

    bytes 0-1   zero
    byte  2     dtype code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64)
    byte  3     number of dimensions d
    4 * d       the size of each dimension (uint32)
    ...         prod(sizes) items, row-major, big-endian

Files may be gzip-compressed; compression is detected from the gzip magic
bytes, never from the file name, because renamed or decompressed copies
are common.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from npcnn.data.errors import DataError
from npcnn.files import atomic_write_bytes

GZIP_MAGIC = b"\x1f\x8b"

# IDX dtype code -> big-endian NumPy dtype.
_CODE_TO_DTYPE: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_KIND_TO_CODE = {(dt.kind, dt.itemsize): code for code, dt in _CODE_TO_DTYPE.items()}


def gunzip_if_needed(raw: bytes, source: str = "<bytes>") -> bytes:
    """Return ``raw`` decompressed if it starts with the gzip magic, else unchanged."""
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        # BadGzipFile is an OSError; a cut-off stream raises EOFError.
        raise DataError(f"{source}: corrupt or truncated gzip data ({exc})") from exc


def read_raw(path: str | os.PathLike[str]) -> bytes:
    """Return the bytes of ``path`` as stored, with a :class:`DataError` if unreadable."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from exc


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """Return the bytes of ``path``, decompressed if it is gzip."""
    return gunzip_if_needed(read_raw(path), str(path))


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse the (uncompressed) bytes of an IDX file.

    Returns an array in native byte order with the shape stored in the
    header. ``source`` names the file in error messages.
    """
    if len(data) < 4:
        raise DataError(f"{source}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{source}: not an IDX file (magic bytes {data[:4].hex()}, "
            "expected 0000 followed by a dtype code and a dimension count)"
        )
    code, ndim = data[2], data[3]
    if code not in _CODE_TO_DTYPE:
        known = ", ".join(f"0x{c:02X}" for c in _CODE_TO_DTYPE)
        raise DataError(f"{source}: unknown IDX dtype code 0x{code:02X} (known: {known})")
    if ndim == 0:
        raise DataError(f"{source}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(
            f"{source}: truncated IDX header ({len(data)} bytes, need {header_len} "
            f"for {ndim} dimensions)"
        )
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _CODE_TO_DTYPE[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual < expected:
        raise DataError(
            f"{source}: truncated IDX data (shape {shape} needs {expected} bytes of "
            f"{dtype.name}, found {actual})"
        )
    if actual > expected:
        raise DataError(
            f"{source}: {actual - expected} unexpected trailing bytes after IDX data "
            f"of shape {shape}"
        )
    native = dtype.newbyteorder("=")
    if expected == 0:
        return np.zeros(shape, dtype=native)
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    # Copy into native byte order: the caller owns a writable array.
    return array.astype(native, copy=True)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a NumPy array.

    Raises :class:`DataError` naming the file when the magic number, dtype
    code, dimensions or size are wrong, or the gzip stream is corrupt.
    """
    return parse_idx(read_bytes(path), source=str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """Return the uncompressed IDX bytes of ``array``."""
    array = np.asarray(array)
    key = (array.dtype.kind, array.dtype.itemsize)
    if key not in _KIND_TO_CODE:
        raise DataError(
            f"cannot store dtype {array.dtype} in IDX (supported: uint8, int8, int16, "
            "int32, float32, float64)"
        )
    if not 1 <= array.ndim <= 255:
        raise DataError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    code = _KIND_TO_CODE[key]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    body = np.ascontiguousarray(array, dtype=_CODE_TO_DTYPE[code]).tobytes()
    return header + body


def write_idx(
    path: str | os.PathLike[str], array: np.ndarray, *, compress: bool | None = None
) -> Path:
    """Write ``array`` as an IDX file; gzip it if ``compress`` (default: name ends in .gz).

    The gzip header carries no timestamp, so equal arrays give equal files.
    The file is written to a temporary name and renamed, so a crash never
    leaves a half-written file behind.
    """
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    data = encode_idx(array)
    if compress:
        data = gzip.compress(data, mtime=0)
    return atomic_write_bytes(path, data)
