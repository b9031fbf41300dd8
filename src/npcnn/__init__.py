"""npcnn: convolutional networks written from scratch in NumPy."""

from npcnn import nn, optim
from npcnn.gradcheck import gradcheck
from npcnn.nn.backend import use_reference
from npcnn.runtime import empty_cache, get_num_threads, set_num_threads, single_threaded_blas
from npcnn.serialization import load, save

__version__ = "0.1.0"

#: Subpackages loaded on first use, so that `import npcnn` stays light and
#: `npcnn.training.Trainer` works after it, as `npcnn.nn` does.
_LAZY_SUBMODULES = ("data", "models", "training", "imaging", "metrics", "plots", "kernels")


def __getattr__(name: str) -> object:
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"npcnn.{name}")
    raise AttributeError(f"module 'npcnn' has no attribute {name!r}")


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
