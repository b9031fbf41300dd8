"""`npcnn ARGS...` as one rank that receives SIGTERM while it loads its data: after
joining MPI, before the training loop, where no other rank knows of the stop."""

from __future__ import annotations

import os
import signal
import sys

import npcnn.data
from npcnn.cli.main import main

load_dataset = npcnn.data.load_dataset


def load_dataset_and_be_stopped(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    return load_dataset(*args, **kwargs)


npcnn.data.load_dataset = load_dataset_and_be_stopped
sys.exit(main(sys.argv[1:]))
