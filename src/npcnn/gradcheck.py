"""Finite-difference gradient checking for layers and models.

For a scalar L(x, theta) and each checked entry z (of the input or of a
parameter), the centred difference

    n = (L(z + h) - L(z - h)) / (2 h)

differs from a smooth L's derivative by h^2 L'''(z) / 6, plus the rounding
noise of the two evaluations over 2h. Without a loss function the scalar is
L = sum(y * R) for a fixed random R, so that every output element matters (a
plain sum would hide bugs in batch norm, whose output sums to a constant).

The verdict, per entry, with a the gradient that backward computed:

    |a - n| <= max(rtol * max(|a|, |n|), atol),   atol = noise(h),

torch.autograd.gradcheck's test with its absolute part set to the rounding
noise, so a gradient that is zero on both sides (a bias before batch norm)
passes, however large the relative error of its noise. noise(h) is
32 u S / h (u = 1.1e-16 in float64, S the size of the terms summed into L),
or 8 rho / h where rho, the rounding that perturbing the tensor's entries
brings into L, is measured larger (a few entries per tensor, at steps of
1e-9 where curvature is far below rounding): batch norm over a channel of
small variance amplifies rounding beyond anything u S foresees.

ReLU, max pooling and their ties make L piecewise smooth. Half the
difference of the two one-sided differences, the gap

    g(h) = (L(z+h) - 2 L(z) + L(z-h)) / (2 h) = A + B h + O(h^3),

has a curvature share B h = h L''(z) / 2, which shrinks with the step, and a
kink share A = J / 2 from a kink on z whose slope jumps by J, which does not
(a kink at distance d adds a share to steps h > d only); A = 2 g(h) - g(2h),
whatever the curvature. Per entry:

- A gap and a share above the noise at h: a kink within 2h. The entry is
  measured again at h / 10, then h / 100, and compared at the first step
  whose share is within its own noise AND provably 5x below the kink's: that
  step no longer reaches it. A kink on z keeps its share at every step, and
  the smaller steps' larger noise must not hide it. An entry that no step
  clears sits on a kink, or too close to one to tell: it has no measurable
  derivative and is counted as excluded, out of the verdict.
- Otherwise n at h is compared if it agrees with a. If not, the step 10h,
  whose noise is 10 times smaller, looks for a kink that h's noise hides:
  tied max-pool windows enter the gap with slopes of both signs, which can
  cancel to below the noise while backward, routing through one winner per
  window, is far from n (blank pixels of real digits do this). A share
  above 10h's noise but below h's marks a kink within 20h that h's noise
  could hide, the disagreement's likely cause: excluded. Otherwise n is
  compared, taken where no kink lies within 20h as the Richardson
  extrapolation (4 n(10h) - n(20h)) / 3, whose curvature error cancels and
  whose noise is 7 times smaller than n(h)'s.
- Before an entry is excluded, its own rounding is measured: a share within
  it is noise, not a kink (the tensor's few samples may understate it).

Real images hit kinks often: a blank background makes whole max-pool windows
tie, and every pixel there is on a kink (1267 of the 1568 pixels of the two
sample digits in the README's example).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator
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
#: The smaller steps tried, as fractions of the first, where a kink lies within 2h.
_RETRIES = (0.1, 0.01)
#: The larger step, as a multiple of the first, that looks for a kink hidden in h's noise.
_PROBE = 10
#: The noise of a difference as a multiple of the rounding noise measured for the
#: tensor's entries (see ``_Differencer.rounding``), where that is the larger bound.
NOISE_MARGIN = 8.0
#: Entries per tensor whose perturbation measures L's rounding noise.
_NOISE_SAMPLES = 8


@dataclass
class GradcheckResult:
    """What :func:`gradcheck` measured, per tensor ("input" and each named parameter).

    ``errors[name]``: the largest relative error of the compared entries,
    max |a - n| / max(|a|, |n|, atol / rtol) (see :func:`entry_errors`; NaN
    when no entry could be compared). ``checked[name]``: entries compared;
    ``excluded[name]``: entries left out because they sit on a kink (ReLU,
    max-pool tie), or too close to one to tell, where L has no derivative.
    ``atol``: the largest absolute tolerance used (the rounding noise at the
    smallest step taken).
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
        width = max([24, *(len(name) + 1 for name in self.errors)])  # the names line up
        lines = [f"{'tensor':<{width}}{'checked':>9}{'excluded':>10}{'rel. error':>14}"]
        for name, error in self.errors.items():
            shown = "-" if math.isnan(error) else f"{error:.2e}"
            counts = f"{self.checked[name]:>9}{self.excluded.get(name, 0):>10}"
            lines.append(f"{name:<{width}}{counts}{shown:>14}")
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
    measured: float = 0.0  # the rounding this tensor's entries bring into L (rounding())

    def noise(self, h: float) -> float:
        """The rounding noise of a centred difference (and of a gap or share) with
        step h: NOISE_FACTOR u S / h, or NOISE_MARGIN times the measured noise / h."""
        return max(NOISE_FACTOR * _U * max(self.scale, 1.0), NOISE_MARGIN * self.measured) / h

    def measure(self, flat: np.ndarray, index: int, h: float) -> tuple[float, float]:
        """(n, g): the centred difference and the gap of entry ``index`` at step h.

        g = (L(z+h) - 2 L(z) + L(z-h)) / (2 h), half the forward difference minus
        the backward one. ``flat[index]`` is restored before returning.
        """
        original = flat[index]
        try:
            flat[index] = original + h
            plus = self.loss()
            flat[index] = original - h
            minus = self.loss()
        finally:
            flat[index] = original
        return (plus - minus) / (2 * h), (plus - 2 * self.base + minus) / (2 * h)

    def share(self, flat: np.ndarray, index: int, h: float, gap: float) -> float:
        """The kink share A = 2 g(h) - g(2h) of entry ``index``, given g(h) = ``gap``."""
        return 2 * gap - self.measure(flat, index, 2 * h)[1]

    def rounding(self, flat: np.ndarray, indices: Iterable[int], tries: int = 1) -> float:
        """The rounding noise that perturbing the entries ``indices`` of ``flat`` brings
        into one evaluation of L: the largest |2 D(t) - D(2t)| / 4 over them, with
        D(t) = L(z+t) - 2 L(z) + L(z-t) and t = 1e-9 max(1, |z|) (times 7 and 49 for
        a second and third try).

        A kink on z adds J t to D(t) and 2 J t to D(2t), which cancel; curvature's
        t^2 L'' is far below rounding; what is left is rounding alone. Perturbing an
        entry changes every computation downstream of it: early layers' entries
        bring in more rounding than late ones', and batch norm over a channel of
        small variance amplifies it, beyond what u S foresees. (t is no power of
        two, which would add to large values exactly.)
        """
        samples = [0.0]
        for index in indices:
            for t in (1e-9 * 7**k * max(1.0, abs(flat[index])) for k in range(tries)):
                # measure()'s gap at step t is D(t) / (2t).
                d1, d2 = (2 * u * self.measure(flat, int(index), u)[1] for u in (t, 2 * t))
                samples.append(abs(2 * d1 - d2) / 4)
        return max(samples)

    def is_rounding(self, flat: np.ndarray, index: int, share: float, step: float) -> bool:
        """Whether a kink share seen at ``step`` is within the rounding noise measured
        for entry ``index`` itself (which the tensor's few samples may understate).

        share * step sums the rounding of five evaluations, with weights 1, 1, -1.5,
        -0.25, -0.25: twice the spread of one rounding sample, so twice the margin.
        """
        return abs(share) * step <= 2 * NOISE_MARGIN * self.rounding(flat, [index], tries=2)

    def at(self, flat: np.ndarray, index: int, analytic: float) -> tuple[float, float] | None:
        """(n, atol) for entry ``index``, or None if it sits on a kink.

        ``analytic`` is backward's value; the steps taken are the module docstring's.
        An entry is excluded only if the kink's share exceeds its own rounding noise.
        """
        h = self.eps * max(1.0, abs(flat[index]))
        central, gap = self.measure(flat, index, h)
        noise = self.noise(h)
        if abs(gap) > noise + self.rtol * abs(central):
            share = self.share(flat, index, h, gap)
            if abs(share) > noise + self.rtol * abs(central):  # a kink within 2h
                stepped = self.step_past(flat, index, h, abs(share) - noise)
                if stepped is not None:
                    return stepped
                if not self.is_rounding(flat, index, share, h):
                    return None
        if entry_errors(np.array(analytic), np.array(central), noise, self.rtol) <= self.rtol:
            return central, noise
        share, extrapolated = self.probe(flat, index, h)
        probe_noise = self.noise(_PROBE * h)
        if probe_noise < abs(share) <= noise + probe_noise:  # a kink that h's noise hides
            if not self.is_rounding(flat, index, share, _PROBE * h):
                return None
        # A kink within 20h whose share is below h's noise moves the extrapolation
        # by less than that noise.
        return (extrapolated if abs(share) <= noise else central), noise

    def probe(self, flat: np.ndarray, index: int, h: float) -> tuple[float, float]:
        """The kink share at the step H = 10h, and the Richardson extrapolation
        (4 n(H) - n(2H)) / 3 of n: its h^2 L''' / 6 error cancels, and its noise is
        7 times smaller than n(h)'s."""
        (n1, g1), (n2, g2) = (self.measure(flat, index, m * _PROBE * h) for m in (1, 2))
        return 2 * g1 - g2, (4 * n1 - n2) / 3

    def step_past(
        self, flat: np.ndarray, index: int, h: float, seen: float
    ) -> tuple[float, float] | None:
        """(n, atol) at h / 10 or h / 100 for an entry with a kink within 2h whose
        share is at least ``seen``, or None if neither step clears the kink.

        A step clears it when its own share is within its noise AND provably 5x
        below ``seen``: a kink on z has the same share at every step, which the
        smaller steps' larger noise must not hide.
        """
        for step in (h * r for r in _RETRIES):
            central, gap = self.measure(flat, index, step)
            share, noise = self.share(flat, index, step, gap), self.noise(step)
            if abs(share) <= noise + self.rtol * abs(central) and abs(share) + noise <= seen / 5:
                return central, noise
            seen = max(seen, abs(share) - noise)
        return None


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
    rounding = differencer.rounding(flat, picks[:_NOISE_SAMPLES])
    differencer = dataclasses.replace(differencer, measured=rounding)
    backward = analytic.reshape(-1)
    measured = [(k, differencer.at(flat, int(k), float(backward[k]))) for k in picks]
    kept = [(k, m) for k, m in measured if m is not None]
    result.checked[name] = len(kept)
    result.excluded[name] = count - len(kept)
    if not kept:
        result.errors[name] = math.nan if count else 0.0
        return
    index = np.array([k for k, _ in kept])
    numeric, atol = (np.array(v) for v in zip(*(m for _, m in kept), strict=True))
    errors = entry_errors(backward[index], numeric, atol, differencer.rtol)
    result.errors[name] = float(errors.max())
    result.atol = max(result.atol, float(atol.max()))
