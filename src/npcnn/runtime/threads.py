"""Split batch work over the machine's cores, and keep BLAS out of the way meanwhile.

NumPy releases the GIL inside copies, ufuncs and BLAS calls, so plain
threads give real parallelism for the chunked loops of the fast kernels.
Chunks are sized so their scratch buffers stay in cache (`chunk_ranges`);
the calling thread and helper threads take chunks as they come
(`parallel_map`).

BLAS is kept to one thread whenever npcnn's threads work
(`single_threaded_blas`): the per-chunk products are small, and a
multi-threaded BLAS would wake its own threads for each of them and fight
ours for the cores. Every fast kernel enters that limit itself
(`with_single_threaded_blas`), and the planner's passes enter it once for a
whole network, so users never need to. Entering is re-entrant: only the
outermost block asks threadpoolctl.
"""

from __future__ import annotations

import functools
import itertools
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import ParamSpec, TypeVar

import numpy as np

T = TypeVar("T")
P = ParamSpec("P")

try:  # a dependency; should it be missing all the same, npcnn still runs, more slowly
    from threadpoolctl import ThreadpoolController

    _blas = ThreadpoolController()
except ImportError:  # pragma: no cover - exercised only without the extra
    _blas = None

_num_threads = max(1, os.cpu_count() or 1)
# Below this much data a loop runs in the calling thread alone: waking the
# helper threads would cost more than it saves.
_MIN_PARALLEL_BYTES = 1 << 20
# Chunk size for loops that stream through memory (elementwise passes): they
# gain little from cache-sized chunks, and every chunk costs a GIL hand-over.
STREAM_CHUNK_BYTES = 4 << 20


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
    """Keep BLAS to one thread within the block; nested blocks cost nothing.

    npcnn's kernels and the planner's passes enter it themselves, so a user's
    own loop over layers needs no such block; it stays for code of one's own
    that calls BLAS from several threads. Needs threadpoolctl; without it
    this does nothing. Only the outermost block asks threadpoolctl, and
    restores the previous limits when it closes.
    """
    global _blas_limited
    outermost = _blas is not None and not _blas_limited
    with _blas.limit(limits=1, user_api="blas") if outermost else nullcontext():
        _blas_limited += 1
        try:
            yield
        finally:
            _blas_limited -= 1


def with_single_threaded_blas(fn: Callable[P, T]) -> Callable[P, T]:
    """Decorator: `fn` runs inside `single_threaded_blas()` (at the cost of a check when
    a block is already open)."""

    @functools.wraps(fn)
    def limited(*args: P.args, **kwargs: P.kwargs) -> T:
        if _blas_limited or _blas is None:
            return fn(*args, **kwargs)
        with single_threaded_blas():
            return fn(*args, **kwargs)

    return limited


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

    Two queues implemented in C (jobs in, done out) are the whole hand-over:
    a ThreadPoolExecutor's futures and locks run several times as much
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
