"""The optional `onnx` package, imported on first use with a message that says what to install."""

from __future__ import annotations

from types import ModuleType

INSTALL_HINT = 'pip install "npcnn[onnx]"'


class OnnxMissingError(ImportError):
    """The `onnx` package is not installed; the message says how to install it."""


def require_onnx() -> ModuleType:
    """The `onnx` module, or OnnxMissingError naming the extra to install."""
    try:
        import onnx
    except ImportError as err:
        raise OnnxMissingError(
            f"ONNX export and import need the onnx package: {INSTALL_HINT}"
        ) from err
    return onnx
