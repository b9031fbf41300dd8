"""Adam and AdamW, with torch.optim's update rules and bias correction."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from npcnn.nn.module import Parameter
from npcnn.optim.optimizer import Optimizer
from npcnn.runtime.memory import scratch


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015), as torch.optim.Adam. For each parameter p, at step t:

    g <- g + weight_decay * p                 (L2 penalty through the gradient)
    m <- beta1 * m + (1 - beta1) * g
    v <- beta2 * v + (1 - beta2) * g^2
    p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    Raises ValueError for a hyperparameter out of its range (lr, eps and
    weight_decay finite and >= 0, betas in [0, 1); see `HYPERPARAMETER_RANGES`).
    """

    _state_names = ("exp_avg", "exp_avg_sq", "step")
    _nonnegative_states = ("exp_avg_sq",)
    _hyper_names = ("lr", "betas", "eps", "weight_decay")
    _decoupled = False

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        # (each hyperparameter is checked as it is set: Optimizer.__setattr__)
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay

    def step(self) -> None:
        beta1, beta2 = self.betas
        for p, st in zip(self.params, self.state, strict=True):
            if not st:
                st["exp_avg"] = np.zeros_like(p.data)
                st["exp_avg_sq"] = np.zeros_like(p.data)
                st["step"] = np.array(0, dtype=np.int64)
            st["step"] += 1
            t = int(st["step"])
            g = p.grad
            # Temporaries in reused buffers (`scratch`): freshly allocated, the dense
            # layers' big ones cost a page fault per 4 kB every step.
            tmp = scratch("optimizer", p.shape, p.dtype)
            if self.weight_decay:
                if self._decoupled:
                    p.data *= p.dtype.type(1 - self.lr * self.weight_decay)
                else:  # g + weight_decay * p
                    g = np.multiply(
                        p.data, self.weight_decay, out=scratch("decayed", p.shape, p.dtype)
                    )
                    g += p.grad
            m, v = st["exp_avg"], st["exp_avg_sq"]
            m *= beta1
            m += np.multiply(g, 1 - beta1, out=tmp)
            v *= beta2
            np.multiply(g, 1 - beta2, out=tmp)
            tmp *= g
            v += tmp
            denom = np.sqrt(v, out=scratch("denominator", p.shape, p.dtype))
            denom /= p.dtype.type(math.sqrt(1 - beta2**t))
            denom += p.dtype.type(self.eps)
            step_size = self.lr / (1 - beta1**t)
            np.multiply(m, p.dtype.type(step_size), out=tmp)
            tmp /= denom
            p.data -= tmp


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019), as torch.optim.AdamW:
    p <- p * (1 - lr * weight_decay) before the Adam update, which then uses the raw gradient.
    """

    _decoupled = True

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)
