"""Finite-difference gradient checking for layers and models.

For a scalar L(x, theta) and each checked entry z (of the input or of a
parameter), the centred difference

    n = (L(z + h) - L(z - h)) / (2 h)

differs from a smooth L's derivative by h^2 L'''(z) / 6, plus the rounding
noise of the two evaluations, about u S / h (u = 1.1e-16 in float64, S the
size of the terms summed into L). Without a loss function the scalar is
L = sum(y * R) for a fixed random R, so that every output element matters (a
plain sum would hide bugs in batch norm, whose output sums to a constant).

The verdict, per entry, with a the gradient that backward computed:

    |a - n| <= max(rtol * max(|a|, |n|), atol),   atol = 32 u S / h,

torch.autograd.gradcheck's test with its absolute part set to the rounding
noise, so a gradient that is zero on both sides (a bias before batch norm)
passes, however large the relative error of its noise.

ReLU, max pooling and their ties make L piecewise smooth. When z +- h lies
across a kink, n is off by up to half the jump in slope. Such steps show in
the one-sided differences: (L(z+h) - L(z)) / h and (L(z) - L(z-h)) / h
differ by h L''(z) on a smooth piece, which shrinks with h, but by the jump
across a kink, which does not. So an entry whose sides disagree by more than
the tolerance is measured again with h / 10, then h / 100; if the
disagreement does not shrink with the step, z sits on (or within h / 100 of)
a kink, where L has no derivative: the entry is counted as excluded and left
out of the verdict. Real images hit this often: a blank background makes
whole max-pool windows tie, and every pixel there is on a kink.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from npcnn.nn.module import Layer, inference_backward

#: float64's unit roundoff.
_U = float(np.finfo(np.float64).eps) / 2
#: atol as a multiple of u S / h. A zero gradient's centred difference stays
#: below 2.5 u S / h in the notebook's network (conv and dense biases before
#: batch norm, real and random images, either scalar); the margin is for
#: deeper networks.
NOISE_FACTOR = 32.0
#: The smaller steps tried, as fractions of the first, where an entry's sides disagree.
_RETRIES = (0.1, 0.01)


@dataclass
class GradcheckResult:
    """What :func:`gradcheck` measured, per tensor ("input" and each named parameter).

    ``errors[name]``: the largest relative error of the compared entries,
    max |a - n| / max(|a|, |n|, atol / rtol) (see :func:`entry_errors`; NaN
    when no entry could be compared). ``checked[name]``: entries compared;
    ``excluded[name]``: entries left out because they sit on a kink (ReLU,
    max-pool tie) where L has no derivative. ``atol``: the largest absolute
    tolerance used (the rounding noise at the smallest step taken).
    """

    errors: dict[str, float] = field(default_factory=dict)
    checked: dict[str, int] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)
    rtol: float = 1e-6
    atol: float = 0.0

    @property
    def max_error(self) -> float:
        """The largest of ``errors`` (NaN ones aside); 0.0 when there is none."""
        return max((e for e in self.errors.values() if not math.isnan(e)), default=0.0)

    @property
    def num_checked(self) -> int:
        return sum(self.checked.values())

    @property
    def num_excluded(self) -> int:
        return sum(self.excluded.values())

    def passed(self, tol: float | None = None) -> bool:
        """Whether some entries were compared and every one within ``tol`` (default: rtol)."""
        tol = self.rtol if tol is None else tol
        return self.num_checked > 0 and self.max_error <= tol

    def __str__(self) -> str:
        lines = [f"{'tensor':<24}{'checked':>9}{'excluded':>10}{'rel. error':>14}"]
        for name, error in self.errors.items():
            shown = "-" if math.isnan(error) else f"{error:.2e}"
            lines.append(
                f"{name:<24}{self.checked[name]:>9}{self.excluded.get(name, 0):>10}{shown:>14}"
            )
        return "\n".join(lines)


def _generators(model: Layer) -> Iterator[np.random.Generator]:
    for _, layer in model.named_layers():
        for value in vars(layer).values():
            if isinstance(value, np.random.Generator):
                yield value


def entry_errors(
    analytic: np.ndarray, numeric: np.ndarray, atol: np.ndarray | float, rtol: float
) -> np.ndarray:
    """|a - n| / max(|a|, |n|, atol / rtol) per entry.

    At most rtol exactly when |a - n| <= max(rtol * max(|a|, |n|), atol): a
    relative error, except that gradients smaller than atol / rtol are
    measured against that floor, so that rounding noise on a zero gradient
    stays within the tolerance.
    """
    scale = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), np.divide(atol, rtol))
    return np.abs(analytic - numeric) / scale


@dataclass
class _Differencer:
    """Centred differences of ``loss`` at one entry of ``flat``, stepping past kinks."""

    loss: Callable[[], float]
    base: float  # L at the unperturbed point
    scale: float  # the size of the terms summed into L, for its rounding noise
    eps: float
    rtol: float

    def noise(self, h: float) -> float:
        """The rounding noise of a centred difference with step h."""
        return NOISE_FACTOR * _U * max(self.scale, 1.0) / h

    def at(self, flat: np.ndarray, index: int) -> tuple[float, float] | None:
        """(n, atol) for entry ``index``, or None if it sits on a kink."""
        original = flat[index]
        first = self.eps * max(1.0, abs(original))
        previous_gap = None
        try:
            for h in (first, *(first * r for r in _RETRIES)):
                flat[index] = original + h
                plus = self.loss()
                flat[index] = original - h
                minus = self.loss()
                central = (plus - minus) / (2 * h)
                # |forward - backward difference| / 2: n's error bound across a kink.
                gap = abs(plus - 2 * self.base + minus) / (2 * h)
                atol = self.noise(h)
                if gap <= atol + self.rtol * abs(central):
                    return central, atol
                # Shrinking with the step (5x or more for a 10x smaller one): no kink
                # within h, only curvature, whose error the centring cancels.
                if previous_gap is not None and gap <= previous_gap / 5 + atol:
                    return central, atol
                previous_gap = gap
            return None
        finally:
            flat[index] = original


def gradcheck(
    layer: Layer,
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    loss_fn: object | None = None,
    training: bool = True,
    eps: float = 1e-6,
    rtol: float = 1e-6,
    seed: int = 0,
    max_elements: int | None = 256,
) -> GradcheckResult:
    """Compare `layer`'s backward with centred finite differences, in float64.

    Args:
        layer: any layer or model; it is copied, the original is not touched.
        x: an input batch; y: labels when `loss_fn` (e.g. CrossEntropyLoss()) is given.
        training: run the forward passes in training mode (batch statistics,
            dropout with a mask fixed across all evaluations) or inference mode.
        eps: the finite-difference step, relative to max(1, |entry|); smaller
            steps are tried where a kink lies within it (see the module docstring).
        rtol: the relative tolerance of the verdict and of the kink test.
        max_elements: check at most this many randomly chosen elements per
            tensor (None: all of them).
    Returns:
        A GradcheckResult for "input" and each named parameter.
    Raises:
        ValueError: eps or rtol not positive and finite.
    """
    for name, value in (("eps", eps), ("rtol", rtol)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"gradcheck: {name} must be positive and finite, got {value}")
    model = copy.deepcopy(layer).astype(np.float64)
    x = np.array(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    loss, dx, scale = _loss_and_backward(model, x, y, loss_fn, training, rng)
    tensors: list[tuple[str, np.ndarray, np.ndarray]] = [("input", x, dx)]
    tensors += [(name, p.data, p.grad.copy()) for name, p in model.named_parameters()]
    differencer = _Differencer(loss, loss(), scale, eps, rtol)
    result = GradcheckResult(rtol=rtol)
    for name, values, analytic in tensors:
        _check_tensor(result, name, values, analytic, differencer, rng, max_elements)
    return result


def _loss_and_backward(
    model: Layer,
    x: np.ndarray,
    y: np.ndarray | None,
    loss_fn: object | None,
    training: bool,
    rng: np.random.Generator,
) -> tuple[Callable[[], float], np.ndarray, float]:
    """L as a function of x's and the parameters' current values; dL/dx from backward
    (which also fills every parameter's grad); the size of the terms L sums:
    |L| for a loss, sum |y * R| for the projection, whose terms may cancel."""
    # Random layers (dropout) must draw the same mask at every evaluation.
    generators = list(_generators(model))
    rng_states = [g.bit_generator.state for g in generators]
    projection: np.ndarray | None = None
    terms = 0.0  # sum |y * R| of the last evaluation

    def loss() -> float:
        nonlocal projection, terms
        for g, state in zip(generators, rng_states, strict=True):
            g.bit_generator.state = state
        out = model.forward(x, training=training)
        if loss_fn is not None:
            return float(loss_fn.forward(out, y))  # type: ignore[attr-defined]
        if projection is None:
            projection = rng.normal(size=out.shape)
        products = out * projection
        terms = float(np.sum(np.abs(products)))
        return float(np.sum(products))

    model.zero_grad()
    with inference_backward():  # lets training=False differentiate the inference function
        value = loss()
        if loss_fn is None:
            dout, scale = projection, terms
        else:
            dout, scale = loss_fn.backward(), abs(value)  # type: ignore[attr-defined]
        dx = model.backward(dout)
    return loss, dx, scale


def _check_tensor(
    result: GradcheckResult,
    name: str,
    values: np.ndarray,
    analytic: np.ndarray,
    differencer: _Differencer,
    rng: np.random.Generator,
    max_elements: int | None,
) -> None:
    """Add `name`'s entry to `result`: its randomly picked entries, differenced in place."""
    flat = values.reshape(-1)  # a view: perturbing it perturbs what the loss reads
    count = flat.size if max_elements is None else min(flat.size, max_elements)
    picks = rng.choice(flat.size, size=count, replace=False)
    measured = [(k, differencer.at(flat, int(k))) for k in picks]
    kept = [(k, m) for k, m in measured if m is not None]
    result.checked[name] = len(kept)
    result.excluded[name] = count - len(kept)
    if not kept:
        result.errors[name] = math.nan if count else 0.0
        return
    index = np.array([k for k, _ in kept])
    numeric, atol = (np.array(v) for v in zip(*(m for _, m in kept), strict=True))
    errors = entry_errors(analytic.reshape(-1)[index], numeric, atol, differencer.rtol)
    result.errors[name] = float(errors.max())
    result.atol = max(result.atol, float(atol.max()))
