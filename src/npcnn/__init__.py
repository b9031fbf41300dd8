"""npcnn: convolutional networks written from scratch in NumPy."""

from npcnn import nn, optim
from npcnn.gradcheck import gradcheck
from npcnn.nn.backend import use_reference
from npcnn.runtime import empty_cache, get_num_threads, set_num_threads, single_threaded_blas
from npcnn.serialization import load, save

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "empty_cache",
    "get_num_threads",
    "gradcheck",
    "load",
    "nn",
    "optim",
    "save",
    "set_num_threads",
    "single_threaded_blas",
    "use_reference",
]
