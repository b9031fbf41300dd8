"""Stochastic gradient descent with PyTorch's momentum, Nesterov and weight-decay rules."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from npcnn.nn.module import Parameter
from npcnn.optim.optimizer import Optimizer
from npcnn.runtime.memory import scratch


class SGD(Optimizer):
    """For each parameter p with gradient g (as torch.optim.SGD):

    g <- g + weight_decay * p
    b <- g on the first step, else momentum * b + (1 - dampening) * g
    g <- g + momentum * b if nesterov else b          (when momentum != 0)
    p <- p - lr * g

    Raises ValueError for a hyperparameter out of its range (lr finite and
    >= 0, momentum in [0, 1), dampening in [0, 1], weight_decay finite and
    >= 0; see `HYPERPARAMETER_RANGES`), e.g. "Invalid learning rate: nan ...".
    """

    _state_names = ("momentum_buffer",)
    _hyper_names = ("lr", "momentum", "dampening", "weight_decay", "nesterov")

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(params, lr)
        # (each hyperparameter is checked as it is set: Optimizer.__setattr__)
        self.momentum = momentum
        self.dampening = dampening
        self.weight_decay = weight_decay
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires momentum > 0 and dampening = 0")
        self.nesterov = bool(nesterov)

    def step(self) -> None:
        for p, st in zip(self.params, self.state, strict=True):
            g = p.grad
            # Temporaries in reused buffers (`scratch`): freshly allocated, the dense
            # layers' big ones cost a page fault per 4 kB every step.
            tmp = scratch("optimizer", p.shape, p.dtype)
            if self.weight_decay:  # g + weight_decay * p
                g = np.multiply(p.data, self.weight_decay, out=scratch("decayed", p.shape, p.dtype))
                g += p.grad
            if self.momentum:
                buf = st.get("momentum_buffer")
                if buf is None:
                    buf = st["momentum_buffer"] = np.array(g, dtype=p.dtype, copy=True)
                else:
                    buf *= self.momentum
                    buf += np.multiply(g, 1 - self.dampening, out=tmp)
                if self.nesterov:  # g + momentum * buf
                    g = np.add(g, np.multiply(buf, self.momentum, out=tmp), out=tmp)
                else:
                    g = buf
            p.data -= np.multiply(g, p.dtype.type(self.lr), out=tmp)
