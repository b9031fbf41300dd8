"""The thread helpers behind the layers: chunking, ordered results, errors, scratch buffers."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import npcnn
from npcnn.runtime import memory
from npcnn.runtime import threads as _threads


@pytest.fixture
def two_threads():
    before = npcnn.get_num_threads()
    npcnn.set_num_threads(2)
    yield
    npcnn.set_num_threads(before)


def test_chunks_cover_the_range_once_in_order():
    for total, item in [(1000, 50_000), (7, 1 << 20), (128, 225_000), (3, 10)]:
        chunks = _threads.chunk_ranges(total, item)
        assert [i for c in chunks for i in c] == list(range(total))


def test_chunks_share_the_work_evenly_between_threads(two_threads):
    # 2 MB chunks of 112.5 kB images would be 18 images; 128 = 7 * 18 + 2 would
    # leave one thread 72 images and the other 56.
    chunks = _threads.chunk_ranges(128, 112_500)
    assert len(chunks) % 2 == 0
    assert {len(c) for c in chunks} <= {16, 17} and max(len(c) for c in chunks) <= 18
    assert [i for c in chunks for i in c] == list(range(128))
    assert _threads.chunk_ranges(128, 10_000, max_items=8) == [
        range(i, i + 8) for i in range(0, 128, 8)
    ]
    assert len(_threads.chunk_ranges(3, 4 << 20)) == 3  # never more chunks than items


def test_small_work_stays_in_one_chunk():
    assert _threads.chunk_ranges(10, 100) == [range(10)]


def test_parallel_map_returns_results_in_chunk_order_from_several_threads(two_threads):
    chunks = [range(i, i + 1) for i in range(64)]
    seen_threads = set()

    def fn(c: range) -> int:
        seen_threads.add(threading.get_ident())
        time.sleep(0.002)  # long enough for the second thread to wake and take chunks
        return c.start

    assert _threads.parallel_map(fn, chunks) == list(range(64))
    assert len(seen_threads) == 2


def test_parallel_map_reraises_a_chunk_error(two_threads):
    def fn(c: range) -> int:
        if c.start == 5:
            raise ValueError("chunk 5 failed")
        return c.start

    with pytest.raises(ValueError, match="chunk 5"):
        _threads.parallel_map(fn, [range(i, i + 1) for i in range(10)])


def test_helper_threads_keep_working_after_a_chunk_error(two_threads):
    def failing(c: range) -> int:
        raise RuntimeError("boom")

    for _ in range(3):
        with pytest.raises(RuntimeError, match="boom"):
            _threads.parallel_map(failing, [range(i, i + 1) for i in range(4)])
    seen_threads = set()

    def slow(c: range) -> int:
        seen_threads.add(threading.get_ident())
        time.sleep(0.002)
        return c.start

    assert _threads.parallel_map(slow, [range(i, i + 1) for i in range(32)]) == list(range(32))
    assert len(seen_threads) == 2


def test_elementwise_matches_numpy_and_keeps_memory_order(two_threads):
    x = np.random.default_rng(0).normal(size=(40, 28, 28, 16)).astype(np.float32)
    x_nchw_view = x.transpose(0, 3, 1, 2)  # channels-last memory behind an NCHW shape
    out = _threads.elementwise(np.maximum, np.empty_like(x_nchw_view), x_nchw_view, 0)
    np.testing.assert_array_equal(out, np.maximum(x_nchw_view, 0))
    assert out.transpose(0, 2, 3, 1).flags.c_contiguous


def test_scratch_is_reused_per_thread_and_private_to_it():
    a = memory.scratch("test", (4, 5), np.float32)
    b = memory.scratch("test", (2, 3), np.float32)
    assert np.shares_memory(a, b)
    other: list[np.ndarray] = []
    t = threading.Thread(target=lambda: other.append(memory.scratch("test", (4, 5), np.float32)))
    t.start()
    t.join()
    assert not np.shares_memory(a, other[0])


def test_scratch_views_follow_a_grown_buffer():
    small = memory.scratch("grow", (4,), np.float32)
    assert memory.scratch("grow", (4,), np.float32) is small  # answered from its cache
    big = memory.scratch("grow", (100_000,), np.float32)  # a new, larger buffer
    again = memory.scratch("grow", (4,), np.float32)
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


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_layers_add_up_every_chunk_when_a_thread_runs_several(threads, rng):
    """A big batch is split into more chunks than threads; each chunk's share of a
    weight gradient must be added once, whichever thread computed it."""
    before = npcnn.get_num_threads()
    npcnn.set_num_threads(threads)
    try:
        x = rng.standard_normal((600, 2, 30, 30)).astype(np.float32)  # 7 MB: several chunks
        conv = npcnn.nn.Conv2D(2, 3, 3, padding=1, bias=False, rng=0)
        dense = npcnn.nn.Dense(3 * 30 * 30, 4, rng=0)
        h = conv.forward(x, training=True)
        flat = h.reshape(len(x), -1)
        assert len(_threads.chunk_ranges(len(flat), flat[0].nbytes)) > threads
        out = dense.forward(flat, training=True)
        dy = rng.standard_normal(out.shape).astype(np.float32)
        dh = dense.backward(dy).reshape(h.shape)
        conv.backward(dh)
        flat64, dy64 = flat.astype(np.float64), dy.astype(np.float64)
        np.testing.assert_allclose(dense.weight.grad, dy64.T @ flat64, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(dense.bias.grad, dy64.sum(axis=0), rtol=1e-4, atol=1e-3)
        # Conv2D's weight gradient: sum over images and pixels of dh times the shifted input.
        xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
        dh64 = dh.astype(np.float64)
        expected = np.empty(conv.weight.shape)
        for i in range(3):
            for j in range(3):
                expected[:, :, i, j] = np.einsum(
                    "nohw,nchw->oc", dh64, xp[:, :, i : i + 30, j : j + 30]
                )
        np.testing.assert_allclose(conv.weight.grad, expected, rtol=1e-4, atol=1e-3)
    finally:
        npcnn.set_num_threads(before)
