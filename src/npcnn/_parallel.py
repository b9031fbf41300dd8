"""Split batch work over the machine's cores.

NumPy releases the GIL inside copies, ufuncs and BLAS calls, so plain
threads give real parallelism for the chunked loops of the conv, pooling,
batch-norm and ReLU layers. Chunks are sized so their scratch buffers stay
in cache (`chunk_ranges`); the calling thread and helper threads take chunks as
they come (`parallel_map`).
"""

from __future__ import annotations

import itertools
import math
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import TypeVar

import numpy as np

T = TypeVar("T")

try:  # a dependency; should it be missing all the same, npcnn still runs, more slowly
    from threadpoolctl import ThreadpoolController

    _blas = ThreadpoolController()
except ImportError:  # pragma: no cover - exercised only without the extra
    _blas = None

_num_threads = max(1, os.cpu_count() or 1)
_local = threading.local()
# Below this much data a layer works in the calling thread alone: waking the
# helper threads would cost more than it saves.
_MIN_PARALLEL_BYTES = 1 << 20
# Chunk size for loops that stream through memory (elementwise passes): they
# gain little from cache-sized chunks, and every chunk costs a GIL hand-over.
STREAM_CHUNK_BYTES = 4 << 20


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


def set_num_threads(n: int) -> None:
    """Use `n` threads (at least 1) inside the layers' forward and backward passes."""
    global _num_threads
    if n < 1:
        raise ValueError(f"number of threads must be at least 1, got {n}")
    _num_threads = int(n)


def get_num_threads() -> int:
    """The number of threads the layers use."""
    return _num_threads


def chunk_ranges(
    total: int, bytes_per_item: int, target_bytes: int = 2 << 20, max_items: int | None = None
) -> list[range]:
    """Split `range(total)` into contiguous chunks whose scratch fits in `target_bytes`
    (and of at most `max_items` items).

    Small GEMMs (a conv has only 10 to 100 output channels) run far below BLAS
    peak unless their operands stay in cache, hence chunks of a few MB rather
    than the whole batch. The number of chunks is a multiple of the number of
    threads (when the batch allows it) and their sizes differ by one item at
    most, so every core gets the same share: chunks of 18 images for a batch
    of 128 would leave a last chunk of 2, and one thread 16 images more to do.
    """
    if total * bytes_per_item < _MIN_PARALLEL_BYTES:  # waking threads would cost more
        return [range(total)] if total else []
    per_chunk = max(1, target_bytes // max(1, bytes_per_item))
    per_chunk = min(per_chunk, max_items or per_chunk)
    count = -(-total // per_chunk)
    count = min(total, -(-count // _num_threads) * _num_threads)
    size, bigger = divmod(total, count)  # the first `bigger` chunks get one item more
    starts = [k * size + min(k, bigger) for k in range(count + 1)]
    return [range(a, b) for a, b in itertools.pairwise(starts)]


def elementwise(fn: Callable[..., object], out: np.ndarray, *inputs: object) -> np.ndarray:
    """Run `fn(*inputs, out=out)` chunk by chunk along the batch axis, on all cores.

    For NumPy ufuncs over big arrays (one pass of a ReLU over a 50 MB batch),
    which NumPy runs on one core. Arrays among `inputs` must have `out`'s
    batch axis; scalars are passed as they are. Returns `out`.
    """

    def run(rows: range) -> None:
        sl = slice(rows.start, rows.stop)
        fn(*(a[sl] if isinstance(a, np.ndarray) else a for a in inputs), out=out[sl])

    if out.ndim == 0 or len(out) == 0:
        fn(*inputs, out=out)
    else:
        item_bytes = out[0].nbytes * (1 + len(inputs))
        parallel_map(run, chunk_ranges(len(out), item_bytes, STREAM_CHUNK_BYTES))
    return out


_blas_limited = 0  # how many single_threaded_blas() blocks are open


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Keep BLAS to one thread while our own threads split the work.

    The per-chunk GEMMs are small; a multi-threaded BLAS would wake its
    threads for each of them and fight ours for the cores (measured here:
    a 4x4 conv's backward took twice as long). Needs threadpoolctl; without
    it this does nothing. Nested blocks cost nothing: only the outermost
    one asks threadpoolctl (about 12 us a time), and `parallel_map` opens
    one only when none is open.
    """
    global _blas_limited
    outermost = _blas is not None and not _blas_limited
    with _blas.limit(limits=1, user_api="blas") if outermost else nullcontext():
        _blas_limited += 1
        try:
            yield
        finally:
            _blas_limited -= 1


def parallel_map(fn: Callable[[range], T], chunks: Sequence[range]) -> list[T]:
    """`[fn(c) for c in chunks]`, computed by the calling thread and the helper threads.

    Every thread, the caller included, takes the next chunk not yet taken
    until none is left. A thread that wakes late, or a core busy with another
    program, then simply does fewer chunks instead of holding everyone up;
    and the caller never idles. `fn` must not itself call `parallel_map`.
    """
    if _blas is not None and not _blas_limited:
        with single_threaded_blas():
            return parallel_map(fn, chunks)
    if _num_threads == 1 or len(chunks) <= 1:
        return [fn(c) for c in chunks]
    helpers = _helpers(_num_threads - 1)
    results: list[T] = [None] * len(chunks)  # type: ignore[list-item]
    taken = itertools.count()  # next() on a count is atomic under the GIL
    errors: list[BaseException] = []

    def work() -> None:
        try:
            while (i := next(taken)) < len(chunks):
                results[i] = fn(chunks[i])
        except BaseException as error:  # raised again below, in the caller
            errors.append(error)

    for helper in helpers:
        helper.jobs.put(work)
    work()
    for helper in helpers:
        helper.done.get()
    if errors:
        raise errors[0]
    return results


class _Helper:
    """A thread that runs the jobs handed to it, one at a time, and reports each done.

    Two queues implemented in C (jobs in, done out) are the whole hand-over.
    A ThreadPoolExecutor's futures and locks run several times as much
    Python code under the GIL for each job, and a training step hands out
    a few dozen jobs.
    """

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.done: queue.SimpleQueue[None] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="npcnn-helper", daemon=True).start()

    def _serve(self) -> None:
        while True:
            self.jobs.get()()
            self.done.put(None)


_helper_threads: list[_Helper] = []


def _helpers(count: int) -> list[_Helper]:
    """`count` helper threads, started on first use and kept for the process's life."""
    while len(_helper_threads) < count:
        _helper_threads.append(_Helper())
    return _helper_threads[:count]


# A child process made by fork() has none of the parent's threads: it starts its own.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_helper_threads.clear)
