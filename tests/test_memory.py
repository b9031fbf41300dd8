"""The cache of big arrays that layers reuse between training steps (npcnn/runtime/memory.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import npcnn
from npcnn.runtime import memory as _memory

BIG = (512, 1024)  # 2 MB of float32: above MIN_CACHED_BYTES


def address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


@pytest.fixture(autouse=True)
def empty_cache():
    npcnn.empty_cache()
    yield
    npcnn.empty_cache()


def test_cache_is_active_here():
    # CPython counts a view's reference to its base: the cache must not have
    # switched itself off, or the tests below would test nothing.
    assert _memory._FREE_REFERENCES is not None


def test_a_freed_array_is_reused():
    a = _memory.empty(BIG, np.float32)
    where = address(a)
    del a
    assert address(_memory.empty(BIG, np.float32)) == where


def test_memory_in_use_is_never_handed_out_again():
    a = _memory.empty(BIG, np.float32)
    a.fill(1)
    view = a[::2]  # a view alone keeps the block in use
    del a
    b = _memory.empty(BIG, np.float32)
    b.fill(2)
    assert not np.shares_memory(view, b)
    assert np.all(view == 1)


def test_arrays_alive_at_once_get_distinct_memory():
    arrays = [_memory.empty(BIG, np.float32) for _ in range(4)]
    for i, a in enumerate(arrays):
        a.fill(i)
    assert [float(a[0, 0]) for a in arrays] == [0.0, 1.0, 2.0, 3.0]


def test_one_block_serves_any_dtype_and_shape_of_its_size():
    a = _memory.empty((2, *BIG), np.float16)
    where = address(a)
    del a
    b = _memory.empty(BIG, np.float32)
    assert address(b) == where and b.shape == BIG and b.dtype == np.float32


def test_small_arrays_bypass_the_cache():
    before = _memory.cached_bytes()
    a = _memory.empty((10, 10), np.float32)
    assert a.flags.owndata and _memory.cached_bytes() == before


def test_zeros_are_zero_even_in_reused_memory():
    a = _memory.empty(BIG, np.float32)
    a.fill(7)
    del a
    assert not np.any(_memory.zeros(BIG, np.float32))


def test_empty_like_keeps_channels_last_memory():
    x = np.empty((64, 32, 32, 16), np.float32).transpose(0, 3, 1, 2)  # NCHW view of NHWC
    y = _memory.empty_like(x)
    assert y.shape == x.shape and y.strides == x.strides
    assert _memory.empty_like(np.empty((4096, 256), np.float32), dtype=bool).dtype == bool


def test_empty_cache_hands_back_free_blocks_only():
    kept = _memory.empty(BIG, np.float32)
    _memory.empty(BIG, np.float32)  # freed at once
    assert _memory.cached_bytes() == 2 * kept.nbytes
    npcnn.empty_cache()
    assert _memory.cached_bytes() == kept.nbytes


def test_the_limit_evicts_free_blocks_then_falls_back_to_numpy(monkeypatch):
    monkeypatch.setattr(_memory, "CACHE_LIMIT_BYTES", 3 * 4 * BIG[0] * BIG[1])
    kept = [_memory.empty(BIG, np.float32) for _ in range(2)]
    _memory.empty(BIG, np.float32)  # cached, then free
    other = _memory.empty((2, *BIG), np.float32)  # over the limit: the free block goes
    assert _memory.cached_bytes() <= _memory.CACHE_LIMIT_BYTES
    assert other.flags.owndata  # still over: plain NumPy memory
    assert len(kept) == 2


def test_threads_never_share_a_block():
    seen: list[int] = []
    arrays: list[np.ndarray] = []
    lock = threading.Lock()

    def grab() -> None:
        for _ in range(20):
            a = _memory.empty(BIG, np.float32)
            with lock:
                arrays.append(a)  # all stay alive: every address must differ
                seen.append(address(a))

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == len(seen) == 80


def test_outputs_a_caller_keeps_survive_later_steps():
    from npcnn import nn

    model = nn.Sequential(nn.Conv2D(1, 16, 3, padding=1, rng=0), nn.BatchNorm2D(16), nn.ReLU())
    rng = np.random.default_rng(0)
    first = model.forward(rng.random((64, 1, 28, 28), dtype=np.float32), training=True)
    assert first.nbytes >= _memory.MIN_CACHED_BYTES  # the output is cached memory
    expected = first.copy()
    for _ in range(3):
        y = model.forward(rng.random((64, 1, 28, 28), dtype=np.float32), training=True)
        model.backward(np.ones_like(y))
    np.testing.assert_array_equal(first, expected)
