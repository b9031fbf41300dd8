"""Argument and shape helpers shared by the layers, the reference kernels and the fast kernels.

A leaf module (it imports nothing of npcnn), so that `npcnn.nn.functional`
and `npcnn.kernels` can share it without importing each other.
"""

from __future__ import annotations

import numpy as np

Pair = int | tuple[int, int]


def as_pair(value: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    """Accept an int or a pair, as PyTorch's kernel_size/stride/padding do."""
    if isinstance(value, int | np.integer):
        pair = (int(value), int(value))
    else:
        pair = tuple(int(v) for v in value)
        if len(pair) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Window positions along one axis: (size + 2*padding - kernel) // stride + 1.

    Raises ValueError when kernel < 1, stride < 1, padding < 0 or the kernel
    is larger than the padded input.
    """
    if kernel < 1 or stride < 1 or padding < 0:
        raise ValueError(
            f"kernel and stride must be >= 1 and padding >= 0, "
            f"got kernel {kernel}, stride {stride}, padding {padding}"
        )
    if size + 2 * padding < kernel:
        raise ValueError(
            f"input of size {size} (padded to {size + 2 * padding}) is smaller than "
            f"the kernel of size {kernel}"
        )
    return (size + 2 * padding - kernel) // stride + 1


def check_shape(array: np.ndarray, shape: tuple[int, ...], what: str) -> None:
    """Raise ValueError unless `array` has `shape`: a gradient of the wrong shape, or of
    the right size in another layout (channels-last), would otherwise be reshaped silently."""
    if array.shape != shape:
        raise ValueError(f"{what} must have shape {shape}, got {array.shape}")


def batch_shape(sample_shape: tuple[int, ...]) -> str:
    """A batch of samples of `sample_shape`, its size unknown: (1, 28, 28) -> "(N, 1, 28, 28)"."""
    return "(" + ", ".join(["N", *map(str, sample_shape)]) + ")"


def name_batch_axis(message: str, empty_shape: tuple[int, ...]) -> str:
    """`message` about a batch of 0 samples (a probe of the shapes) as about any batch:
    "got (0, 1, 28, 28)" -> "got (N, 1, 28, 28)"."""
    return message.replace(str(tuple(empty_shape)), batch_shape(tuple(empty_shape)[1:]))
