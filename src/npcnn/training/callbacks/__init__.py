"""Reports and extensions as small pluggable pieces: each is a :class:`Callback`.

Reports read what the loop measured; extensions are part of the training
procedure (the Trainer installs the built-in ones from its arguments) and
save their state in checkpoints.

>>> from npcnn.training import Trainer, callbacks
>>> reports = [callbacks.ProgressBar(), callbacks.EpochPrinter(),
...            callbacks.CSVLogger("log.csv"), callbacks.PlotCurves("curves.png")]
"""

from npcnn.training.callbacks.base import Callback, CallbackList
from npcnn.training.callbacks.batchnorm import RecomputeBatchNorm
from npcnn.training.callbacks.checkpoint import ModelCheckpoint, Snapshot
from npcnn.training.callbacks.logs import CSVLogger, EpochPrinter, JSONLogger, format_epoch
from npcnn.training.callbacks.nonfinite import FailOnNonFiniteLoss
from npcnn.training.callbacks.plot import PlotCurves, render_curves
from npcnn.training.callbacks.progress import ProgressBar
from npcnn.training.callbacks.schedule import LRSchedule
from npcnn.training.callbacks.validation import Validation

__all__ = [
    "CSVLogger",
    "Callback",
    "CallbackList",
    "EpochPrinter",
    "FailOnNonFiniteLoss",
    "JSONLogger",
    "LRSchedule",
    "ModelCheckpoint",
    "PlotCurves",
    "ProgressBar",
    "RecomputeBatchNorm",
    "Snapshot",
    "Validation",
    "format_epoch",
    "render_curves",
]
