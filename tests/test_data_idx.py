"""IDX reader and writer: exact byte layout, round trips and every error path."""

import gzip
import tracemalloc
import zlib

import numpy as np
import pytest

from npcnn.data import ChecksumError, DataError, FileSpec, read_idx, write_idx
from npcnn.data.checksums import verify_file
from npcnn.data.idx import MAX_DIMS, encode_idx


def test_header_layout_follows_the_idx_spec():
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    expected = bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, 0, 1, 2, 3, 4, 5])
    assert encode_idx(array) == expected


def test_multibyte_items_are_big_endian():
    data = encode_idx(np.array([1, -2], dtype=np.int32))
    assert data[:4] == bytes([0, 0, 0x0C, 1])
    assert data[8:] == (1).to_bytes(4, "big") + (-2).to_bytes(4, "big", signed=True)


@pytest.mark.parametrize("dtype", ["u1", "i1", "<i2", "<i4", "<f4", "<f8", ">i4", ">f8"])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_round_trip(tmp_path, dtype, name):
    rng = np.random.default_rng(0)
    array = rng.integers(-100, 100, (3, 4, 5)).astype(dtype)
    if np.dtype(dtype).kind == "f":
        array = array + rng.random((3, 4, 5)).astype(dtype)
    read = read_idx(write_idx(tmp_path / name, array))
    assert read.shape == array.shape
    assert read.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(read, array)


def test_gzip_is_detected_by_content_not_name(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "compressed.idx").write_bytes(gzip.compress(encode_idx(array)))
    (tmp_path / "plain.gz").write_bytes(encode_idx(array))
    np.testing.assert_array_equal(read_idx(tmp_path / "compressed.idx"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "plain.gz"), array)


def test_compress_flag_overrides_the_suffix(tmp_path):
    path = write_idx(tmp_path / "x.gz", np.zeros(3, np.uint8), compress=False)
    assert path.read_bytes()[:2] == b"\x00\x00"
    path = write_idx(tmp_path / "y.idx", np.zeros(3, np.uint8), compress=True)
    assert path.read_bytes()[:2] == b"\x1f\x8b"


def test_gzip_output_is_reproducible(tmp_path):
    array = np.arange(100, dtype=np.uint8)
    first = write_idx(tmp_path / "a.gz", array).read_bytes()
    second = write_idx(tmp_path / "b.gz", array).read_bytes()
    assert first == second
    assert not list(tmp_path.glob("*.tmp"))


def test_empty_dimension(tmp_path):
    array = np.zeros((0, 28, 28), np.uint8)
    assert read_idx(write_idx(tmp_path / "e.idx", array)).shape == (0, 28, 28)


def _write(tmp_path, data: bytes, name="bad-idx1-ubyte"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


GOOD = encode_idx(np.arange(12, dtype=np.uint8).reshape(3, 4))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "too short"),
        (b"\x12\x34" + GOOD[2:], "not an IDX file"),
        (GOOD[:2] + b"\x07" + GOOD[3:], "unknown IDX dtype code 0x07"),
        (GOOD[:3] + b"\x00" + GOOD[4:], "0 dimensions"),
        (GOOD[:9], "truncated IDX header"),
        (GOOD[:-1], "truncated IDX data.*3 x 4 uint8 items \\(12 bytes\\).*holds 11 bytes"),
        (GOOD + b"\x00\x00", "2 unexpected trailing bytes"),
        # The header claims 4 x 4 items but holds 3 x 4.
        (GOOD[:4] + (4).to_bytes(4, "big") + GOOD[8:], "truncated IDX data"),
        (GOOD[:3] + bytes([MAX_DIMS + 1]) + GOOD[4:], rf"{MAX_DIMS + 1} dimensions \(1 to"),
    ],
)
def test_malformed_files_raise_data_error_naming_file(tmp_path, data, message):
    path = _write(tmp_path, data)
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_truncated_gzip(tmp_path):
    compressed = gzip.compress(encode_idx(np.arange(5000, dtype=np.int32)))
    path = _write(tmp_path, compressed[: len(compressed) // 2], "cut.gz")
    with pytest.raises(DataError, match="corrupt or truncated gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_corrupt_gzip(tmp_path):
    compressed = bytearray(gzip.compress(encode_idx(np.arange(5000, dtype=np.int32))))
    compressed[-6] ^= 0xFF  # inside the CRC32/length trailer
    path = _write(tmp_path, bytes(compressed), "crc.gz")
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read file") as info:
        read_idx(tmp_path / "nope")
    assert "nope" in str(info.value)


@pytest.mark.parametrize("array", [np.zeros(3, np.int64), np.zeros(3, np.complex64), np.bool_(1)])
def test_writer_rejects_what_idx_cannot_hold(tmp_path, array):
    with pytest.raises(DataError):
        write_idx(tmp_path / "x", array)


def _header(code: int, shape: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(shape)]) + b"".join(s.to_bytes(4, "big") for s in shape)


# 2**32 - 1 squared overflows int64: the size must be computed exactly.
HUGE = _header(0x08, (2**32 - 1, 2**32 - 1, 1))


def test_absurd_sizes_in_the_header_are_reported_exactly(tmp_path):
    path = _write(tmp_path, HUGE + bytes(1000))
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert "declares 4,294,967,295 x 4,294,967,295 x 1 uint8 items (1.8e19 bytes)" in message
    assert "holds 1,000 bytes after it" in message and str(path) in message


def test_absurd_sizes_in_a_gzip_header_are_refused_before_inflating(tmp_path):
    path = _write(tmp_path, gzip.compress(HUGE + bytes(1000)), "huge.gz")
    with pytest.raises(DataError, match=r"\(1\.8e19 bytes\) but \d+ bytes of gzip data inflate"):
        read_idx(path)


def test_many_dimensions_are_refused(tmp_path):
    # As many dimensions as the format allows, each of size 1: NumPy cannot hold it.
    path = _write(tmp_path, _header(0x08, (1,) * 255) + b"\x07")
    with pytest.raises(DataError, match="255 dimensions"):
        read_idx(path)


def _gzip_with_zeros_after(data: bytes, zeros: int) -> bytes:
    """gzip of ``data`` followed by ``zeros`` zero bytes, compressed 1 MiB at a time."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [packer.compress(data)]
    chunk = bytes(1 << 20)
    parts += [packer.compress(chunk) for _ in range(zeros // len(chunk))]
    return b"".join([*parts, packer.flush()])


def test_gzip_with_more_data_than_declared_is_refused_without_inflating_it(tmp_path):
    inflated = 128 << 20
    path = _write(tmp_path, _gzip_with_zeros_after(GOOD, inflated), "bomb.gz")
    assert path.stat().st_size < inflated // 100
    tracemalloc.start()
    try:
        with pytest.raises(
            DataError, match="decompresses to more than the 3 x 4 uint8 items"
        ) as info:
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak:,} bytes: the stream was inflated beyond the header"
    assert str(path) in str(info.value) and "3 x 4 uint8 items (12 bytes)" in str(info.value)


def test_gzip_with_one_byte_more_than_declared(tmp_path):
    path = _write(tmp_path, gzip.compress(GOOD + b"\x00"), "one.gz")
    with pytest.raises(DataError, match="decompresses to more than the 3 x 4 uint8 items"):
        read_idx(path)


def test_download_verification_inflates_no_more_than_declared(tmp_path):
    path = _write(tmp_path, _gzip_with_zeros_after(GOOD, 16 << 20), "download.gz")
    spec = FileSpec("download.gz", sha256="0" * 64)
    with pytest.raises(ChecksumError, match="decompresses to more than the 3 x 4 uint8 items"):
        verify_file(path, spec)


def test_multi_member_gzip_is_read_whole(tmp_path):
    # `cat a.gz b.gz` is a valid gzip file; the header may end in another member.
    path = _write(tmp_path, gzip.compress(GOOD[:6]) + gzip.compress(GOOD[6:]), "cat.gz")
    np.testing.assert_array_equal(read_idx(path), np.arange(12).reshape(3, 4))


def test_garbage_after_the_gzip_stream(tmp_path):
    padded = _write(tmp_path, gzip.compress(GOOD) + bytes(512), "padded.gz")
    np.testing.assert_array_equal(read_idx(padded), np.arange(12).reshape(3, 4))
    path = _write(tmp_path, gzip.compress(GOOD) + b"junk", "junk.gz")
    with pytest.raises(DataError, match="4 bytes of garbage after the gzip data"):
        read_idx(path)
