"""Pictures in: decode a file or stream with Pillow to upright grayscale in [0, 1]."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from npcnn.imaging.errors import ImageError


def pillow() -> Any:
    """Pillow's ``PIL.Image`` module, or ImportError naming the extra to install."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError('reading images needs Pillow: pip install "npcnn[cli]"') from None
    return Image


def resize(image: np.ndarray, height: int, width: int, resample: str = "LANCZOS") -> np.ndarray:
    """Anti-aliased resize of a float image in [0, 1] with Pillow (32-bit floats).

    ``resample`` names a ``PIL.Image.Resampling`` filter: LANCZOS is sharp,
    BOX (the mean of the pixels covered) never rings at edges.
    """
    Image = pillow()
    pic = Image.fromarray(image.astype(np.float32), mode="F")
    out = pic.resize((width, height), Image.Resampling[resample])
    return np.clip(np.asarray(out, dtype=np.float64), 0.0, 1.0)


def fit(image: np.ndarray, max_side: int, resample: str = "LANCZOS") -> np.ndarray:
    """(H, W) image shrunk (aspect kept) so its longer side is at most ``max_side``."""
    h, w = image.shape
    if max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    return resize(image, max(1, round(h * scale)), max(1, round(w * scale)), resample)


def load_image(
    source: str | os.PathLike[str] | BinaryIO, max_side: int | None = None
) -> np.ndarray:
    """Decode an image file or binary stream to (H, W) float64 luminance in [0, 1].

    The picture is turned upright as its EXIF Orientation tag says (phones
    store photos sideways with such a tag). Transparent images are flattened
    onto whichever of black or white contrasts with their opaque pixels, so
    transparent ink still shows; 16-bit grey is scaled by its full range.
    With ``max_side``, a picture whose longer side is larger is shrunk to it
    (anti-aliased, aspect ratio kept).

    Pillow's warnings while decoding (a very large picture, damaged
    metadata) are not passed on: a picture that decodes is used, one that
    does not raises :class:`ImageError` with Pillow's reason in its cause.
    Raises FileNotFoundError, or ImageError if ``source`` is not a readable image.
    """
    Image = pillow()
    name = None if hasattr(source, "read") else os.fspath(source)
    if name is not None and not Path(name).exists():
        raise FileNotFoundError(f"no such file: {name}")
    if name is not None and Path(name).is_dir():
        raise ImageError("is a directory, not an image", name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return _decode(Image, source, max_side)
        except PermissionError:
            raise ImageError("cannot read the file: permission denied", name) from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise ImageError(_decode_failure(Image, err, caught), name) from None


def _decode_failure(Image: Any, err: Exception, caught: list[warnings.WarningMessage]) -> str:
    """The one-line cause of a failed decode, preferring Pillow's own reason."""
    if isinstance(err, Image.UnidentifiedImageError):
        # Pillow explains a format it recognised but cannot read (a missing
        # codec) only in a warning, just before this error.
        reasons = [str(w.message) for w in caught]
        reason = reasons[0] if reasons else "not a picture format Pillow reads"
    else:
        reason = str(err).strip() or type(err).__name__
    return f"cannot decode the image: {reason.splitlines()[0]}"


def _decode(Image: Any, source: Any, max_side: int | None) -> np.ndarray:
    """Open, orient and convert to (H, W) luminance; ``Image`` is Pillow's module."""
    from PIL import ImageOps

    with Image.open(source) as img:
        if max_side is not None:
            img.draft(None, (max_side, max_side))  # JPEG: decode at a reduced scale
        upright = ImageOps.exif_transpose(img)
    if upright.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in upright.info:
        rgba = _shrink(upright.convert("RGBA"), max_side)
        return _flatten_alpha(np.asarray(rgba, dtype=np.float64) / 255.0)
    if upright.mode.startswith(("I", "F")):
        gray = _high_depth(np.asarray(upright, dtype=np.float64))
        return gray if max_side is None else fit(gray, max_side)
    gray = _shrink(upright.convert("L"), max_side)
    return np.asarray(gray, dtype=np.float64) / 255.0


def _shrink(img: Any, max_side: int | None) -> Any:
    """A Pillow image with its longer side at most ``max_side`` (Lanczos)."""
    if max_side is None or max(img.size) <= max_side:
        return img
    scale = max_side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, pillow().Resampling.LANCZOS, reducing_gap=3.0)


def _high_depth(values: np.ndarray) -> np.ndarray:
    """Integer or float pixels (16/32-bit grey) to [0, 1].

    Divided by the first of 1, 255, 65535 that is at least the largest value
    (float [0, 1], 8-bit or 16-bit data), else by the largest value.
    """
    top = float(values.max(initial=0.0))
    scale = next((s for s in (1.0, 255.0, 65535.0) if top <= s), top)
    return np.clip(values / scale, 0.0, 1.0)


def _flatten_alpha(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) in [0, 1] -> (H, W) luminance composited on a contrasting background."""
    luminance = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])  # ITU-R 601, as Pillow's "L"
    alpha = rgba[..., 3]
    opaque = alpha > 0.5
    ink_is_bright = opaque.any() and luminance[opaque].mean() > 0.5
    background = 0.0 if ink_is_bright else 1.0
    return alpha * luminance + (1.0 - alpha) * background
