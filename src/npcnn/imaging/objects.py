"""The Fashion-MNIST recipe: an object on a plain background, trimmed, fitted in 28 x 28.

Fashion-MNIST's images were made from product photos on a light background
(its README): the edges trimmed, the longer side resized to 28 px, the
shorter side extended to 28 px with the object in the middle, the
intensities negated. So here, for a picture (H, W) in [0, 1]:

    background b = median of the border pixels
    object       = pixels with |x - b| > OBJECT_CONTRAST, and its bounding box;
                   if they are darker than b on average (a dark object on a page),
                   x <- 1 - x and b <- 1 - b, so that the object is light on dark
    output       = (x - b) / (1 - b), clipped to [0, 1], of that box, resized so
                   its longer side is 28 px (aspect kept), centred in 28 x 28

A picture of Fashion-MNIST's own kind (28 x 28, a dark border) comes back
as it was when the object spans the field, as most of its images do.
"""

from __future__ import annotations

import numpy as np

from npcnn.imaging.decode import resize
from npcnn.imaging.errors import ImageError
from npcnn.imaging.mnist import FIELD

#: A pixel belongs to the object when it differs from the background by more than this.
OBJECT_CONTRAST = 0.1
#: No object is smaller than this many pixels on its longer side.
MIN_OBJECT_PIXELS = 2


def border_median(gray: np.ndarray) -> float:
    """The median of the pixels on the picture's four edges: its background tone."""
    edges = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    return float(np.median(edges))


def to_fashion_mnist(gray: np.ndarray, field: int = FIELD) -> np.ndarray:
    """(H, W) grayscale in [0, 1], an object on a plain background of either polarity ->
    (field, field) float32 in [0, 1], light object on black, as Fashion-MNIST's images.

    Raises :class:`ImageError` when nothing differs from the background.
    """
    background = border_median(gray)
    differs = np.abs(gray - background) > OBJECT_CONTRAST
    rows, cols = np.flatnonzero(differs.any(axis=1)), np.flatnonzero(differs.any(axis=0))
    if len(rows) == 0 or max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 < MIN_OBJECT_PIXELS:
        raise ImageError(
            "no object found: nothing differs from the background (the tone of the edges)"
        )
    if gray[differs].mean() < background:  # a dark object: made light on a dark ground
        gray, background = 1.0 - gray, 1.0 - background
    crop = gray[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    crop = np.clip((crop - background) / max(1.0 - background, 1e-6), 0.0, 1.0)
    h, w = crop.shape
    scale = field / max(h, w)
    height, width = max(1, round(h * scale)), max(1, round(w * scale))
    if (height, width) != (h, w):
        crop = resize(crop, height, width)
    canvas = np.zeros((field, field))
    top, left = (field - height) // 2, (field - width) // 2
    canvas[top : top + height, left : left + width] = crop
    return canvas.astype(np.float32)


def as_is(gray: np.ndarray, field: int = FIELD) -> np.ndarray:
    """(H, W) grayscale in [0, 1] -> (field, field) float32, only resized (aspect not kept):
    for pictures already in the model's format."""
    if gray.shape != (field, field):
        gray = resize(gray, field, field)
    return gray.astype(np.float32)
