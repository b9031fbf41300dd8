"""Reports as small pluggable pieces: each is a :class:`Callback` given to the Trainer.

>>> from npcnn.training import Trainer, callbacks
>>> reports = [callbacks.ProgressBar(), callbacks.EpochPrinter(),
...            callbacks.CSVLogger("log.csv"), callbacks.PlotCurves("curves.png")]
"""

from npcnn.training.callbacks.base import Callback, CallbackList
from npcnn.training.callbacks.checkpoint import ModelCheckpoint
from npcnn.training.callbacks.logs import CSVLogger, EpochPrinter, JSONLogger, format_epoch
from npcnn.training.callbacks.plot import PlotCurves, render_curves
from npcnn.training.callbacks.progress import ProgressBar

__all__ = [
    "CSVLogger",
    "Callback",
    "CallbackList",
    "EpochPrinter",
    "JSONLogger",
    "ModelCheckpoint",
    "PlotCurves",
    "ProgressBar",
    "format_epoch",
    "render_curves",
]
