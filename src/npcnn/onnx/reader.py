"""Read an ONNX file as data, checking everything before anything big is allocated.

A file is refused with a ValueError of one line, starting with its path, when:
- it is larger than `MAX_FILE_BYTES`, or not an ONNX model (protobuf that
  does not parse, no graph);
- a tensor's declared dims are negative, multiply to more than
  `MAX_TENSOR_ELEMENTS`, or disagree with the bytes it holds (a "protobuf
  bomb" declares huge dims and carries no data), or the tensors together
  exceed `MAX_TOTAL_BYTES`;
- a tensor's data lives outside the file (external data) and that was not
  allowed; when allowed, the location must be a plain relative path to a
  regular file inside the model's folder (no "..", no absolute path, no
  symbolic or hard link) and the offset and length must lie within it; the
  bytes are then read into the tensor (never written);
- the graph is not in topological order, or a node reads a name that no
  input, initializer or earlier node defines.

Local functions (the PyTorch exporter's modules) are inlined first.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

from npcnn.onnx.requirements import require_onnx

MAX_FILE_BYTES = 2 << 30
MAX_TENSOR_ELEMENTS = 1 << 31
MAX_TOTAL_BYTES = 4 << 30


def read_model(path: str | os.PathLike[str], allow_external_data: bool = False) -> Any:
    """The checked, function-inlined ModelProto in the .onnx file at `path`.

    Raises FileNotFoundError, IsADirectoryError, or ValueError saying what is wrong.
    """
    onnx = require_onnx()
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not an ONNX file")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: {size:,} bytes, over the limit of {MAX_FILE_BYTES:,}")
    try:
        model = onnx.ModelProto.FromString(path.read_bytes())
    except Exception as err:  # protobuf's DecodeError, and RuntimeError from its C++ parser
        raise ValueError(f"{path} is not an ONNX model (it does not parse: {err})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise ValueError(f"{path} is not an ONNX model (no graph)")
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    total = 0
    for tensor in _tensors(model.graph):
        total += check_tensor(tensor, path, allow_external_data)
        if total > MAX_TOTAL_BYTES:
            raise ValueError(f"{path}: tensors over {MAX_TOTAL_BYTES:,} bytes in all")
    _check_order(model.graph, path)
    return model


def _tensors(graph: Any) -> list[Any]:
    """The initializers and Constant nodes' tensors of `graph` (no subgraphs are read)."""
    tensors = list(graph.initializer)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                tensors.append(attribute.t)
    return tensors


def check_tensor(tensor: Any, path: Path, allow_external_data: bool) -> int:
    """The bytes `tensor` declares, after checking they are what it holds; ValueError if not."""
    from onnx import TensorProto, helper

    name = tensor.name or "a constant"
    dims = list(tensor.dims)
    if any(d < 0 for d in dims):
        raise ValueError(f"{path}: tensor {name!r} declares negative dims {dims}")
    count = math.prod(dims)
    if count > MAX_TENSOR_ELEMENTS:
        raise ValueError(f"{path}: tensor {name!r} declares {count:,} elements {dims}")
    if tensor.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        raise ValueError(f"{path}: tensor {name!r} is not numeric")
    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    expected = count * itemsize
    if tensor.data_location == TensorProto.EXTERNAL:
        if not allow_external_data:
            raise ValueError(
                f"{path}: tensor {name!r} keeps its data in another file; external data "
                "is off (npcnn.onnx.load(..., allow_external_data=True), or "
                "npcnn import --allow-external-data, then use the .npz it writes)"
            )
        _inline_external(tensor, path, expected)
        return expected
    held = _held_bytes(tensor, itemsize)
    if held != expected:
        raise ValueError(
            f"{path}: tensor {name!r} declares dims {dims} ({expected:,} bytes) "
            f"but holds {held:,} bytes"
        )
    return expected


def _held_bytes(tensor: Any, itemsize: int) -> int:
    """The bytes of data inside `tensor` (raw, or in its typed fields)."""
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    fields = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data")
    return sum(len(getattr(tensor, f)) for f in fields) * itemsize


def _inline_external(tensor: Any, path: Path, expected: int) -> None:
    """Read `tensor`'s external bytes into it, after checking that the location is a
    regular file inside the model's folder, unlinked, holding [offset, offset + length)
    with length = the declared size. Nothing is ever written."""
    from onnx import TensorProto

    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    name = tensor.name or "a constant"
    folder = path.resolve().parent
    relative = Path(location)
    if not location or relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"{path}: tensor {name!r}: external data location {location!r} refused")
    target = folder / relative
    try:
        st = os.lstat(target)
    except OSError:
        raise ValueError(f"{path}: tensor {name!r}: no external data file {location!r}") from None
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or target.resolve().parent != folder:
        raise ValueError(
            f"{path}: tensor {name!r}: external data {location!r} must be a plain file "
            "directly in the model's folder (no links)"
        )
    offset, length = int(info.get("offset", 0)), int(info.get("length", expected))
    if length != expected or offset < 0 or offset + length > st.st_size:
        raise ValueError(
            f"{path}: tensor {name!r}: external data {location!r} does not hold "
            f"{expected:,} bytes at offset {offset:,}"
        )
    with open(target, "rb") as file:
        file.seek(offset)
        tensor.raw_data = file.read(length)
    tensor.data_location = TensorProto.DEFAULT
    del tensor.external_data[:]


def _check_order(graph: Any, path: Path) -> None:
    """Every node reads names defined before it (inputs, initializers, earlier outputs)."""
    known = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    for index, node in enumerate(graph.node):
        for name in node.input:
            if name not in known:
                label = node.name or f"#{index}"
                raise ValueError(
                    f"{path}: node {label!r} ({node.op_type}) reads {name!r}, which nothing "
                    "before it defines (not in topological order, or dangling)"
                )
        known.update(node.output)
    for output in graph.output:
        if output.name not in known:
            raise ValueError(f"{path}: the graph's output {output.name!r} is never computed")
