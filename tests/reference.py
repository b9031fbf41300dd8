"""Naive, obviously-right reference implementations used to check the fast layers.

Every function here loops over the batch, the channels and the output
positions in plain Python, doing one window at a time, so that each line can
be checked against the textbook definition. They are slow; tests keep the
sizes small. All arrays are NCHW; weights follow PyTorch, (out, in, kh, kw).

Conventions shared with PyTorch:
- output size along an axis: (size + 2 * pad - kernel) // stride + 1;
- max pooling pads with -inf and sends the gradient of each window to its
  first maximum in row-major order; overlapping windows accumulate;
- average pooling pads with zeros and divides by kh * kw (count_include_pad);
- batch norm normalises with the biased batch variance and tracks the
  unbiased one in running_var.
"""

from __future__ import annotations

import numpy as np

Pair = tuple[int, int]


def _pair(value: int | Pair) -> Pair:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def out_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Number of window positions along one axis (no ceil mode)."""
    return (size + 2 * pad - kernel) // stride + 1


def _pad(x: np.ndarray, pad: Pair, value: float = 0.0) -> np.ndarray:
    ph, pw = pad
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def conv2d_forward(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    stride: int | Pair = 1,
    padding: int | Pair = 0,
) -> np.ndarray:
    """y[n, f, i, j] = b[f] + sum_{c, u, v} w[f, c, u, v] * xpad[n, c, i*sh + u, j*sw + v]."""
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    n_batch, n_in, h, wd = x.shape
    n_out, _, kh, kw = w.shape
    ho, wo = out_size(h, kh, sh, ph), out_size(wd, kw, sw, pw)
    xp = _pad(x.astype(np.float64), (ph, pw))
    y = np.zeros((n_batch, n_out, ho, wo))
    for n in range(n_batch):
        for f in range(n_out):
            for i in range(ho):
                for j in range(wo):
                    total = 0.0 if b is None else float(b[f])
                    for c in range(n_in):
                        window = xp[n, c, i * sh : i * sh + kh, j * sw : j * sw + kw]
                        total += float(np.sum(window * w[f, c]))
                    y[n, f, i, j] = total
    return y


def conv2d_backward(
    x: np.ndarray,
    w: np.ndarray,
    dy: np.ndarray,
    stride: int | Pair = 1,
    padding: int | Pair = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients (dx, dw, db) of conv2d_forward, by scattering each output's gradient.

    Every output y[n, f, i, j] touched the window xpad[n, :, i*sh : i*sh+kh, j*sw : j*sw+kw]
    with weights w[f]; so it adds dy * w[f] into that window of dxpad, dy * window
    into dw[f], and dy into db[f]. dx is dxpad without its padding.
    """
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    n_batch, n_in, h, wd = x.shape
    n_out, _, kh, kw = w.shape
    _, _, ho, wo = dy.shape
    xp = _pad(x.astype(np.float64), (ph, pw))
    dxp = np.zeros_like(xp)
    dw = np.zeros(w.shape)
    db = np.zeros(n_out)
    for n in range(n_batch):
        for f in range(n_out):
            for i in range(ho):
                for j in range(wo):
                    g = float(dy[n, f, i, j])
                    db[f] += g
                    for c in range(n_in):
                        rows = slice(i * sh, i * sh + kh)
                        cols = slice(j * sw, j * sw + kw)
                        dxp[n, c, rows, cols] += g * w[f, c]
                        dw[f, c] += g * xp[n, c, rows, cols]
    dx = dxp[:, :, ph : ph + h, pw : pw + wd]
    return dx, dw, db


def maxpool2d_forward(
    x: np.ndarray, kernel: int | Pair, stride: int | Pair | None = None, padding: int | Pair = 0
) -> np.ndarray:
    """y[n, c, i, j] = max of the window of x padded with -inf."""
    y, _ = _maxpool_with_argmax(x, kernel, stride, padding)
    return y


def maxpool2d_backward(
    x: np.ndarray,
    dy: np.ndarray,
    kernel: int | Pair,
    stride: int | Pair | None = None,
    padding: int | Pair = 0,
) -> np.ndarray:
    """dx: each dy[n, c, i, j] goes to the first maximum (row-major) of its window.

    Overlapping windows that pick the same element add their gradients.
    """
    ph, pw = _pair(padding)
    _, _, h, wd = x.shape
    _, where = _maxpool_with_argmax(x, kernel, stride, padding)
    dxp = np.zeros((x.shape[0], x.shape[1], h + 2 * ph, wd + 2 * pw))
    n_batch, n_ch, ho, wo = dy.shape
    for n in range(n_batch):
        for c in range(n_ch):
            for i in range(ho):
                for j in range(wo):
                    r, s = where[n, c, i, j]
                    dxp[n, c, r, s] += dy[n, c, i, j]
    return dxp[:, :, ph : ph + h, pw : pw + wd]


def _maxpool_with_argmax(
    x: np.ndarray, kernel: int | Pair, stride: int | Pair | None, padding: int | Pair
) -> tuple[np.ndarray, np.ndarray]:
    """Max of each window and the padded (row, col) of its first maximum."""
    kh, kw = _pair(kernel)
    sh, sw = _pair(kernel if stride is None else stride)
    ph, pw = _pair(padding)
    n_batch, n_ch, h, wd = x.shape
    ho, wo = out_size(h, kh, sh, ph), out_size(wd, kw, sw, pw)
    xp = _pad(x.astype(np.float64), (ph, pw), value=-np.inf)
    y = np.zeros((n_batch, n_ch, ho, wo))
    where = np.zeros((n_batch, n_ch, ho, wo, 2), dtype=np.int64)
    for n in range(n_batch):
        for c in range(n_ch):
            for i in range(ho):
                for j in range(wo):
                    best = -np.inf
                    best_at = (-1, -1)
                    for u in range(kh):
                        for v in range(kw):
                            value = xp[n, c, i * sh + u, j * sw + v]
                            # Strictly greater: ties keep the first one seen.
                            if value > best or best_at == (-1, -1):
                                best = value
                                best_at = (i * sh + u, j * sw + v)
                    y[n, c, i, j] = best
                    where[n, c, i, j] = best_at
    return y, where


def avgpool2d_forward(
    x: np.ndarray, kernel: int | Pair, stride: int | Pair | None = None, padding: int | Pair = 0
) -> np.ndarray:
    """y[n, c, i, j] = sum of the zero-padded window / (kh * kw)."""
    kh, kw = _pair(kernel)
    sh, sw = _pair(kernel if stride is None else stride)
    ph, pw = _pair(padding)
    n_batch, n_ch, h, wd = x.shape
    ho, wo = out_size(h, kh, sh, ph), out_size(wd, kw, sw, pw)
    xp = _pad(x.astype(np.float64), (ph, pw))
    y = np.zeros((n_batch, n_ch, ho, wo))
    for n in range(n_batch):
        for c in range(n_ch):
            for i in range(ho):
                for j in range(wo):
                    window = xp[n, c, i * sh : i * sh + kh, j * sw : j * sw + kw]
                    y[n, c, i, j] = np.sum(window) / (kh * kw)
    return y


def avgpool2d_backward(
    x: np.ndarray,
    dy: np.ndarray,
    kernel: int | Pair,
    stride: int | Pair | None = None,
    padding: int | Pair = 0,
) -> np.ndarray:
    """dx: each dy[n, c, i, j] / (kh * kw) is added to every element of its window."""
    kh, kw = _pair(kernel)
    sh, sw = _pair(kernel if stride is None else stride)
    ph, pw = _pair(padding)
    _, _, h, wd = x.shape
    n_batch, n_ch, ho, wo = dy.shape
    dxp = np.zeros((x.shape[0], x.shape[1], h + 2 * ph, wd + 2 * pw))
    for n in range(n_batch):
        for c in range(n_ch):
            for i in range(ho):
                for j in range(wo):
                    share = dy[n, c, i, j] / (kh * kw)
                    dxp[n, c, i * sh : i * sh + kh, j * sw : j * sw + kw] += share
    return dxp[:, :, ph : ph + h, pw : pw + wd]


def batchnorm_train_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    eps: float = 1e-5,
    momentum: float = 0.1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training-mode batch norm over (N, F) or (N, C, H, W); returns (y, new_mean, new_var).

    For each feature/channel c, over the m values x_k of that channel in the batch:
    mean = sum x_k / m, var = sum (x_k - mean)^2 / m (biased, used to normalise),
    y = gamma * (x - mean) / sqrt(var + eps) + beta;
    running_mean <- (1 - momentum) * running_mean + momentum * mean,
    running_var <- (1 - momentum) * running_var + momentum * var * m / (m - 1).
    """
    x = x.astype(np.float64)
    n_ch = x.shape[1]
    y = np.zeros_like(x)
    new_mean = np.zeros(n_ch)
    new_var = np.zeros(n_ch)
    for c in range(n_ch):
        values = [float(v) for v in x[:, c].ravel()]
        m = len(values)
        mean = sum(values) / m
        var = sum((v - mean) ** 2 for v in values) / m
        y[:, c] = gamma[c] * (x[:, c] - mean) / np.sqrt(var + eps) + beta[c]
        new_mean[c] = (1 - momentum) * running_mean[c] + momentum * mean
        new_var[c] = (1 - momentum) * running_var[c] + momentum * var * m / (m - 1)
    return y, new_mean, new_var
