"""Batch norm, ReLU and max pooling as one pass, which `Sequential` runs for these layers.

The block BatchNorm2D -> ReLU -> MaxPool2D (or -> MaxPool2D -> ReLU) ends
the first stage of most small CNNs, on its biggest images. Each of the three
layers is a few cheap operations per value, so their cost is moving memory.
Run one by one, a training step writes the normalised image and its
centred copy, reads them into the pool, writes the pool's full-size
gradient image and reads it back into batch norm. Fused, the full-size
image is read twice forward (statistics, then the windows) and the
full-size gradient is written once backward.

Why it is exact. Per channel, training batch norm is an affine map

    z = s * x + t    with s = weight / sqrt(var + eps),  t = bias - s * mean,

and an affine map with s > 0 is increasing, so the window's maximum of z is
z at the window's maximum of x. With s < 0 it is decreasing, and the
maximum of z is at the minimum of x, the maximum of -x. So the pool runs
over sign(s) * x, batch norm and ReLU are applied to each window's winner
only, and with the same statistics the output is the one the layers give
one by one, bit for bit: the winner goes through the same floating-point
operations, and rounding is monotone, so its z is the largest rounded z of
the window. (When training, the statistics' sums are added in chunks of
another size than batch norm's own, so they may differ in the last bits.) Ties go to the
first position in row-major order, as in MaxPool2D. When training, channels
with weight = 0 (s = 0, every z equal) are left to the layers one by one,
where the first position of the window wins the tie of z. Inference works
the same way with the running statistics.

Backward, with dp the gradient at the output: each window's gradient goes
to its winner's z when z > 0 (ReLU) and nowhere else, so batch norm's sums
(batchnorm.py) run over the pooled arrays alone:

    dbias = sum of dp,   dweight = invstd * sum of dp * (winner - mean)

and its input gradient dx = g * dz - shift - slope * (x - mean) (g, shift
and slope per channel, as in batchnorm.py) is the affine map of x on the
right, plus g * dp added at every winner.

Batch norm followed by a ReLU alone (`NormReLU`) is fused the same way: the
ReLU runs in batch norm's pass over each chunk, and backward takes its mask
from the output (y > 0) and x - mean from the input, so forward writes only
the output instead of the output, the ReLU's mask and batch norm's centred
copy.
"""

from __future__ import annotations

import numpy as np

from npcnn.nn.activations import ReLU
from npcnn.nn.batchnorm import BatchNorm2D, _BatchNorm, chunk_moment_sums
from npcnn.nn.layout import from_channels_last, to_channels_last
from npcnn.nn.module import keeps_cache
from npcnn.nn.pooling import MaxPool2D
from npcnn.runtime import memory
from npcnn.runtime.memory import scratch
from npcnn.runtime.threads import STREAM_CHUNK_BYTES, chunk_ranges, parallel_map


class NormReLUPool:
    """relu(max_pool(batch_norm(x))) with `norm`'s and `pool`'s parameters and buffers.

    Training with nonzero norm weights, and inference, run fused (see the module
    docstring; in inference, with the running statistics, a tie of z may go to
    any of its positions: no gradient follows it). Otherwise, for an empty batch
    and for a backward in inference mode, the layers run one after the other,
    the ReLU folded into the pool.
    """

    def __init__(self, norm: BatchNorm2D, pool: MaxPool2D) -> None:
        self.norm, self.pool = norm, pool
        self._cache: tuple | None = None  # set by a fused forward, for backward

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._cache = None  # let the previous step's memory serve this one (memory.py)
        norm, pool = self.norm, self.pool
        n, c, h, w = x.shape
        # Inference needs no winner for backward: ties of z may go to any position.
        inference = not keeps_cache(training)
        if not (n and (inference or (training and norm.weight.data.all() and n * h * w >= 2))):
            return pool.forward_then_relu(norm.forward(x, training), training)
        x_cl = to_channels_last(x.astype(norm.weight.data.dtype, copy=False))
        x2 = x_cl.reshape(n, -1)
        # The sign of s is the weight's: the windows can be found before the statistics.
        sign = np.where(norm.weight.data < 0, -1, 1).astype(x_cl.dtype)
        flip = bool((sign < 0).any())
        (ph, pw), ho, wo = pool.padding, *pool.output_size(h, w)
        padded = ph > 0 or pw > 0
        if training:
            rough, centre = norm._rough_centre(x2, h * w)
        winners = memory.empty((n, ho, wo, c), x_cl.dtype)  # each window's winner of x
        offsets = len(pool._offsets())
        codes = None
        if not inference:
            codes = memory.empty((n, ho, wo, c), np.uint8 if offsets < 255 else np.uint16)

        def statistics_and_windows(rows: range) -> tuple[np.ndarray, np.ndarray] | None:
            sl = slice(rows.start, rows.stop)
            sums = chunk_moment_sums(x2[sl], c, centre) if training else None
            xb = x_cl[sl]
            if padded or flip:  # sign * x, padded with -inf, in a per-thread buffer
                signed = scratch("signed", (len(rows), h + 2 * ph, w + 2 * pw, c), xb.dtype)
                if padded:
                    signed.fill(-np.inf)
                np.multiply(xb, sign, out=signed[:, ph : ph + h, pw : pw + w])
                xb = signed
            pool._max_chunk(xb, winners[sl], None if codes is None else codes[sl])
            if flip:
                winners[sl] *= sign
            return sums

        chunks = chunk_ranges(n, x_cl[:1].nbytes * 2 + winners[:1].nbytes)
        sums = parallel_map(statistics_and_windows, chunks)
        if training:
            mean, var = norm._statistics_from_sums(
                rough, sum(s[0] for s in sums), sum(s[1] for s in sums), n * h * w
            )
        else:
            mean, var = norm._running_statistics()
        invstd = norm._inverse_std(var)
        scale = norm.weight.data * invstd
        # Per-channel vectors tiled to a whole image: NumPy then runs along image rows.
        mean_t, scale_t = np.tile(mean, (ho, wo, 1)), np.tile(scale, (ho, wo, 1))
        bias_t = np.tile(norm.bias.data if training else norm.bias.data - mean * scale, (ho, wo, 1))
        zeros = np.zeros_like(mean_t)  # max(z, zeros) runs faster than max(z, 0)
        y = memory.empty((n, ho, wo, c), x_cl.dtype)

        def norm_and_relu(rows: range) -> None:  # z = s * x + t at the winners, as batch norm does
            sl = slice(rows.start, rows.stop)
            yb = y[sl]
            if training:
                np.subtract(winners[sl], mean_t, out=yb)
                yb *= scale_t
            else:
                np.multiply(winners[sl], scale_t, out=yb)
            yb += bias_t
            np.maximum(yb, zeros, out=yb)

        parallel_map(norm_and_relu, chunk_ranges(n, 2 * y[:1].nbytes, STREAM_CHUNK_BYTES))
        if not inference:
            self._cache = (x_cl, mean, invstd, winners, codes, y)
        return from_channels_last(y)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy (N, C, Ho, Wo) -> dx (N, C, H, W); adds into the norm's weight.grad and bias.grad."""
        if self._cache is None:
            return self.norm.backward(self.pool.backward(dy))
        x_cl, mean, invstd, winners, codes, y = self._cache
        norm, pool = self.norm, self.pool
        dy_cl = to_channels_last(dy.astype(x_cl.dtype, copy=False))
        if dy_cl.shape != codes.shape:
            raise ValueError(f"NormReLUPool.backward: dy has shape {dy.shape}")
        n, h, w, c = x_cl.shape
        _, ho, wo, _ = codes.shape
        # The gradient that reaches z: dp where the ReLU let it through (y > 0), else 0.
        dz = memory.empty(dy_cl.shape, dy_cl.dtype)
        mean_row = np.tile(mean, ho * wo)

        def gradient_sums(rows: range) -> tuple[np.ndarray, np.ndarray]:
            sl, b = slice(rows.start, rows.stop), len(rows)
            np.multiply(dy_cl[sl], y[sl] > 0, out=dz[sl])
            return chunk_moment_sums(
                winners[sl].reshape(b, -1), c, centre=mean_row, weights=dz[sl].reshape(b, -1)
            )

        sums = parallel_map(gradient_sums, chunk_ranges(n, 4 * dz[:1].nbytes, 2 << 20))
        g, shift, slope = norm._add_grads(
            sum(s[0] for s in sums), sum(s[1] for s in sums), invstd, n * h * w
        )
        (ph, pw), (kh, kw), (sh, sw) = pool.padding, pool.kernel_size, pool.stride
        # Windows that tile the input exactly put every position in one window.
        tiled = (sh, sw) == (kh, kw) and (ph, pw) == (0, 0) and (h, w) == (ho * kh, wo * kw)
        dxp = memory.empty((n, h + 2 * ph, w + 2 * pw, c), x_cl.dtype)
        mean_t, shift_t, slope_t = (np.tile(v, (h, w, 1)) for v in (mean, shift, slope))

        def run(rows: range) -> None:
            sl = slice(rows.start, rows.stop)
            dxb = dxp[sl]
            # dx = g * dz - shift - slope * (x - mean), with dz = dp at each winner.
            if not tiled:
                dxb.fill(0)
            pool._route_chunk(dxb, np.multiply(dz[sl], g), codes[sl], add=not tiled)
            inner = dxb[:, ph : ph + h, pw : pw + w]
            affine = scratch("affine", inner.shape, inner.dtype)
            np.subtract(x_cl[sl], mean_t, out=affine)
            affine *= slope_t
            inner -= affine
            inner -= shift_t

        parallel_map(run, chunk_ranges(n, 3 * x_cl[:1].nbytes + 2 * dz[:1].nbytes))
        return from_channels_last(dxp[:, ph : ph + h, pw : pw + w])


class NormReLU:
    """relu(batch_norm(x)) with `norm`'s parameters and buffers: one pass (see the
    module docstring), or the two layers one after the other for a backward in
    inference mode."""

    def __init__(self, norm: _BatchNorm, relu: ReLU) -> None:
        self.norm, self.relu = norm, relu
        self._cache: tuple | None = None  # set by a fused forward, for backward

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._cache = None  # let the previous step's memory serve this one (memory.py)
        norm = self.norm
        # A backward in inference mode, or an empty batch (which has no statistics).
        if (not training and keeps_cache(training)) or len(x) == 0:
            return self.relu.forward(norm.forward(x, training), training)
        x2, reps = norm._to_rows(x.astype(norm.weight.data.dtype, copy=False))
        mean, var = norm._statistics(x2, reps, x.shape, training)
        invstd = norm._inverse_std(var)
        scale = norm.weight.data * invstd
        mean_t, scale_t = np.tile(mean, reps), np.tile(scale, reps)
        bias_t = np.tile(norm.bias.data if training else norm.bias.data - mean * scale, reps)
        zeros = np.zeros_like(mean_t)  # max(z, zeros) runs faster than max(z, 0)
        y = memory.empty_like(x2)

        def run(rows: range) -> None:  # y = relu(batch_norm(x)), as the layers compute it
            sl = slice(rows.start, rows.stop)
            yb = y[sl]
            if training:  # (x - mean) * scale + bias
                np.subtract(x2[sl], mean_t, out=yb)
                yb *= scale_t
            else:  # x * scale + (bias - mean * scale)
                np.multiply(x2[sl], scale_t, out=yb)
            yb += bias_t
            np.maximum(yb, zeros, out=yb)

        parallel_map(run, chunk_ranges(len(x2), 2 * x2[:1].nbytes, STREAM_CHUNK_BYTES))
        if training:
            self._cache = (x2, reps, mean_t, invstd, y)
        return norm._from_rows(y, x.shape)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy of the input's shape -> dx; adds into the norm's weight.grad and bias.grad."""
        if self._cache is None:
            return self.norm.backward(self.relu.backward(dy))
        x2, reps, mean_t, invstd, y = self._cache
        norm, c = self.norm, self.norm.num_features
        dy2, _ = norm._to_rows(dy.astype(x2.dtype, copy=False))
        if dy2.shape != y.shape:
            raise ValueError(f"NormReLU.backward: dy has shape {dy.shape}")
        dz = memory.empty_like(dy2)  # the gradient at batch norm's output

        def gradient_sums(rows: range) -> tuple[np.ndarray, np.ndarray]:
            sl = slice(rows.start, rows.stop)
            np.multiply(dy2[sl], y[sl] > 0, out=dz[sl])
            return chunk_moment_sums(x2[sl], c, centre=mean_t, weights=dz[sl])

        chunks = chunk_ranges(len(x2), 3 * x2[:1].nbytes, STREAM_CHUNK_BYTES)
        sums = parallel_map(gradient_sums, chunks)
        g, shift, slope = norm._add_grads(
            sum(s[0] for s in sums), sum(s[1] for s in sums), invstd, len(x2) * reps
        )
        g_t, shift_t, slope_t = (np.tile(v, reps) for v in (g, shift, slope))
        dx = dz  # overwritten chunk by chunk, each after its last use

        def run(rows: range) -> None:  # dx = g * dz - shift - slope * (x - mean)
            sl = slice(rows.start, rows.stop)
            centred = np.subtract(x2[sl], mean_t, out=scratch("centred", dz[sl].shape, dz.dtype))
            centred *= slope_t
            dx[sl] *= g_t
            dx[sl] -= shift_t
            dx[sl] -= centred

        parallel_map(run, chunks)
        return norm._from_rows(dx, dy.shape)
