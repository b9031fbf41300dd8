"""A job whose rank 1 fails one way, for tests/test_distributed_mpi.py:

    mpiexec -n 2 python faults.py (stall|raise)

stall: rank 1 sleeps past the 2-second collective timeout while rank 0 waits
in a barrier (the watchdog must end the job); raise: rank 1 raises while rank
0 waits (the uncaught exception must end the job).
"""

from __future__ import annotations

import sys
import time

from npcnn.distributed import init_world

world = init_world(distributed=True, timeout=2.0)
world.set_activity("the fault test")
if world.rank == 1:
    if sys.argv[1] == "stall":
        time.sleep(60)
    raise ValueError("rank 1 cannot read its data")
world.barrier("the test's barrier")
