"""Ink, not paper: a picture of either polarity -> an ink map, ink 1 on 0.

A photo is not a scan: the page may be lit unevenly, lie on a desk darker
than itself, and carry sensor noise. So ink is measured against its local
background (:mod:`npcnn.imaging.morphology`): a closing for dark ink, an
opening for light ink, with a window a few strokes wide. A shading
gradient or the edge of a desk is then background, a pen stroke is not.

Which way the ink goes is decided around the marks, not at the picture's
border (the border may be the desk): see :func:`ink_is_dark`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from npcnn.imaging.decode import fit
from npcnn.imaging.errors import ImageError, nothing_stands_out
from npcnn.imaging.morphology import (
    closing,
    components,
    dilate,
    gaussian_blur,
    largest_component,
    opening,
)

# A pixel is ink when it is at least this bright, relative to the brightest
# ink after background removal; low enough to keep anti-aliased edges.
INK_THRESHOLD = 0.2
# The first look (polarity, stroke width) works on a copy
# whose longer side is at most this: coarse questions, answered quickly.
LOOK_SIDE = 256
# The first look's window, as a fraction of the shorter side: wider than
# the strokes of a digit that fills the picture.
SEARCH_WINDOW = 1 / 3
# The final window is this many stroke widths: wide enough that blobs and
# crossings stay whole, narrow enough that a strip of desk a few strokes
# wide at the picture's border stays background.
STROKE_WINDOWS = 5
# Ink must exceed the typical residual background by this many robust
# standard deviations (the floor is 0 on a clean picture).
NOISE_SIGMAS = 4.0
# A picture whose pixel-to-pixel noise (robust standard deviation) is above
# this is smoothed first, with a Gaussian a quarter of a stroke wide.
NOISY = 1 / 255
_NOTHING = 1e-6


def odd(x: float) -> int:
    """The smallest odd integer >= x, at least 3."""
    return max(3, int(np.ceil(x)) // 2 * 2 + 1)


@dataclass(frozen=True)
class FirstLook:
    """What a coarse look at a picture finds (lengths in the picture's pixels)."""

    dark_ink: bool
    stroke_width: float


def to_white_on_black(gray: np.ndarray) -> np.ndarray:
    """(H, W) picture in [0, 1] of either polarity -> (H, W) ink map in [0, 1], ink 1.

    Ink is what departs from the local background beyond the picture's
    noise, stretched so the strongest ink is 1; the background window is
    ``STROKE_WINDOWS`` strokes wide (:func:`first_look`). Beyond its border
    the picture is taken to continue as its border pixels (a strip of desk
    at the border stays background), except for marks joined to the digit
    (a stroke along the border stays ink: :func:`_restore_border_strokes`).
    Raises ValueError for a non-2-D array or one with NaN or infinite
    pixels, :class:`ImageError` if nothing stands out from the background.
    """
    gray = np.asarray(gray, dtype=np.float64)
    if gray.ndim != 2 or gray.size == 0:
        raise ValueError(f"expected a non-empty (H, W) grayscale array, got shape {gray.shape}")
    if not np.isfinite(gray).all():
        raise ValueError("the picture has NaN or infinite pixels")
    look = first_look(gray)
    if noise_level(gray) > NOISY:
        gray = gaussian_blur(gray, look.stroke_width / 4)
    window = min(odd(SEARCH_WINDOW * min(gray.shape)), odd(STROKE_WINDOWS * look.stroke_width))
    ink = _local_marks(gray, window, look.dark_ink, "edge")
    _restore_border_strokes(ink, _local_marks(gray, window, look.dark_ink, "symmetric"))
    if ink.max() <= _NOTHING:
        raise ImageError(nothing_stands_out(gray))
    return ink / ink.max()


def _restore_border_strokes(ink: np.ndarray, mirrored: np.ndarray) -> None:
    """Add to ``ink`` (in place) the marks of ``mirrored`` joined to its largest mark.

    ``ink`` continues the picture beyond its border by its border pixels: a
    strip of desk at the border is background, but so is a stroke lying
    along the border. ``mirrored`` continues it by its mirror image: both
    are marks. The stroke is joined to the rest of the digit (the largest
    mark); the desk, as a rule, is not.
    """
    union = np.maximum(ink, mirrored)
    threshold = INK_THRESHOLD * union.max()
    if threshold <= _NOTHING:
        return
    if not (ink >= threshold).any():  # all the ink lies along the border
        np.copyto(ink, union)
        return
    digit = largest_component(ink >= threshold, ink)
    labels = components(union >= threshold)
    # One pixel more all round, for the anti-aliased rim under the threshold.
    joined = dilate(labels == labels[digit][0], 3)
    ink[joined] = union[joined]


def first_look(gray: np.ndarray) -> FirstLook:
    """Polarity and stroke width, from a copy at most ``LOOK_SIDE`` px on its longer side.

    The marks are what departs from a closing or an opening with a window a
    third of the shorter side, continued at the border by the border pixels.
    Raises :class:`ImageError` if nothing stands out from the background.
    """
    small = fit(gray, LOOK_SIDE, "BOX")  # no ringing, which would be marks
    if noise_level(small) > NOISY:
        small = gaussian_blur(small, 1.0)
    search = odd(SEARCH_WINDOW * min(small.shape))
    closed, opened = closing(small, search, "edge"), opening(small, search, "edge")
    dark_ink = ink_is_dark(small, closed - small, small - opened)
    marks = _ink_against(small, closed if dark_ink else opened, dark_ink)
    if marks.max() <= _NOTHING:
        raise ImageError(nothing_stands_out(small))
    strokes = marks >= INK_THRESHOLD * marks.max()
    scale = max(gray.shape[0] / small.shape[0], gray.shape[1] / small.shape[1])
    return FirstLook(dark_ink, stroke_width(strokes) * scale)


def ink_is_dark(gray: np.ndarray, dark: np.ndarray, light: np.ndarray) -> bool:
    """Whether the ink is darker than the paper.

    ``dark`` and ``light`` (H, W) are what departs from a closing and from
    an opening of ``gray``: two hypotheses for the ink. A hypothesis fits if
    the paper around its marks is on its side (light for dark ink), judged
    around the marks rather than at the picture's border, which may be a
    desk. If both fit (dark strokes on a page, and the page itself as a
    light mark on a dark desk; or the strokes of a bold "0" and its hole),
    the ink is the one whose largest mark looks more like pen strokes
    (:func:`_stroke_score`).
    """
    dark, light = _above_noise(dark), _above_noise(light)
    threshold = INK_THRESHOLD * max(dark.max(), light.max())
    if threshold <= _NOTHING:
        return bool(np.median(gray) > 0.5)
    hypotheses = ((True, dark, dark >= threshold), (False, light, light >= threshold))
    fits = [m.any() and _paper_surrounds(gray, marks, m, d) for d, marks, m in hypotheses]
    if fits[0] != fits[1]:
        return bool(fits[0])
    score = [_stroke_score(gray, marks, m, d) for d, marks, m in hypotheses]
    return bool(score[0] >= score[1])


def _paper_surrounds(gray: np.ndarray, marks: np.ndarray, mask: np.ndarray, dark: bool) -> bool:
    """Whether the marks stand out from what surrounds them, on their side.

    Around the marks' box, widened by a quarter of its longer side, the
    median is the paper's brightness. The marks fit if their own median is
    darker (dark ink) or lighter (light ink) than it by at least half their
    typical strength: a page that is all light marks (its specks of dirt
    the only "paper") does not stand out from itself.
    """
    rows, cols = mark_box(mask)
    pad = max(1, round(0.25 * max(rows.stop - rows.start, cols.stop - cols.start)))
    region = gray[
        max(0, rows.start - pad) : rows.stop + pad, max(0, cols.start - pad) : cols.stop + pad
    ]
    step = float(np.median(region) - np.median(gray[mask]))
    return (step if dark else -step) > 0.5 * float(np.median(marks[mask]))


def mark_box(mask: np.ndarray) -> tuple[slice, slice]:
    """Bounding box (row and column slices) of the central 98% of a non-empty mask.

    The percentiles keep a few specks far from the digit out of the box.
    """
    rows, cols = np.nonzero(mask)
    top, bottom = np.percentile(rows, [1, 99]).round().astype(int)
    left, right = np.percentile(cols, [1, 99]).round().astype(int)
    return slice(top, bottom + 1), slice(left, right + 1)


def _stroke_score(gray: np.ndarray, marks: np.ndarray, mask: np.ndarray, dark_ink: bool) -> float:
    """How much the largest mark looks like the strokes of a digit, >= 0.

    Its contrast with the pixels just around it (the lower quartile: the
    edge must hold nearly all round) times its extent over its stroke width
    (thin). A blob (a dot, the hole of a bold "0"), a filled shape (a sheet
    of paper), a faint sliver, or a piece of the page that only the
    window's shape set apart (no edge along more page) scores lower than
    the strokes of a digit.
    """
    if not mask.any():
        return 0.0
    mark = largest_component(mask, marks)
    around = dilate(mark, 3) & ~mark
    if not around.any():
        return 0.0
    step = gray[around] - np.median(gray[mark])
    edge = float(np.percentile(step if dark_ink else -step, 25))
    rows, cols = mark_box(mark)
    extent = max(rows.stop - rows.start, cols.stop - cols.start)
    return max(edge, 0.0) * extent / stroke_width(mark)


def stroke_width(mask: np.ndarray) -> float:
    """Mean width, px, of the strokes in a boolean ink mask: 2 x area / perimeter.

    A stroke of length L and width w has area L w and perimeter about 2 L.
    The perimeter counts pixel edges between ink and paper, which is longer
    than the true one along slanted edges: the estimate errs towards thin.
    Returns 0 for an empty mask.
    """
    padded = np.pad(mask, 1)
    edges = np.count_nonzero(padded[1:] != padded[:-1]) + np.count_nonzero(
        padded[:, 1:] != padded[:, :-1]
    )
    return 2.0 * np.count_nonzero(mask) / edges if edges else 0.0


def _local_marks(gray: np.ndarray, size: int, dark_ink: bool, pad: str) -> np.ndarray:
    """:func:`_ink_against` the closing (dark ink) or the opening (light ink)."""
    background = closing(gray, size, pad) if dark_ink else opening(gray, size, pad)
    return _ink_against(gray, background, dark_ink)


def _ink_against(gray: np.ndarray, background: np.ndarray, dark_ink: bool) -> np.ndarray:
    """How far each pixel departs from its background towards the ink, beyond the noise.

    The departure (H, W) >= 0 less its noise floor (:func:`_above_noise`).
    Dark ink is then divided by the background, so that ink under dim light
    counts as much as ink under bright light (a photo is the page's
    reflectance times the light); the divisor is at least half the paper's
    brightness (its 95th percentile) and at least 0.1, so that marks on a
    dark desk are not magnified. Light ink is not (the light falling on a
    dark background cannot be told from its colour).
    """
    if not dark_ink:
        return _above_noise(gray - background)
    floor = max(0.5 * float(np.percentile(background, 95)), 0.1)
    return _above_noise(background - gray) / np.maximum(background, floor)


def noise_level(gray: np.ndarray) -> float:
    """Robust standard deviation of a picture's pixel noise, from neighbours' differences.

    The median absolute difference of horizontal neighbours, scaled to a
    normal law's standard deviation (and by 1/sqrt 2, a difference having
    two noises). Ink and edges touch few pixel pairs: a clean picture gives 0.
    """
    if gray.shape[1] < 2:
        return 0.0
    return float(1.4826 * np.median(np.abs(np.diff(gray, axis=1))) / np.sqrt(2.0))


def _above_noise(marks: np.ndarray) -> np.ndarray:
    """``marks`` minus the noise floor: their median plus NOISE_SIGMAS robust deviations.

    On a clean picture most pixels are exactly background: the floor is 0.
    """
    level = np.median(marks)
    spread = 1.4826 * np.median(np.abs(marks - level))  # a normal law's standard deviation
    return np.clip(marks - (level + NOISE_SIGMAS * spread), 0.0, None)
