"""Every kind of buffer the fast kernels use, and how long each one lives.

1. Step arrays: `empty`, `zeros`, `empty_like`.
   Outputs, gradients and what a backward needs. They live as long as any
   array refers to them, like any NumPy array; what changes is where their
   memory goes afterwards. Each training step allocates the same few dozen
   arrays of a few MB and frees them again, and the C library hands such
   blocks back to the operating system, so that the next step pays a page
   fault per 4 kB to get them back. So big arrays come from a cache of blocks
   that outlives the step, as PyTorch's GPU allocator does: a block is free
   again when no array uses it any more, and serves the next request of its
   size. `empty_cache()` hands the free blocks back to the system.

   A block is free when its reference count is the cache's own: every NumPy
   view of a block holds a reference to it. The count a free block has is
   measured at import; if views turn out not to add to it, the cache switches
   itself off and every call falls back to NumPy's allocator.

   A kernel that hands a step array out must not write to it again: the
   caller may keep it (a model's output) for as long as it likes.

2. Scratch: `scratch(name, shape, dtype)`.
   Temporaries of one chunk of a parallel loop (an im2col matrix, a centred
   block), private to the calling thread and reused by it from chunk to
   chunk and step to step. Valid until the same thread asks for the same
   name again: a kernel uses its scratch within the chunk and never returns
   it to its caller.

3. Read-only zeros: `read_only_zeros(like)`.
   Arrays of zeros shared by every caller and never written, for NumPy loops
   that run faster on two arrays than on an array and a scalar. Untouched,
   their pages are the system's shared zero page: they take no memory. Kept
   for the life of the process (the last 16 layouts asked for).
"""

from __future__ import annotations

import itertools
import math
import sys
import threading

import numpy as np

# --- 1. step arrays -----------------------------------------------------------------

# Smaller arrays come and go through the C library's free lists without page faults.
MIN_CACHED_BYTES = 256 << 10
# Free blocks are handed back, least recently used first, beyond this much cached memory.
CACHE_LIMIT_BYTES = 1 << 30


class _Block:
    __slots__ = ("last_use", "memory")

    def __init__(self, nbytes: int) -> None:
        self.memory = np.empty(nbytes, dtype=np.uint8)
        self.last_use = 0


_blocks: dict[int, list[_Block]] = {}  # by size in bytes
_cached_bytes = 0
_clock = itertools.count(1)
_lock = threading.Lock()


def _references(block: _Block) -> int:
    return sys.getrefcount(block.memory)


def _measure_free_references() -> int | None:
    """The reference count of an unused block, or None if views do not show in it."""
    block = _Block(16)
    free = _references(block)
    view = block.memory.view(np.float32)
    in_use = _references(block)
    del view
    return free if in_use > free == _references(block) else None


_FREE_REFERENCES = _measure_free_references()


def _is_free(block: _Block) -> bool:
    return _references(block) == _FREE_REFERENCES


def _take(shape: tuple[int, ...], dtype: np.dtype, nbytes: int) -> np.ndarray | None:
    """An array in a free cached block of `nbytes`, or in a new one; None past the limit.

    The view is made under the lock: from then on it marks the block as used.
    """
    global _cached_bytes
    with _lock:
        same_size = _blocks.setdefault(nbytes, [])
        block = next((block for block in same_size if _is_free(block)), None)
        if block is None:
            if _cached_bytes + nbytes > CACHE_LIMIT_BYTES:
                _release(_cached_bytes + nbytes - CACHE_LIMIT_BYTES)
            if _cached_bytes + nbytes > CACHE_LIMIT_BYTES:
                return None
            block = _Block(nbytes)
            same_size.append(block)
            _cached_bytes += nbytes
        block.last_use = next(_clock)
        return block.memory.view(dtype).reshape(shape)


def _release(at_least: float) -> None:
    """Drop free blocks, least recently used first, until `at_least` bytes are gone."""
    global _cached_bytes
    free = sorted(
        (block for blocks in _blocks.values() for block in blocks if _is_free(block)),
        key=lambda block: block.last_use,
    )
    for block in free:
        if at_least <= 0:
            break
        _blocks[block.memory.nbytes].remove(block)
        _cached_bytes -= block.memory.nbytes
        at_least -= block.memory.nbytes


def empty(shape: tuple[int, ...], dtype: np.typing.DTypeLike) -> np.ndarray:
    """np.empty(shape, dtype), in cached memory when the array is big (a step array)."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if _FREE_REFERENCES is None or nbytes < MIN_CACHED_BYTES:
        return np.empty(shape, dtype=dtype)
    out = _take(shape, dtype, nbytes)
    return np.empty(shape, dtype=dtype) if out is None else out


def zeros(shape: tuple[int, ...], dtype: np.typing.DTypeLike) -> np.ndarray:
    """np.zeros(shape, dtype), in cached memory when the array is big (a step array)."""
    out = empty(shape, dtype)
    out.fill(0)
    return out


def empty_like(x: np.ndarray, dtype: np.typing.DTypeLike | None = None) -> np.ndarray:
    """np.empty_like(x, dtype) as a step array: x's shape, and x's memory order when x's
    elements fill a block without gaps in some order of its axes (C order, or an
    NCHW-shaped view of NHWC memory); otherwise NumPy's own empty_like."""
    dtype = x.dtype if dtype is None else np.dtype(dtype)
    if x.flags.c_contiguous:
        return empty(x.shape, dtype)
    # The axes from the largest stride to the smallest: C order in memory.
    order = sorted(range(x.ndim), key=lambda axis: -x.strides[axis])
    if not x.transpose(order).flags.c_contiguous:
        return np.empty_like(x, dtype=dtype)
    block = empty(tuple(x.shape[axis] for axis in order), dtype)
    return block.transpose(np.argsort(order))


def empty_cache() -> None:
    """Hand every cached block that no array uses back to the C library (and the system)."""
    with _lock:
        _release(math.inf)


def cached_bytes() -> int:
    """Bytes held by the step-array cache, in use or not."""
    return _cached_bytes


# --- 2. scratch -----------------------------------------------------------------------

_local = threading.local()


def scratch(name: str, shape: tuple[int, ...], dtype: np.typing.DTypeLike) -> np.ndarray:
    """A reusable buffer of `shape`, private to the calling thread, with garbage contents.

    The chunked loops need a few MB of temporaries per chunk (an im2col
    matrix, a centred block). Allocated afresh each time, such blocks are
    mapped and unmapped by malloc, with a page fault per 4 kB on first touch.
    Each thread keeps one buffer per `name`; a caller must not hold on to the
    result beyond the chunk it works on, nor ask for the same name twice at once.
    """
    views: dict[tuple, np.ndarray] | None = getattr(_local, "views", None)
    if views is None:
        views = _local.views = {}
        _local.buffers = {}
    key = (name, shape, dtype)
    view = views.get(key)  # the same request every step: answer it at once
    if view is not None:
        return view
    buffers: dict[str, np.ndarray] = _local.buffers
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    buf = buffers.get(name)
    if buf is None or buf.nbytes < nbytes:
        buf = buffers[name] = np.empty(nbytes, dtype=np.uint8)
        for old in [k for k in views if k[0] == name]:  # views of the replaced buffer
            del views[old]
    if len(views) >= 64:
        views.clear()
    view = views[key] = buf[:nbytes].view(dtype).reshape(shape)
    return view


# --- 3. read-only zeros ---------------------------------------------------------------

_zero_arrays: dict[tuple, np.ndarray] = {}


def read_only_zeros(like: np.ndarray) -> np.ndarray:
    """A read-only array of zeros with `like`'s shape, dtype and memory order, shared.

    NumPy's vectorised loops want two arrays: np.maximum(x, zeros) runs ahead
    of np.maximum(x, 0) (benchmarks/README.md). The zeros are never written,
    so the operating system backs them with its shared zero page.
    """
    key = (like.shape, like.strides, like.dtype.str)
    zeros = _zero_arrays.get(key)
    if zeros is None:
        if len(_zero_arrays) >= 16:
            _zero_arrays.clear()
        zeros = _zero_arrays[key] = np.zeros_like(like)
        zeros.flags.writeable = False
    return zeros
