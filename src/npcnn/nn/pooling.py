"""Max and average pooling over (N, C, H, W) input.

Output size, as in PyTorch (floor mode): Ho = (H + 2*ph - kh) // sh + 1.
Windows may overlap (kernel 3, stride 2) and may be padded (max pooling pads
with -inf, average pooling with zeros that count in the average, PyTorch's
`count_include_pad=True`).

The kernels compute it: `npcnn.nn.functional.pooling` with one row per
window, `npcnn.kernels.pooling` fast (see `npcnn.nn.backend`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from npcnn.nn.backend import active_kernels
from npcnn.nn.kernel_layer import KernelLayer
from npcnn.nn.module import Layer, NoForwardError, check_input, keeps_cache
from npcnn.shapes import as_pair


class _Pool2D(Layer):
    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.stride = as_pair(stride if stride is not None else kernel_size, "stride")
        self.padding = as_pair(padding, "padding")
        kh, kw = self.kernel_size
        ph, pw = self.padding
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"{type(self).__name__}: kernel_size and stride must be >= 1")
        if 2 * ph > kh or 2 * pw > kw:
            raise ValueError(
                f"{type(self).__name__}: padding {self.padding} must be at most half "
                f"the kernel size {self.kernel_size}"
            )
        self._cache: tuple | None = None  # (kernel set, kernel cache) of a training forward

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """(Ho, Wo) for an (H, W) input; ValueError when the window does not fit."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ValueError(
                f"{type(self).__name__} input of size {h}x{w} is smaller than the {kh}x{kw} window"
            )
        return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1

    def config(self) -> dict[str, Any]:
        return {
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
        }


class MaxPool2D(_Pool2D):
    """y[n, c, a, b] = max over the window of xp[n, c, a*sh + i, b*sw + j].

    Backward: each window's gradient goes to one input, the FIRST maximum in
    row-major order, as PyTorch does. Ties are everywhere in real data
    (blank background is 0 after ReLU); sending the gradient to every tied
    maximum would multiply it. Overlapping windows add their gradients.

    ceil_mode (PyTorch's): Ho = ceil((H + 2p - k) / s) + 1, so a last window
    that runs past the padded input is kept, over the values it covers;
    but a window that would start in the right padding is dropped
    (Ho -= 1 when (Ho - 1) * s >= H + p). Computed as the same pooling of
    the input extended at the bottom and right by -inf, which no window
    picks.
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__(kernel_size, stride, padding)
        self.ceil_mode = bool(ceil_mode)

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        floor = super().output_size(h, w)
        if not self.ceil_mode:
            return floor
        sizes = []
        for size, k, s, p in zip((h, w), self.kernel_size, self.stride, self.padding, strict=True):
            out = -(-(size + 2 * p - k) // s) + 1
            sizes.append(out - 1 if (out - 1) * s >= size + p else out)
        return sizes[0], sizes[1]

    def _extension(self, h: int, w: int) -> tuple[int, int]:
        """Rows and columns of -inf that ceil_mode adds at the bottom and right."""
        ho, wo = self.output_size(h, w)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return max(0, (ho - 1) * sh + kh - h - 2 * ph), max(0, (wo - 1) * sw + kw - w - 2 * pw)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """x (N, C, H, W) floats -> y (N, C, Ho, Wo)."""
        check_input(x, 4, self)
        extension = self._extension(x.shape[2], x.shape[3])
        if any(extension):
            x = np.pad(
                x, ((0, 0), (0, 0), (0, extension[0]), (0, extension[1])), constant_values=-np.inf
            )
        keep = keeps_cache(training)
        if keep:  # (an inference forward leaves a training forward's cache in place)
            self._cache = None  # let the previous step's memory serve this one
        kernels = active_kernels()
        y, cache = kernels.max_pool2d_forward(
            x, self.kernel_size, self.stride, self.padding, need_cache=keep
        )
        if keep:
            self._cache = (kernels, cache, extension)
        return y

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """dy (N, C, Ho, Wo) -> dx (N, C, H, W) (None with need_input_grad=False)."""
        if self._cache is None:
            raise NoForwardError(self)
        kernels, cache, (eh, ew) = self._cache
        dx = kernels.max_pool2d_backward(dy, cache)
        if eh or ew:
            dx = dx[:, :, : dx.shape[2] - eh, : dx.shape[3] - ew]
        return dx if need_input_grad else None

    def config(self) -> dict[str, Any]:
        config = super().config()
        if self.ceil_mode:  # (files of models without it stay as they were)
            config["ceil_mode"] = True
        return config


class AvgPool2D(_Pool2D, KernelLayer):
    """y[n, c, a, b] = mean over the kh*kw window of xp (zero padding counts).

    Backward: every input of a window receives dy / (kh*kw) from it.
    """

    op = "avg_pool2d"

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """x (N, C, H, W) floats -> y (N, C, Ho, Wo)."""
        check_input(x, 4, self)
        self.output_size(x.shape[2], x.shape[3])
        return self.kernel_forward(x, training, self.kernel_size, self.stride, self.padding)


class GlobalAvgPool2D(KernelLayer):
    """y[n, c] = mean over (h, w) of x[n, c, h, w]: (N, C, H, W) -> (N, C).

    The output is flattened, as Keras' GlobalAveragePooling2D; PyTorch writes
    it as AdaptiveAvgPool2d(1) followed by flatten (torch.flatten(x, 1)), so
    a Dense layer can follow directly. Backward: dx[n, c, h, w] = dy[n, c] / (H*W).
    """

    op = "global_avg_pool2d"

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """x (N, C, H, W) floats -> y (N, C)."""
        check_input(x, 4, self)
        return self.kernel_forward(x, training)
