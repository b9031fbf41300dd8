"""Optimisers with PyTorch's update rules: `from npcnn import optim`."""

from npcnn.optim.adam import Adam, AdamW
from npcnn.optim.optimizer import Optimizer
from npcnn.optim.sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "Optimizer"]
