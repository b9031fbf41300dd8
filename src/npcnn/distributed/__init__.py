"""Data-parallel training over MPI: the same model on K processes, one step on all of them.

    from npcnn.distributed import DataParallel, init_world

    world = init_world(distributed=True)            # under mpiexec -n K
    trainer = Trainer(model, loss_fn, optimizer,
                      data_parallel=DataParallel(world, sync_bn=True),
                      callbacks=[ProgressBar()] if world.is_root else [])
    trainer.fit(BatchIterator(images, labels, 128, rng=0), epochs=3)   # 128: the global batch

`world`: who the ranks are and their collectives (`World`, `SingleProcess`,
`MPIWorld`); `launch`: joining a job, and the launcher's mistakes;
`shards`: each rank's share of a global batch; `data_parallel`: what a
training step does across the ranks.
"""

from npcnn.distributed.data_parallel import DataParallel, DistributedError, GradientBuckets
from npcnn.distributed.launch import (
    LaunchError,
    abort_job,
    active_world,
    init_world,
    launcher_size,
)
from npcnn.distributed.shards import ShardedBatches, share
from npcnn.distributed.world import SingleProcess, World

__all__ = [
    "DataParallel",
    "DistributedError",
    "GradientBuckets",
    "LaunchError",
    "ShardedBatches",
    "SingleProcess",
    "World",
    "abort_job",
    "active_world",
    "init_world",
    "launcher_size",
    "share",
]
