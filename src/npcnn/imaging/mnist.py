"""The MNIST recipe: ink cropped, scaled to 20 px, centred by mass in 28 x 28."""

from __future__ import annotations

import numpy as np

from npcnn.imaging.decode import resize
from npcnn.imaging.errors import NO_DIGIT, NOTHING_STANDS_OUT, ImageError
from npcnn.imaging.ink import INK_THRESHOLD, to_white_on_black
from npcnn.imaging.morphology import components

FIELD = 28  # output side, px
BOX = 20  # the ink's longer side after scaling, px
# The digit is the largest mark (by ink), the marks that carry at least
# PART_MASS of its ink (strokes drawn apart or broken), and the marks within
# NEAR_FRACTION of its extent from its box; smaller marks further away
# (specks, dust, a frayed page edge) are not cropped in.
PART_MASS = 0.1
NEAR_FRACTION = 0.25
# It is no digit if its box's longer side is under MIN_INK_PIXELS
# px or MIN_INK_FRACTION of the picture's shorter side (a dot), or its ink
# amounts to less than a line MIN_INK_WIDTH px wide across that side (specks).
MIN_INK_PIXELS = 4
MIN_INK_FRACTION = 0.05
MIN_INK_WIDTH = 0.5


def center_of_mass(image: np.ndarray) -> tuple[float, float]:
    """(row, column) of the intensity-weighted mean position, pixel centres at integers."""
    total = image.sum()
    if total <= 0:
        raise ImageError("cannot centre an empty image")
    rows = np.arange(image.shape[0], dtype=np.float64)
    cols = np.arange(image.shape[1], dtype=np.float64)
    return float(rows @ image.sum(axis=1) / total), float(cols @ image.sum(axis=0) / total)


def digit_box(ink: np.ndarray) -> tuple[slice, slice]:
    """Bounding box (row and column slices) of the digit in an (H, W) ink map.

    Marks are 4-connected pixels >= INK_THRESHOLD; the digit is made of
    those described at ``PART_MASS``. Raises :class:`ImageError` (no digit
    found) if there is no ink, or too little to be a digit (``MIN_INK_*``).
    """
    mask = ink >= INK_THRESHOLD
    if not mask.any():
        raise ImageError(f"{NO_DIGIT}: {NOTHING_STANDS_OUT}")
    labels = components(mask)
    ids, index = np.unique(labels[mask], return_inverse=True)
    mass = np.bincount(index, weights=ink[mask])
    rows, cols = _bounds(labels == ids[np.argmax(mass)])
    grow = round(NEAR_FRACTION * max(rows.stop - rows.start, cols.stop - cols.start))
    near = labels[
        max(0, rows.start - grow) : rows.stop + grow, max(0, cols.start - grow) : cols.stop + grow
    ]
    digit = np.isin(
        labels, np.union1d(ids[mass >= PART_MASS * mass.max()], near[near < labels.size])
    )
    rows, cols = _bounds(digit)
    height, width = rows.stop - rows.start, cols.stop - cols.start
    if max(height, width) < MIN_INK_PIXELS:
        raise ImageError(f"{NO_DIGIT}: its only mark is {width}x{height} px, too small for a digit")
    if max(height, width) < MIN_INK_FRACTION * min(ink.shape):
        # In fractions of the picture: a large one is shrunk before this, so its pixels
        # are not the user's.
        raise ImageError(
            f"{NO_DIGIT}: its only mark spans {max(height, width) / min(ink.shape):.1%} of the "
            f"picture's shorter side, too small for a digit (at least {MIN_INK_FRACTION:.0%}): "
            "crop the picture around the digit"
        )
    if ink[digit].sum() < MIN_INK_WIDTH * max(height, width):
        specks = np.count_nonzero(digit)
        raise ImageError(f"{NO_DIGIT}: only specks ({specks} px of ink across {width}x{height} px)")
    return rows, cols


def _bounds(mask: np.ndarray) -> tuple[slice, slice]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def to_mnist(gray: np.ndarray, field: int = FIELD, box: int = BOX) -> np.ndarray:
    """(H, W) grayscale of either polarity -> (field, field) float32 in [0, 1], MNIST style.

    Steps: white ink on black (:func:`to_white_on_black`); crop to the
    bounding box of the pixels brighter than ``INK_THRESHOLD``; scale so
    the longer side is ``box`` px; shift by whole pixels so the centre of
    mass lands within half a pixel of the field's centre ((field - 1) / 2).
    Specks away from the digit are left out of the crop (:func:`digit_box`).
    Raises :class:`ImageError` if no digit is found: no ink (a blank picture,
    or only areas too wide to be strokes), or no mark large enough to be a
    digit (a dot, a few specks).
    """
    ink = to_white_on_black(gray)
    crop = ink[digit_box(ink)]
    h, w = crop.shape
    scale = box / max(h, w)
    height, width = max(1, round(h * scale)), max(1, round(w * scale))
    digit = resize(crop, height, width)
    # Place on a canvas with a margin on every side so a lopsided digit can
    # move anywhere; then cut the centred field out of it.
    margin = field
    canvas = np.zeros((field + 2 * margin, field + 2 * margin))
    cy, cx = center_of_mass(digit)
    centre = (field - 1) / 2
    top = margin + round(centre - cy)
    left = margin + round(centre - cx)
    canvas[top : top + height, left : left + width] = digit
    return canvas[margin : margin + field, margin : margin + field].astype(np.float32)
