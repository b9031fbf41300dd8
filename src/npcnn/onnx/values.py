"""What an ONNX value is while a graph is converted: data of the batch, a constant, or a shape.

- `Batch`: computed from the input; a symbolic tensor of the npcnn model
  being built, with the shape ONNX sees (`onnx_shape`, batch axis None),
  which may differ from npcnn's by trailing axes of 1 (ONNX's
  GlobalAveragePool gives (N, C, 1, 1) where npcnn's gives (N, C)).
  A `Batch` may also be laid out differently from npcnn's tensor, as
  tf2onnx's graphs of Keras models are (channels-last input, a transpose
  back to channels-last before flattening): `perm` says how ONNX's axes
  are npcnn's (ONNX's value = npcnn's tensor transposed by `perm`), and
  after a flatten `columns` says which npcnn column each ONNX column is.
  Only transposes, reshapes and the Dense layers that read such a flatten
  accept them; every other operator refuses them by name.
- a NumPy array: a constant (initializer, Constant node, or folded from
  constants).
- `ShapeVector`: a 1-D integer vector computed from a tensor's shape, in
  which None stands for the batch size (the `x.view(x.size(0), -1)` chain:
  Shape -> Gather -> Unsqueeze -> Concat -> Reshape keeps the batch symbolic).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from npcnn.nn.symbolic import SymbolicTensor


@dataclass(frozen=True)
class Batch:
    """A value that depends on the input batch: `tensor` in npcnn, seen by ONNX as
    `onnx_shape` (batch axis None). `pad` (rows, columns) is a zero padding ONNX
    applied (a Pad node) that npcnn has not: the next conv or average pool takes
    it into its own padding."""

    tensor: SymbolicTensor
    onnx_shape: tuple[int | None, ...]
    pad: tuple[int, int] = (0, 0)
    perm: tuple[int, ...] | None = None
    columns: np.ndarray | None = None

    @property
    def laid_out_as_npcnn(self) -> bool:
        """ONNX's value is npcnn's tensor as it is (no transpose, no reordered columns)."""
        return self.perm is None and self.columns is None

    @classmethod
    def of(cls, tensor: SymbolicTensor) -> Batch:
        return cls(tensor, tuple(tensor.shape))

    @property
    def rank(self) -> int:
        return len(self.onnx_shape)


@dataclass(frozen=True)
class ShapeVector:
    """A 1-D vector of sizes from a shape; None is the (symbolic) batch size."""

    values: tuple[int | None, ...]
