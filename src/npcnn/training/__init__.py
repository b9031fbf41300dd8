"""Training: the loop, its History, evaluation, schedules, reports and checkpoints.

>>> from npcnn import nn, optim
>>> from npcnn.data import BatchIterator, load_dataset
>>> from npcnn.training import Trainer, callbacks, schedules
>>> ds = load_dataset("sample")
>>> model = ...  # any npcnn network mapping (B, 1, 28, 28) to (B, 10) logits
>>> opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
>>> trainer = Trainer(model, nn.CrossEntropyLoss(), opt,
...                   scheduler=schedules.CosineAnnealingLR(opt, t_max=10),
...                   callbacks=[callbacks.ProgressBar(), callbacks.EpochPrinter()],
...                   checkpoint_path="run/checkpoint.npz")
>>> history = trainer.fit(BatchIterator(ds.train_images, ds.train_labels, 64, rng=0), 10,
...                       validation=(ds.test_images, ds.test_labels))
>>> # after Ctrl-C: trainer.fit(same data, 10, resume_from="run/checkpoint.npz")
"""

from npcnn.training import callbacks, schedules
from npcnn.training.checkpoint import load_checkpoint
from npcnn.training.errors import NonFiniteLossError, NonFiniteWeightsError, TrainingInterrupted
from npcnn.training.evaluate import (
    TTA_MODES,
    EvalResult,
    as_model_input,
    evaluate,
    inference_logits,
)
from npcnn.training.history import EPOCH_KEYS, STEP_KEYS, History
from npcnn.training.schedules import CosineAnnealingLR, LRScheduler, StepLR
from npcnn.training.trainer import Trainer

__all__ = [
    "EPOCH_KEYS",
    "STEP_KEYS",
    "TTA_MODES",
    "CosineAnnealingLR",
    "EvalResult",
    "History",
    "LRScheduler",
    "NonFiniteLossError",
    "NonFiniteWeightsError",
    "StepLR",
    "Trainer",
    "TrainingInterrupted",
    "as_model_input",
    "callbacks",
    "evaluate",
    "inference_logits",
    "load_checkpoint",
    "schedules",
]
