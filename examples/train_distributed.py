"""Data-parallel training from the library, on every process mpiexec starts:

    mpiexec -n 2 python examples/train_distributed.py

Each rank loads the same data and builds the same model; `DataParallel`
gives each its share of every global batch of 128, sums the gradients and
checks that the ranks agree. Rank 0 alone reports and writes the checkpoint.
Run without mpiexec, it trains on one process the same way.
"""

from __future__ import annotations

import sys

import npcnn
from npcnn import nn, optim
from npcnn.data import BatchIterator, load_dataset
from npcnn.distributed import DataParallel, init_world
from npcnn.models import get_preset
from npcnn.training import Trainer, callbacks


def main(checkpoint: str = "distributed-checkpoint.npz", epochs: int = 2) -> None:
    world = init_world(distributed=True)  # a world of one without mpiexec
    data = load_dataset("sample")
    model = get_preset("notebook").model(seed=0)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    trainer = Trainer(
        model,
        nn.CrossEntropyLoss(),
        opt,
        data_parallel=DataParallel(world, sync_bn=True),
        callbacks=[callbacks.EpochPrinter()] if world.is_root else [],
        checkpoint_path=checkpoint,
    )
    batches = BatchIterator(data.train_images, data.train_labels, 128, rng=0)  # global batch
    trainer.fit(batches, epochs=epochs, validation=(data.test_images, data.test_labels))
    if world.is_root:
        npcnn.save(model, "distributed-model.npz")
        print(f"{world.size} process(es): wrote distributed-model.npz and {checkpoint}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
