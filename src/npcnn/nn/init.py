"""Weight initialisers. Each takes a `numpy.random.Generator`: no global random state.

He (Kaiming) initialisation keeps the variance of activations constant
through ReLU layers: for a layer with `fan_in` inputs per output,
`Var[w] = 2 / fan_in`.
"""

from __future__ import annotations

import math

import numpy as np

from npcnn.nn.module import Parameter


def fan_in(shape: tuple[int, ...]) -> int:
    """Inputs feeding one output: `in` for Dense (out, in), `in/groups*kh*kw` for a
    Conv2D weight (out, in/groups, kh, kw), as PyTorch."""
    return int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])


def kaiming_normal_(param: Parameter, rng: np.random.Generator, gain: float = 2.0) -> None:
    """w ~ N(0, gain / fan_in): He et al. 2015 for ReLU networks (gain 2)."""
    std = math.sqrt(gain / fan_in(param.shape))
    param.data[...] = rng.normal(0.0, std, size=param.shape)


def kaiming_uniform_(param: Parameter, rng: np.random.Generator, gain: float = 2.0) -> None:
    """w ~ U(-b, b) with b = sqrt(3 * gain / fan_in): the same variance as `kaiming_normal_`."""
    bound = math.sqrt(3.0 * gain / fan_in(param.shape))
    param.data[...] = rng.uniform(-bound, bound, size=param.shape)


def normal_(
    param: Parameter, rng: np.random.Generator, std: float = 1.0, mean: float = 0.0
) -> None:
    """w ~ N(mean, std^2); the notebook initialised every weight with N(0, 0.1^2)."""
    param.data[...] = rng.normal(mean, std, size=param.shape)


def constant_(param: Parameter, value: float) -> None:
    param.data[...] = value


def zeros_(param: Parameter) -> None:
    param.data[...] = 0


def ones_(param: Parameter) -> None:
    param.data[...] = 1
