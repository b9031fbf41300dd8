"""Turn an arbitrary picture of a digit into an MNIST-style 28x28 input.

MNIST's recipe (LeCun et al.): white ink on a black background, the ink's
bounding box scaled so its longer side is 20 px (aspect ratio kept, with
anti-aliasing), then placed in a 28x28 field so that the ink's centre of
mass sits at the field's centre. :func:`to_mnist` repeats it for a
grayscale array of any size and polarity; :func:`load_image` decodes a
PNG/JPEG/... file with Pillow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

FIELD = 28  # output side, px
BOX = 20  # the ink's longer side after scaling, px
# A pixel is ink when it is at least this bright, relative to the brightest
# ink after background removal; low enough to keep anti-aliased edges.
INK_THRESHOLD = 0.2
# Width of the frame, as a fraction of the shorter side, whose brightness
# tells the background colour.
BORDER_FRACTION = 0.05


class ImageError(ValueError):
    """A file could not be decoded as an image, or the image shows no ink."""


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise ImportError('reading images needs Pillow: pip install "npcnn[cli]"') from None
    return Image


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file to (H, W) float64 luminance in [0, 1].

    Transparent images are flattened onto whichever of black or white
    contrasts with their opaque pixels, so transparent ink still shows.
    Raises FileNotFoundError, or :class:`ImageError` if it is not an image.
    """
    Image = _pillow()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = np.asarray(img.convert("RGBA"), dtype=np.float64) / 255.0
                return _flatten_alpha(rgba)
            return np.asarray(img.convert("L"), dtype=np.float64) / 255.0
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageError(f"{path}: cannot decode the image ({err})") from None


def _flatten_alpha(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) in [0, 1] -> (H, W) luminance composited on a contrasting background."""
    luminance = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])  # ITU-R 601, as Pillow's "L"
    alpha = rgba[..., 3]
    opaque = alpha > 0.5
    ink_is_bright = opaque.any() and luminance[opaque].mean() > 0.5
    background = 0.0 if ink_is_bright else 1.0
    return alpha * luminance + (1.0 - alpha) * background


def border_mean(gray: np.ndarray) -> float:
    """Mean brightness of a frame around the image (the background, for a centred subject)."""
    return float(gray[_frame(gray.shape)].mean())


def _frame(shape: tuple[int, ...]) -> np.ndarray:
    """Boolean mask of the border frame ``BORDER_FRACTION`` of the shorter side wide."""
    h, w = shape
    k = max(1, round(BORDER_FRACTION * min(h, w)))
    frame = np.ones(shape, dtype=bool)
    frame[k : h - k, k : w - k] = False
    return frame


def to_white_on_black(gray: np.ndarray) -> np.ndarray:
    """Invert if the background is bright; then subtract the background level and
    stretch so the brightest ink is 1. (H, W) in [0, 1] -> (H, W) in [0, 1]."""
    gray = np.asarray(gray, dtype=np.float64)
    if border_mean(gray) > 0.5:
        gray = 1.0 - gray
    ink = np.clip(gray - np.median(gray[_frame(gray.shape)]), 0.0, None)
    top = ink.max()
    if top <= 1e-6:
        raise ImageError("the image is blank: no ink stands out from the background")
    return ink / top


def center_of_mass(image: np.ndarray) -> tuple[float, float]:
    """(row, column) of the intensity-weighted mean position, pixel centres at integers."""
    total = image.sum()
    if total <= 0:
        raise ImageError("cannot centre an empty image")
    rows = np.arange(image.shape[0], dtype=np.float64)
    cols = np.arange(image.shape[1], dtype=np.float64)
    return float(rows @ image.sum(axis=1) / total), float(cols @ image.sum(axis=0) / total)


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Anti-aliased resize of a float image (Pillow's Lanczos on a 32-bit float image)."""
    Image = _pillow()
    pic = Image.fromarray(image.astype(np.float32), mode="F")
    out = pic.resize((width, height), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(out, dtype=np.float64), 0.0, 1.0)


def to_mnist(gray: np.ndarray, field: int = FIELD, box: int = BOX) -> np.ndarray:
    """(H, W) grayscale of either polarity -> (field, field) float32 in [0, 1], MNIST style.

    Steps: white ink on black (:func:`to_white_on_black`); crop to the
    bounding box of the pixels brighter than ``INK_THRESHOLD``; scale so
    the longer side is ``box`` px; shift by whole pixels so the centre of
    mass lands within half a pixel of the field's centre ((field - 1) / 2).
    """
    ink = to_white_on_black(gray)
    rows = np.flatnonzero((ink >= INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((ink >= INK_THRESHOLD).any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    scale = box / max(h, w)
    height, width = max(1, round(h * scale)), max(1, round(w * scale))
    digit = _resize(crop, height, width)
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


def prepare_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Load ``path`` and return the model input (1, 28, 28) float32 in [0, 1]."""
    return to_mnist(load_image(path))[np.newaxis]
