"""ONNX, the exchange format of the field: npcnn models out (`export`) and in (`load`).

    import npcnn.onnx
    npcnn.onnx.export(model, "model.onnx", input_shape=(1, 28, 28))   # opset 17
    model = npcnn.onnx.load("resnet_from_pytorch.onnx")              # an nn.Model

Needs the `onnx` extra (`pip install "npcnn[onnx]"`: onnx and onnxruntime);
the rest of npcnn works without it.
"""

from npcnn.onnx.export import DEFAULT_OPSET, SUPPORTED_OPSETS, export
from npcnn.onnx.load import load
from npcnn.onnx.requirements import OnnxMissingError

__all__ = ["DEFAULT_OPSET", "SUPPORTED_OPSETS", "OnnxMissingError", "export", "load"]
