"""MNIST-style preprocessing of arbitrary images (npcnn.imaging)."""

from __future__ import annotations

import numpy as np
import pytest

from npcnn.imaging import (
    BOX,
    FIELD,
    ImageError,
    center_of_mass,
    load_image,
    prepare_image,
    to_mnist,
    to_white_on_black,
)

Image = pytest.importorskip("PIL.Image")
ImageDraw = pytest.importorskip("PIL.ImageDraw")

CENTRE = (FIELD - 1) / 2


def draw_blob(width: int, height: int, dark_ink: bool = True) -> np.ndarray:
    """A digit-like stroke (a tilted '7') off-centre on a non-square canvas, as uint8."""
    ink, paper = (0, 255) if dark_ink else (255, 0)
    pic = Image.new("L", (width, height), paper)
    draw = ImageDraw.Draw(pic)
    # top bar and a slanted leg, in the upper-left part of the canvas
    draw.line([(0.15 * width, 0.2 * height), (0.55 * width, 0.2 * height)], fill=ink, width=9)
    draw.line([(0.55 * width, 0.2 * height), (0.3 * width, 0.75 * height)], fill=ink, width=9)
    return np.asarray(pic)


def ink_box(image: np.ndarray, threshold: float = 0.2) -> tuple[int, int]:
    rows = np.flatnonzero((image >= threshold).any(axis=1))
    cols = np.flatnonzero((image >= threshold).any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def test_dark_ink_on_white_becomes_white_on_black_centred_by_mass() -> None:
    out = to_mnist(draw_blob(150, 220) / 255.0)
    assert out.shape == (FIELD, FIELD) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    # background black, ink white: the corners are empty and the brightest pixel is ink
    assert out[:3, :3].max() == 0.0 and out[-3:, -3:].max() == 0.0
    assert out.max() > 0.9
    cy, cx = center_of_mass(out)
    assert abs(cy - CENTRE) <= 1.0 and abs(cx - CENTRE) <= 1.0


def test_longer_side_of_the_ink_is_scaled_to_20_pixels() -> None:
    out = to_mnist(draw_blob(300, 90) / 255.0)
    height, width = ink_box(out)
    assert max(height, width) in (BOX - 1, BOX, BOX + 1)
    # a wide canvas gives a wide digit: the aspect ratio is kept, not stretched to square
    assert width > height


def test_polarity_does_not_matter() -> None:
    dark = to_mnist(draw_blob(160, 200, dark_ink=True) / 255.0)
    light = to_mnist(draw_blob(160, 200, dark_ink=False) / 255.0)
    np.testing.assert_allclose(dark, light, atol=1e-5)


def test_grey_background_is_removed() -> None:
    gray = 0.3 + 0.5 * draw_blob(120, 120, dark_ink=False) / 255.0  # ink 0.8 on paper 0.3
    ink = to_white_on_black(gray)
    assert np.median(ink) == 0.0 and ink.max() == pytest.approx(1.0)


def test_an_mnist_digit_survives_rescaling_and_inversion(tmp_path) -> None:
    # Preprocessing is a fixed point: a digit already in MNIST form, upscaled 5x
    # and inverted to black-on-white, comes back (nearly) the same.
    rng = np.random.default_rng(0)
    digit = np.zeros((FIELD, FIELD))
    digit[6:22, 11:16] = 1.0  # a thick '1'
    digit[6:9, 8:16] = 1.0
    digit += 0.05 * rng.random(digit.shape) * (digit > 0)
    reference = to_mnist(digit)
    big = Image.fromarray((255 * (1 - reference)).astype(np.uint8)).resize(
        (140, 140), Image.Resampling.BICUBIC
    )
    big.save(tmp_path / "one.png")
    again = prepare_image(tmp_path / "one.png")
    assert again.shape == (1, FIELD, FIELD)
    assert np.corrcoef(again.ravel(), reference.ravel())[0, 1] > 0.95


def test_load_image_reads_colour_and_transparency(tmp_path) -> None:
    rgb = Image.new("RGB", (40, 30), (255, 255, 255))
    ImageDraw.Draw(rgb).ellipse([10, 5, 30, 25], fill=(200, 0, 0))
    rgb.save(tmp_path / "rgb.jpg")
    gray = load_image(tmp_path / "rgb.jpg")
    assert gray.shape == (30, 40) and gray[0, 0] > 0.9 and gray[15, 20] < 0.5

    # black ink on a transparent background: flattened onto white, so the ink stays visible
    rgba = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).rectangle([15, 5, 25, 35], fill=(0, 0, 0, 255))
    rgba.save(tmp_path / "alpha.png")
    flat = load_image(tmp_path / "alpha.png")
    assert flat[0, 0] == pytest.approx(1.0) and flat[20, 20] == pytest.approx(0.0)
    out = to_mnist(flat)
    assert out.max() > 0.9 and out[0, 0] == 0.0


def test_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ImageError, match="cannot decode"):
        load_image(junk)
    with pytest.raises(ImageError, match="blank"):
        to_mnist(np.full((30, 30), 0.7))
