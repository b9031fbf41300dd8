"""Read and write IDX files, the format of MNIST and its drop-in relatives.

Layout (all integers big-endian)::

    bytes 0-1   zero
    byte  2     dtype code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64)
    byte  3     number of dimensions d (1 to :data:`MAX_DIMS`)
    4 * d       the size of each dimension (uint32)
    ...         prod(sizes) items, row-major, big-endian

Files may be gzip-compressed; compression is detected from the gzip magic
bytes, never from the file name, because renamed or decompressed copies
are common. A gzip file is never decompressed beyond what its IDX header
declares (plus one byte, to notice excess), so a small file that inflates
to gigabytes costs neither the memory nor the time.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npcnn.data.errors import DataError
from npcnn.files import atomic_write_bytes

GZIP_MAGIC = b"\x1f\x8b"
#: More dimensions than any image data set needs, and within NumPy's limit.
MAX_DIMS = 32
#: Deflate codes at most 258 bytes per match in about 2 bits, so no gzip
#: stream inflates more than about 1032-fold: a header declaring more than
#: that is wrong, whatever the rest of the stream holds.
MAX_DEFLATE_RATIO = 1032
_GZIP_WBITS = 16 + zlib.MAX_WBITS

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


def _amount(n: int) -> str:
    """``n`` with thousands separators, or as 1.8e19 when it is too long to read."""
    return f"{n:,}" if n < 10**15 else f"{n:.1e}".replace("e+", "e")


@dataclass(frozen=True)
class IdxHeader:
    """What the first ``4 + 4 * ndim`` bytes of an IDX file declare.

    ``dtype`` is the big-endian item type, ``shape`` the sizes (each below
    2**32). Sizes are Python ints, so ``nbytes`` is exact for any header.
    """

    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def length(self) -> int:
        """Bytes of the header itself."""
        return 4 + 4 * len(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of data the header declares: prod(shape) * itemsize."""
        return math.prod(self.shape) * self.dtype.itemsize

    def describe(self) -> str:
        """E.g. ``60,000 x 28 x 28 uint8 items (47,040,000 bytes)``."""
        dims = " x ".join(f"{s:,}" for s in self.shape)
        return f"{dims} {self.dtype.name} items ({_amount(self.nbytes)} bytes)"


def parse_header(data: bytes, source: str = "<bytes>") -> IdxHeader:
    """The header at the start of ``data`` (the data after it is not looked at).

    Raises :class:`DataError` naming ``source`` for a wrong magic number, an
    unknown dtype code, 0 or more than :data:`MAX_DIMS` dimensions, or a
    header cut short.
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
    if not 1 <= ndim <= MAX_DIMS:
        raise DataError(
            f"{source}: IDX header declares {ndim} dimensions (1 to {MAX_DIMS} allowed)"
        )
    if len(data) < 4 + 4 * ndim:
        raise DataError(
            f"{source}: truncated IDX header ({len(data)} bytes, need {4 + 4 * ndim} "
            f"for {ndim} dimensions)"
        )
    shape = tuple(int.from_bytes(data[i : i + 4], "big") for i in range(4, 4 + 4 * ndim, 4))
    return IdxHeader(_CODE_TO_DTYPE[code], shape)


def _check_length(header: IdxHeader, actual: int, source: str) -> None:
    """Raise unless exactly ``header.nbytes`` bytes of data follow the header."""
    expected = header.nbytes
    if actual < expected:
        raise DataError(
            f"{source}: truncated IDX data or a wrong header: the header declares "
            f"{header.describe()} but the file holds {actual:,} bytes after it"
        )
    if actual > expected:
        raise DataError(
            f"{source}: {actual - expected:,} unexpected trailing bytes: the header declares "
            f"{header.describe()} but the file holds {actual:,} bytes after it"
        )


class _GzipReader:
    """Decompress a gzip stream (of one or more members) a bounded amount at a time."""

    def __init__(self, raw: bytes, source: str) -> None:
        self._source = source
        self._pending = raw
        self._inflater = zlib.decompressobj(_GZIP_WBITS)

    def read(self, n: int) -> bytes:
        """The next ``n`` decompressed bytes, fewer only where the stream ends.

        Raises :class:`DataError` for a corrupt stream, one cut short, or a
        wrong CRC or length in the trailer of a member that was read to its end.
        """
        chunks: list[bytes] = []
        while n > 0 and (chunk := self._step(n)) is not None:
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _step(self, limit: int) -> bytes | None:
        """At most ``limit`` more bytes (possibly none), or None at the end of the data."""
        inflater = self._inflater
        if inflater.eof:
            # Zero padding after a member is allowed, as gzip(1) and Python's gzip allow it.
            rest = inflater.unused_data.lstrip(b"\0")
            if not rest:
                return None
            if rest[:2] != GZIP_MAGIC:
                raise self._corrupt(f"{len(rest):,} bytes of garbage after the gzip data")
            # `cat a.gz b.gz` makes a valid gzip file of two members.
            self._inflater, self._pending = zlib.decompressobj(_GZIP_WBITS), rest
            return b""
        before = len(self._pending)
        try:
            out = inflater.decompress(self._pending, limit)
        except zlib.error as exc:
            raise self._corrupt(str(exc)) from exc
        self._pending = inflater.unconsumed_tail
        if not out and not inflater.eof and len(self._pending) == before:
            raise self._corrupt("the compressed stream ends early")
        return out

    def _corrupt(self, why: str) -> DataError:
        return DataError(f"{self._source}: corrupt or truncated gzip data ({why})")


def inflate_idx(raw: bytes, source: str = "<bytes>") -> bytes:
    """Decompress the gzip bytes ``raw`` of an IDX file, bounded by its header.

    Reads the header from the first decompressed bytes, then at most the
    data it declares plus one byte. Raises :class:`DataError` naming
    ``source`` when the header declares more than ``raw`` could possibly
    inflate to (:data:`MAX_DEFLATE_RATIO`), when the stream holds more than
    declared (without decompressing the rest), or when it is corrupt. A
    stream shorter than declared is returned as is (:func:`parse_idx` says
    what is missing).
    """
    reader = _GzipReader(raw, source)
    head = reader.read(4)
    if len(head) == 4:
        head += reader.read(4 * head[3])
    header = parse_header(head, source)
    most = MAX_DEFLATE_RATIO * len(raw)
    if header.length + header.nbytes > most:
        raise DataError(
            f"{source}: wrong IDX header: it declares {header.describe()} but "
            f"{len(raw):,} bytes of gzip data inflate to at most {_amount(most)} bytes"
        )
    body = reader.read(header.nbytes)
    if len(body) == header.nbytes and reader.read(1):
        raise DataError(
            f"{source}: decompresses to more than the {header.describe()} its IDX "
            "header declares; the rest was not decompressed"
        )
    return head + body


def decompress_idx(raw: bytes, source: str = "<bytes>") -> bytes:
    """``raw`` inflated with :func:`inflate_idx` if it starts with the gzip magic, else as is."""
    return inflate_idx(raw, source) if raw[:2] == GZIP_MAGIC else raw


def read_raw(path: str | os.PathLike[str]) -> bytes:
    """Return the bytes of ``path`` as stored, with a :class:`DataError` if unreadable."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from exc


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """Return the IDX bytes of ``path``, decompressed (bounded) if it is gzip."""
    return decompress_idx(read_raw(path), str(path))


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse the (uncompressed) bytes of an IDX file.

    Returns an array in native byte order with the shape stored in the
    header. Raises :class:`DataError` naming ``source`` for a bad header
    (see :func:`parse_header`) or data shorter or longer than declared.
    """
    header = parse_header(data, source)
    _check_length(header, len(data) - header.length, source)
    native = header.dtype.newbyteorder("=")
    if header.nbytes == 0:
        return np.zeros(header.shape, dtype=native)
    array = np.frombuffer(data, dtype=header.dtype, offset=header.length).reshape(header.shape)
    # Copy into native byte order: the caller owns a writable array.
    return array.astype(native, copy=True)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a NumPy array.

    Raises :class:`DataError` naming the file when the magic number, dtype
    code, dimensions or size are wrong, or the gzip stream is corrupt or
    inflates to more than the header declares.
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
    if not 1 <= array.ndim <= MAX_DIMS:
        raise DataError(f"IDX needs 1 to {MAX_DIMS} dimensions, got {array.ndim}")
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
