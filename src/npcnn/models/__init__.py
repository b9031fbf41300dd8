"""Model presets: a seeded architecture plus the recipe that trains it.

>>> from npcnn.models import PRESETS, get_preset
>>> preset = get_preset("small")
>>> model = preset.model(seed=0)          # nn.Sequential for (N, 1, 28, 28)
>>> preset.recipe.optimizer, preset.recipe.lr
('adam', 0.001)
"""

from __future__ import annotations

from npcnn.models.notebook import NOTEBOOK, build_notebook
from npcnn.models.recipe import AUGMENTATIONS, OPTIMIZERS, SCHEDULES, Preset, Recipe
from npcnn.models.resnet import RESNET, build_resnet
from npcnn.models.small import SMALL, build_small
from npcnn.models.strong import STRONG, build_strong

#: Every preset by name; "small" is the command line's default.
PRESETS: dict[str, Preset] = {p.name: p for p in (SMALL, NOTEBOOK, STRONG, RESNET)}
DEFAULT_PRESET = "small"


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ValueError listing the known ones otherwise."""
    try:
        return PRESETS[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})") from None


__all__ = [
    "AUGMENTATIONS",
    "DEFAULT_PRESET",
    "OPTIMIZERS",
    "PRESETS",
    "SCHEDULES",
    "Preset",
    "Recipe",
    "build_notebook",
    "build_resnet",
    "build_small",
    "build_strong",
    "get_preset",
]
