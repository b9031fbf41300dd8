"""The runtime under the fast kernels: memory and threads, and nothing else.

    memory.py   every kind of buffer the kernels use, with its lifetime: step
                arrays from a cache that outlives a training step, per-thread
                scratch for one chunk of a parallel loop, shared read-only zeros
    threads.py  the helper threads (`parallel_map`, `chunk_ranges`, `elementwise`),
                the thread count, and keeping BLAS to one thread while they work

Only `npcnn.kernels` (and the optimisers' scratch) use these; layers and
containers do not. The public names `npcnn.empty_cache`,
`npcnn.set_num_threads`, `npcnn.get_num_threads` and `npcnn.single_threaded_blas`
come from here.
"""

from npcnn.runtime.memory import empty_cache
from npcnn.runtime.threads import get_num_threads, set_num_threads, single_threaded_blas

__all__ = ["empty_cache", "get_num_threads", "set_num_threads", "single_threaded_blas"]
