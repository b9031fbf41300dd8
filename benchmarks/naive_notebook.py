"""The notebook's algorithm written plainly with Python loops: the benchmark's baseline.

The original notebook trains a small CNN on 1,000 MNIST digits with layers
written as Python loops over filters and output pixels, vectorised only over
the batch. This module keeps that style and that layout (activations stored
as `(H, W, C, N)`, the batch last and contiguous so each loop body is one
vector operation over the batch) but fixes the notebook's bugs where they
would change the work or the result:

- the second convolution's input gradient is really computed (the notebook
  returned an array of zeros, so the first convolution never learned);
- batch norm keeps running statistics and inference uses them;
- softmax subtracts the row maximum; max-pool routes the gradient to the
  first maximum of each window, as PyTorch does;
- SGD has PyTorch's momentum: `buf = momentum * buf + grad; p -= lr * buf`.

The network (NCHW semantics, PyTorch's parameter names and layouts, so a
`state_dict` of npcnn or PyTorch loads unchanged):

    0 conv 3x3 pad 1, 1 -> 16, no bias      (N, 1, 28, 28) -> (N, 16, 28, 28)
    1 batchnorm2d(16), 2 relu
    3 maxpool 2                             -> (N, 16, 14, 14)
    4 conv 4x4 pad 1, 16 -> 18, no bias     -> (N, 18, 13, 13)
    5 batchnorm2d(18), 6 relu
    7 flatten (C, H, W order)               -> (N, 3042)
    8 dense 3042 -> 20, no bias
    9 batchnorm1d(20), 10 relu
    11 dense 20 -> 10 with bias             -> logits (N, 10)
    softmax cross-entropy (mean over the batch)

The first convolution's input gradient is not computed (nothing uses it),
matching `Sequential.backward(dy, need_input_grad=False)` and PyTorch with an
input that does not require a gradient.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-5
BN_MOMENTUM = 0.1

# Name, shape of every trainable parameter, in PyTorch's layout.
PARAM_SHAPES: dict[str, tuple[int, ...]] = {
    "0.weight": (16, 1, 3, 3),
    "1.weight": (16,),
    "1.bias": (16,),
    "4.weight": (18, 16, 4, 4),
    "5.weight": (18,),
    "5.bias": (18,),
    "8.weight": (20, 3042),
    "9.weight": (20,),
    "9.bias": (20,),
    "11.weight": (10, 20),
    "11.bias": (10,),
}
BN_LAYERS: dict[str, int] = {"1": 16, "5": 18, "9": 20}


def init_state(rng: np.random.Generator, dtype: type = np.float32) -> dict[str, np.ndarray]:
    """Return a fresh state dict: He-normal weights, gamma 1, beta 0, running stats 0/1."""
    state: dict[str, np.ndarray] = {}
    for name, shape in PARAM_SHAPES.items():
        layer, kind = name.split(".")
        if layer in BN_LAYERS:
            fill = 1.0 if kind == "weight" else 0.0
            state[name] = np.full(shape, fill, dtype=dtype)
        elif kind == "bias":
            state[name] = np.zeros(shape, dtype=dtype)
        else:
            fan_in = int(np.prod(shape[1:]))
            state[name] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)
    for layer, features in BN_LAYERS.items():
        state[f"{layer}.running_mean"] = np.zeros(features, dtype=dtype)
        state[f"{layer}.running_var"] = np.ones(features, dtype=dtype)
        state[f"{layer}.num_batches_tracked"] = np.zeros((), dtype=np.int64)
    return state


# --- layers in the notebook's (H, W, C, N) layout ------------------------------


def conv_forward(x: np.ndarray, w: np.ndarray, pad: int) -> np.ndarray:
    """Stride-1 convolution with loops over filters and output pixels.

    x: (H, W, C, N); w: (f, f, C, K). Returns (Ho, Wo, K, N) with
    Ho = H + 2 pad - f + 1 and z[i, j, k, n] = sum_{a,b,c} xp[i+a, j+b, c, n] w[a, b, c, k].
    """
    xp = np.pad(x, ((pad, pad), (pad, pad), (0, 0), (0, 0)))
    f, _, channels, filters = w.shape
    out_h, out_w = xp.shape[0] - f + 1, xp.shape[1] - f + 1
    z = np.zeros((out_h, out_w, filters, x.shape[3]), dtype=x.dtype)
    for k in range(filters):
        wk = w[:, :, :, k].reshape(f, f, channels, 1)
        for i in range(out_h):
            for j in range(out_w):
                z[i, j, k, :] = np.sum(xp[i : i + f, j : j + f, :, :] * wk, axis=(0, 1, 2))
    return z


def conv_backward(
    dz: np.ndarray, w: np.ndarray, x: np.ndarray, pad: int, need_input_grad: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Gradients of `conv_forward`: returns (dw (f, f, C, K), dx (H, W, C, N) or None)."""
    xp = np.pad(x, ((pad, pad), (pad, pad), (0, 0), (0, 0)))
    f, _, channels, filters = w.shape
    out_h, out_w = dz.shape[:2]
    dw = np.zeros_like(w)
    dxp = np.zeros_like(xp) if need_input_grad else None
    for k in range(filters):
        wk = w[:, :, :, k].reshape(f, f, channels, 1)
        for i in range(out_h):
            for j in range(out_w):
                g = dz[i, j, k, :]
                dw[:, :, :, k] += np.sum(xp[i : i + f, j : j + f, :, :] * g, axis=3)
                if dxp is not None:
                    dxp[i : i + f, j : j + f, :, :] += wk * g
    if dxp is None:
        return dw, None
    return dw, dxp[pad : dxp.shape[0] - pad, pad : dxp.shape[1] - pad]


def pool_forward(x: np.ndarray, f: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Max-pool, window = stride = f, loops over channels and output pixels.

    x: (H, W, C, N) -> (y (H//f, W//f, C, N), argmax (H//f, W//f, C, N) index in the window).
    """
    out_h, out_w, channels, n = x.shape[0] // f, x.shape[1] // f, x.shape[2], x.shape[3]
    y = np.zeros((out_h, out_w, channels, n), dtype=x.dtype)
    arg = np.zeros((out_h, out_w, channels, n), dtype=np.intp)
    for c in range(channels):
        for i in range(out_h):
            for j in range(out_w):
                window = x[i * f : i * f + f, j * f : j * f + f, c, :].reshape(f * f, n)
                arg[i, j, c, :] = np.argmax(window, axis=0)
                y[i, j, c, :] = np.max(window, axis=0)
    return y, arg


def pool_backward(dy: np.ndarray, arg: np.ndarray, x_shape: tuple[int, ...], f: int = 2):
    """Send each pooled gradient to the first maximum of its window. Returns (H, W, C, N)."""
    dx = np.zeros(x_shape, dtype=dy.dtype)
    out_h, out_w, channels, n = dy.shape
    batch = np.arange(n)
    for c in range(channels):
        for i in range(out_h):
            for j in range(out_w):
                a = arg[i, j, c, :]
                dx[i * f + a // f, j * f + a % f, c, batch] = dy[i, j, c, :]
    return dx


def bn_forward(x, gamma, beta, axes, training, running_mean, running_var):
    """Batch norm over `axes` (all but the feature axis); running stats updated in place.

    y = gamma (x - mean) / sqrt(var + eps) + beta with the batch's biased variance
    when training, the running statistics otherwise; running_var tracks the
    unbiased variance, as PyTorch does. Returns (y, cache or None).
    """
    shape = [1] * x.ndim
    feature_axis = next(a for a in range(x.ndim) if a not in axes)
    shape[feature_axis] = -1
    if not training:
        inv = 1.0 / np.sqrt(running_var + EPS)
        return (x - running_mean.reshape(shape)) * (gamma * inv).reshape(shape) + beta.reshape(
            shape
        ), None
    count = x.size // x.shape[feature_axis]
    mean = x.mean(axis=axes)
    xmu = x - mean.reshape(shape)
    var = np.mean(xmu**2, axis=axes)
    inv = 1.0 / np.sqrt(var + EPS)
    xhat = xmu * inv.reshape(shape)
    running_mean *= 1 - BN_MOMENTUM
    running_mean += BN_MOMENTUM * mean
    running_var *= 1 - BN_MOMENTUM
    running_var += BN_MOMENTUM * var * count / (count - 1)
    return gamma.reshape(shape) * xhat + beta.reshape(shape), (xhat, inv, shape, axes, count)


def bn_backward(dy, gamma, cache):
    """dx = gamma inv (dy - mean(dy) - xhat mean(dy xhat)); returns (dx, dgamma, dbeta)."""
    xhat, inv, shape, axes, count = cache
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * xhat).sum(axis=axes)
    dx = (gamma * inv).reshape(shape) * (
        dy - (dbeta / count).reshape(shape) - xhat * (dgamma / count).reshape(shape)
    )
    return dx, dgamma, dbeta


# --- the network -----------------------------------------------------------------


class NaiveNotebookNet:
    """The notebook's network and SGD with momentum, in loops.

    `state` uses PyTorch's names and layouts (see `PARAM_SHAPES`); it is
    copied, so the caller's arrays are not changed.
    """

    def __init__(self, state: dict[str, np.ndarray], lr: float = 0.5, momentum: float = 0.9):
        self.state = {k: np.array(v, copy=True) for k, v in state.items()}
        self.lr = lr
        self.momentum = momentum
        self.velocity = {k: np.zeros_like(self.state[k]) for k in PARAM_SHAPES}

    def _bn(self, x: np.ndarray, layer: str, axes: tuple[int, ...], training: bool):
        s = self.state
        return bn_forward(
            x,
            s[f"{layer}.weight"],
            s[f"{layer}.bias"],
            axes,
            training,
            s[f"{layer}.running_mean"],
            s[f"{layer}.running_var"],
        )

    def _forward(self, x: np.ndarray, training: bool):
        s = self.state
        a0 = np.ascontiguousarray(x.transpose(2, 3, 1, 0))  # NCHW -> (H, W, C, N)
        w1 = s["0.weight"].transpose(2, 3, 1, 0)  # (K, C, f, f) -> (f, f, C, K)
        w2 = s["4.weight"].transpose(2, 3, 1, 0)
        z1 = conv_forward(a0, w1, pad=1)
        b1, bn1 = self._bn(z1, "1", (0, 1, 3), training)
        r1 = np.maximum(b1, 0)
        p1, arg = pool_forward(r1)
        z2 = conv_forward(p1, w2, pad=1)
        b2, bn2 = self._bn(z2, "5", (0, 1, 3), training)
        r2 = np.maximum(b2, 0)
        flat = r2.transpose(2, 0, 1, 3).reshape(-1, r2.shape[3]).T  # (N, C*H*W), C-H-W order
        h = flat @ s["8.weight"].T
        hb, bn3 = self._bn(h, "9", (0,), training)
        hr = np.maximum(hb, 0)
        logits = hr @ s["11.weight"].T + s["11.bias"]
        if training:
            for layer in BN_LAYERS:
                s[f"{layer}.num_batches_tracked"] += 1
        cache = (a0, w1, w2, bn1, r1, p1, arg, bn2, r2, flat, bn3, hr)
        return logits, cache

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Inference logits (N, 10) for images x (N, 1, 28, 28), running batch-norm stats."""
        return self._forward(x, training=False)[0]

    def gradients(self, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        """Training forward and backward: (mean cross-entropy, gradient per parameter name)."""
        s = self.state
        logits, cache = self._forward(x, training=True)
        a0, w1, w2, bn1, r1, p1, arg, bn2, r2, flat, bn3, hr = cache
        n = x.shape[0]
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_prob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = float(-log_prob[np.arange(n), y].mean())
        d_logits = np.exp(log_prob)
        d_logits[np.arange(n), y] -= 1
        d_logits /= n

        g: dict[str, np.ndarray] = {}
        g["11.weight"] = d_logits.T @ hr
        g["11.bias"] = d_logits.sum(axis=0)
        d_hb = (d_logits @ s["11.weight"]) * (hr > 0)
        d_h, g["9.weight"], g["9.bias"] = bn_backward(d_hb, s["9.weight"], bn3)
        g["8.weight"] = d_h.T @ flat
        d_flat = d_h @ s["8.weight"]
        h2, w2d, c2, _ = r2.shape
        d_r2 = d_flat.T.reshape(c2, h2, w2d, n).transpose(1, 2, 0, 3)
        d_b2 = d_r2 * (r2 > 0)
        d_z2, g["5.weight"], g["5.bias"] = bn_backward(d_b2, s["5.weight"], bn2)
        d_w2, d_p1 = conv_backward(d_z2, w2, p1, pad=1, need_input_grad=True)
        g["4.weight"] = d_w2.transpose(3, 2, 0, 1)
        d_r1 = pool_backward(d_p1, arg, r1.shape)
        d_b1 = d_r1 * (r1 > 0)
        d_z1, g["1.weight"], g["1.bias"] = bn_backward(d_b1, s["1.weight"], bn1)
        d_w1, _ = conv_backward(d_z1, w1, a0, pad=1, need_input_grad=False)
        g["0.weight"] = d_w1.transpose(3, 2, 0, 1)
        return loss, g

    def sgd_step(self, grads: dict[str, np.ndarray]) -> None:
        """PyTorch's SGD with momentum (no dampening, no weight decay)."""
        for name, grad in grads.items():
            v = self.velocity[name]
            v *= self.momentum
            v += grad
            self.state[name] -= self.lr * v

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """Forward, backward and one SGD step on a batch; returns the loss before the step."""
        loss, grads = self.gradients(x, y)
        self.sgd_step(grads)
        return loss


def notebook_iteration(
    net: NaiveNotebookNet, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray
) -> tuple[float, np.ndarray]:
    """One notebook iteration: a training step on x_train plus inference on x_test.

    Returns (training loss, test logits (N_test, 10)).
    """
    loss = net.train_step(x_train, y_train)
    return loss, net.predict(x_test)
