"""Finite-difference gradient checking for layers and models.

For a scalar L(x, theta), the centred difference
    dL/dz ~ (L(z + eps) - L(z - eps)) / (2 eps)
has error O(eps^2); in float64 with eps = 1e-6 it agrees with a correct
analytic gradient to about 1e-9 relative. Without a loss function the
scalar is L = sum(y * R) for a fixed random R, so that every output element
matters (a plain sum would hide bugs in batch norm, whose output sums to a
constant).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from npcnn.nn.module import Layer, inference_backward


@dataclass
class GradcheckResult:
    """Relative error ||analytic - numeric|| / max(||analytic||, ||numeric||) per tensor."""

    errors: dict[str, float] = field(default_factory=dict)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def max_error(self) -> float:
        return max(self.errors.values(), default=0.0)

    def passed(self, tol: float = 1e-6) -> bool:
        return self.max_error < tol

    def __str__(self) -> str:
        lines = [f"{'tensor':<24}{'checked':>9}{'rel. error':>14}"]
        lines += [f"{k:<24}{self.checked[k]:>9}{v:>14.2e}" for k, v in self.errors.items()]
        return "\n".join(lines)


def _generators(model: Layer) -> Iterator[np.random.Generator]:
    for _, layer in model.named_layers():
        for value in vars(layer).values():
            if isinstance(value, np.random.Generator):
                yield value


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / max(||a||, ||b||); the absolute difference when both are ~0."""
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    diff = float(np.linalg.norm(a - b))
    return diff / scale if scale > 1e-10 else diff


def gradcheck(
    layer: Layer,
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    loss_fn: object | None = None,
    training: bool = True,
    eps: float = 1e-6,
    seed: int = 0,
    max_elements: int | None = 256,
) -> GradcheckResult:
    """Compare `layer`'s backward with centred finite differences, in float64.

    Args:
        layer: any layer or model; it is copied, the original is not touched.
        x: an input batch; y: labels when `loss_fn` (e.g. CrossEntropyLoss()) is given.
        training: run the forward passes in training mode (batch statistics,
            dropout with a mask fixed across all evaluations) or inference mode.
        eps: the finite-difference step.
        max_elements: check at most this many randomly chosen elements per
            tensor (None: all of them).
    Returns:
        A GradcheckResult with an error for "input" and each named parameter.
    """
    model = copy.deepcopy(layer).astype(np.float64)
    x = np.array(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    # Random layers (dropout) must draw the same mask at every evaluation.
    generators = list(_generators(model))
    rng_states = [g.bit_generator.state for g in generators]

    projection: np.ndarray | None = None

    def evaluate(inp: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal projection
        for g, state in zip(generators, rng_states, strict=True):
            g.bit_generator.state = state
        out = model.forward(inp, training=training)
        if loss_fn is not None:
            return loss_fn.forward(out, y), None  # type: ignore[attr-defined]
        if projection is None:
            projection = rng.normal(size=out.shape)
        return float(np.sum(out * projection)), projection

    model.zero_grad()
    with inference_backward():  # lets training=False differentiate the inference function
        _, dout = evaluate(x)
        if loss_fn is not None:
            dout = loss_fn.backward()  # type: ignore[attr-defined]
        dx = model.backward(dout)

    tensors: list[tuple[str, np.ndarray, np.ndarray]] = [("input", x, dx)]
    tensors += [(name, p.data, p.grad.copy()) for name, p in model.named_parameters()]
    result = GradcheckResult()
    for name, values, analytic in tensors:
        flat = values.reshape(-1)
        count = flat.size if max_elements is None else min(flat.size, max_elements)
        picks = rng.choice(flat.size, size=count, replace=False)
        numeric = np.empty(count)
        for k, idx in enumerate(picks):
            original = flat[idx]
            flat[idx] = original + eps
            plus = evaluate(x)[0]
            flat[idx] = original - eps
            minus = evaluate(x)[0]
            flat[idx] = original
            numeric[k] = (plus - minus) / (2 * eps)
        result.errors[name] = relative_error(analytic.reshape(-1)[picks], numeric)
        result.checked[name] = count
    return result
