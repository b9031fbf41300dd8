"""ONNX file -> npcnn model.

A file npcnn wrote carries its architecture in its metadata ("npcnn.architecture",
the JSON of `npcnn.save`); when exporting that architecture with the file's
weights gives back the file's very graph, the model is rebuilt from it, with
its own layer names and nesting: export then import returns the same model,
state dict included. Any other file (PyTorch's exporters, tf2onnx, a file
whose metadata does not match its graph) is converted node by node
(`convert.Converter`), into an `nn.Model` whose layers are named after the
nodes.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from npcnn import nn
from npcnn.onnx.convert import Converter
from npcnn.onnx.export import to_onnx
from npcnn.onnx.metadata import ARCHITECTURE_KEY, COUNTERS_KEY
from npcnn.onnx.nodes import UnsupportedOnnx, default_opset
from npcnn.onnx.reader import read_model


def load(path: str | os.PathLike[str], allow_external_data: bool = False) -> nn.Layer:
    """The npcnn model of the ONNX file at `path`, ready to evaluate or train: float32,
    or for a file npcnn wrote the dtype of the model exported (float64 too, holding
    the weights as the file does, rounded to float32).

    Raises FileNotFoundError, IsADirectoryError, OnnxMissingError without the
    onnx package, or ValueError (one line starting with the path) for a file
    that is damaged, hostile, or uses what npcnn cannot represent (the node,
    its operator and what is unsupported are named).
    """
    model = read_model(path, allow_external_data)
    own = _own_model(model)
    if own is not None:
        return own
    try:
        return Converter(model).convert()
    except UnsupportedOnnx as err:
        raise ValueError(f"{path}: cannot import {err}") from None


def _own_model(model: Any) -> nn.Layer | None:
    """The model rebuilt from npcnn's metadata, if it is there and matches the graph."""
    from onnx import numpy_helper

    from npcnn.serialization import ARCHITECTURE_KEY as NPZ_KEY
    from npcnn.serialization import model_from_arrays

    meta = {p.key: p.value for p in model.metadata_props}
    if ARCHITECTURE_KEY not in meta:
        return None
    try:
        arrays: dict[str, np.ndarray] = {NPZ_KEY: np.array(meta[ARCHITECTURE_KEY])}
        # The weights; an int64 initializer is a node's operand (a Pad's pads), which
        # the export of the rebuilt model writes again.
        initializers = ((t.name, numpy_helper.to_array(t)) for t in model.graph.initializer)
        arrays.update((name, a) for name, a in initializers if a.dtype.kind == "f")
        counters = json.loads(meta.get(COUNTERS_KEY, "{}"))
        arrays.update({k: np.array(int(v), dtype=np.int64) for k, v in counters.items()})
        rebuilt = model_from_arrays(arrays, source="the ONNX metadata")
        shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:])
        opset = default_opset(model)
        softmax = any(n.op_type == "Softmax" for n in model.graph.node)
        again = to_onnx(rebuilt, shape, opset, softmax)
    except (ValueError, TypeError, KeyError, json.JSONDecodeError):
        return None
    return rebuilt if _same_graph(again.graph, model.graph) else None


def _same_graph(a: Any, b: Any) -> bool:
    """Same nodes (operators, names, inputs, outputs, attributes) and initializers."""
    nodes_a = [n.SerializeToString(deterministic=True) for n in a.node]
    nodes_b = [n.SerializeToString(deterministic=True) for n in b.node]
    inits_a = [t.SerializeToString(deterministic=True) for t in a.initializer]
    inits_b = [t.SerializeToString(deterministic=True) for t in b.initializer]
    return nodes_a == nodes_b and inits_a == inits_b
