"""Layers, containers, losses and initialisers: `from npcnn import nn`."""

from npcnn.nn import functional, init
from npcnn.nn.activations import Identity, LeakyReLU, ReLU, Sigmoid, Tanh
from npcnn.nn.backend import use_reference
from npcnn.nn.batchnorm import BatchNorm1D, BatchNorm2D, update_bn
from npcnn.nn.container import Sequential
from npcnn.nn.conv import Conv2D
from npcnn.nn.dropout import Dropout
from npcnn.nn.functional.loss import log_softmax, softmax
from npcnn.nn.fusion import no_fusion, set_fusion
from npcnn.nn.graph import Model
from npcnn.nn.linear import Dense, Flatten
from npcnn.nn.loss import CrossEntropyLoss
from npcnn.nn.merge import Add, Concatenate, MergeLayer
from npcnn.nn.module import Layer, NoForwardError, Parameter, inference_backward, passes_undone
from npcnn.nn.padding import ZeroPad2D
from npcnn.nn.pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from npcnn.nn.random_state import generator_states, set_generator_states
from npcnn.nn.registry import LAYERS, register_layer
from npcnn.nn.symbolic import Input, SymbolicTensor

for _cls in (
    Add,
    AvgPool2D,
    BatchNorm1D,
    BatchNorm2D,
    Concatenate,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    Identity,
    LeakyReLU,
    MaxPool2D,
    Model,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
    ZeroPad2D,
):
    register_layer(_cls)
del _cls

__all__ = [
    "LAYERS",
    "Add",
    "AvgPool2D",
    "BatchNorm1D",
    "BatchNorm2D",
    "Concatenate",
    "Conv2D",
    "CrossEntropyLoss",
    "Dense",
    "Dropout",
    "Flatten",
    "GlobalAvgPool2D",
    "Identity",
    "Input",
    "Layer",
    "LeakyReLU",
    "MaxPool2D",
    "MergeLayer",
    "Model",
    "NoForwardError",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "SymbolicTensor",
    "Tanh",
    "ZeroPad2D",
    "functional",
    "generator_states",
    "inference_backward",
    "init",
    "log_softmax",
    "no_fusion",
    "passes_undone",
    "register_layer",
    "set_fusion",
    "set_generator_states",
    "softmax",
    "update_bn",
    "use_reference",
]
