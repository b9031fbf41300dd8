"""The thread helpers behind the layers: chunking, ordered results, errors, scratch buffers."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import npcnn
from npcnn import _parallel


@pytest.fixture
def two_threads():
    before = npcnn.get_num_threads()
    npcnn.set_num_threads(2)
    yield
    npcnn.set_num_threads(before)


def test_chunks_cover_the_range_once_in_order():
    for total, item in [(1000, 50_000), (7, 1 << 20), (128, 225_000), (3, 10)]:
        chunks = _parallel.chunk_ranges(total, item)
        assert [i for c in chunks for i in c] == list(range(total))


def test_small_work_stays_in_one_chunk():
    assert _parallel.chunk_ranges(10, 100) == [range(10)]


def test_parallel_map_returns_results_in_chunk_order_from_several_threads(two_threads):
    chunks = [range(i, i + 1) for i in range(64)]
    seen_threads = set()

    def fn(c: range) -> int:
        seen_threads.add(threading.get_ident())
        time.sleep(0.002)  # long enough for the second thread to wake and take chunks
        return c.start

    assert _parallel.parallel_map(fn, chunks) == list(range(64))
    assert len(seen_threads) == 2


def test_parallel_map_reraises_a_chunk_error(two_threads):
    def fn(c: range) -> int:
        if c.start == 5:
            raise ValueError("chunk 5 failed")
        return c.start

    with pytest.raises(ValueError, match="chunk 5"):
        _parallel.parallel_map(fn, [range(i, i + 1) for i in range(10)])


def test_helper_threads_keep_working_after_a_chunk_error(two_threads):
    def failing(c: range) -> int:
        raise RuntimeError("boom")

    for _ in range(3):
        with pytest.raises(RuntimeError, match="boom"):
            _parallel.parallel_map(failing, [range(i, i + 1) for i in range(4)])
    seen_threads = set()

    def slow(c: range) -> int:
        seen_threads.add(threading.get_ident())
        time.sleep(0.002)
        return c.start

    assert _parallel.parallel_map(slow, [range(i, i + 1) for i in range(32)]) == list(range(32))
    assert len(seen_threads) == 2


def test_elementwise_matches_numpy_and_keeps_memory_order(two_threads):
    x = np.random.default_rng(0).normal(size=(40, 28, 28, 16)).astype(np.float32)
    x_nchw_view = x.transpose(0, 3, 1, 2)  # channels-last memory behind an NCHW shape
    out = _parallel.elementwise(np.maximum, np.empty_like(x_nchw_view), x_nchw_view, 0)
    np.testing.assert_array_equal(out, np.maximum(x_nchw_view, 0))
    assert out.transpose(0, 2, 3, 1).flags.c_contiguous


def test_scratch_is_reused_per_thread_and_private_to_it():
    a = _parallel.scratch("test", (4, 5), np.float32)
    b = _parallel.scratch("test", (2, 3), np.float32)
    assert np.shares_memory(a, b)
    other: list[np.ndarray] = []
    t = threading.Thread(target=lambda: other.append(_parallel.scratch("test", (4, 5), np.float32)))
    t.start()
    t.join()
    assert not np.shares_memory(a, other[0])


def test_scratch_views_follow_a_grown_buffer():
    small = _parallel.scratch("grow", (4,), np.float32)
    assert _parallel.scratch("grow", (4,), np.float32) is small  # answered from its cache
    big = _parallel.scratch("grow", (100_000,), np.float32)  # a new, larger buffer
    again = _parallel.scratch("grow", (4,), np.float32)
    assert np.shares_memory(again, big) and not np.shares_memory(again, small)


def test_set_num_threads_rejects_zero():
    with pytest.raises(ValueError):
        npcnn.set_num_threads(0)


def test_single_threaded_blas_nests_and_restores_the_blas_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads() -> list[int]:
        pools = threadpoolctl.threadpool_info()
        return [pool["num_threads"] for pool in pools if pool["user_api"] == "blas"]

    before = blas_threads()
    if not before:
        pytest.skip("no BLAS library that threadpoolctl can control")
    with npcnn.single_threaded_blas():
        assert set(blas_threads()) == {1}
        with npcnn.single_threaded_blas():
            assert set(blas_threads()) == {1}
        assert set(blas_threads()) == {1}  # leaving the inner block keeps the outer limit
    assert blas_threads() == before
