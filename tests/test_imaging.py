"""MNIST-style preprocessing of arbitrary images (npcnn.imaging)."""

from __future__ import annotations

import numpy as np
import pytest

from npcnn.imaging import (
    BOX,
    FIELD,
    ImageError,
    as_is,
    center_of_mass,
    load_image,
    prepare_image,
    to_fashion_mnist,
    to_mnist,
    to_white_on_black,
)
from npcnn.imaging.decode import resize

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
    with pytest.raises(ImageError, match=r"^no digit found: the image is blank \(one even tone\)$"):
        to_mnist(np.full((30, 30), 0.7))


# ------------------------------------------------------------ photos, not scans

PAPER, INK, DESK = 0.9, 0.1, 0.15


def ink_coverage(height: int = 300, width: int = 240) -> np.ndarray:
    """(H, W) in [0, 1]: how much of each pixel the pen covers (a '7', off-centre)."""
    canvas = np.zeros((height, width))
    canvas[60:180, 50:170] = 1.0 - draw_blob(120, 120) / 255.0
    return canvas


def photo(
    coverage: np.ndarray,
    gradient: float = 0.0,
    desk: bool = False,
    noise: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """A photo-like picture of the ink on a page: reflectance times light, plus noise.

    Paper reflects PAPER, ink INK; the light falls from 1 on the left to
    1 - gradient on the right. With ``desk``, the page lies on a darker desk
    (DESK) that shows around it; ``noise`` is the sensor noise's deviation.
    """
    h, w = coverage.shape
    reflectance = PAPER + (INK - PAPER) * coverage
    if desk:
        page = np.zeros((h, w), dtype=bool)
        page[35 : h - 30, 30 : w - 25] = True
        reflectance = np.where(page, reflectance, DESK)
    light = 1.0 - gradient * np.linspace(0.0, 1.0, w)[np.newaxis, :]
    rng = np.random.default_rng(seed)
    return np.clip(reflectance * light + noise * rng.standard_normal((h, w)), 0.0, 1.0)


def agreement(out: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(intersection over union of the ink masks, correlation) of two 28x28 inputs."""
    a, b = out > 0.3, reference > 0.3
    return float((a & b).sum() / (a | b).sum()), float(
        np.corrcoef(out.ravel(), reference.ravel())[0, 1]
    )


@pytest.mark.parametrize(
    ("scene", "iou", "corr"),
    [
        ({"gradient": 0.45}, 0.9, 0.98),  # a page lit 0.9 on the left, 0.5 on the right
        ({"desk": True}, 0.9, 0.98),  # a light page on a dark desk: a dark frame round it
        ({"gradient": 0.45, "desk": True}, 0.9, 0.98),
        ({"gradient": 0.45, "desk": True, "noise": 0.04}, 0.8, 0.9),  # a noisy phone photo
    ],
)
def test_uneven_light_a_desk_and_noise_read_as_the_clean_page(scene, iou, corr) -> None:
    coverage = ink_coverage()
    reference = to_mnist(photo(coverage))
    got_iou, got_corr = agreement(to_mnist(photo(coverage, **scene)), reference)
    assert got_iou >= iou and got_corr >= corr, (got_iou, got_corr)


def test_a_dim_page_is_still_dark_ink_on_light_paper() -> None:
    # Under dim light the whole picture is darker than 0.5: the paper is still
    # the background, the ink still the digit.
    coverage = ink_coverage()
    reference = to_mnist(photo(coverage))
    dim = 0.4 * photo(coverage, gradient=0.3)
    iou, corr = agreement(to_mnist(dim), reference)
    assert iou > 0.9 and corr > 0.98


def test_light_ink_on_a_dark_board_under_uneven_light() -> None:
    coverage = ink_coverage()
    chalk = 1.0 - photo(coverage)  # light ink on a dark board
    lit = chalk * (1.0 - 0.45 * np.linspace(0.0, 1.0, chalk.shape[1]))
    iou, corr = agreement(to_mnist(lit), to_mnist(chalk))
    assert iou > 0.9 and corr > 0.98


def test_mnist_digits_come_out_as_with_the_plain_recipe() -> None:
    # On clean two-level pictures (the sample's digits, either polarity, native
    # or enlarged) the ink is exactly what the plain recipe gives: invert if
    # the border is bright, subtract the border's level, stretch to 1.
    from npcnn.data import load_dataset

    def plain(gray: np.ndarray) -> np.ndarray:
        k = max(1, round(0.05 * min(gray.shape)))
        frame = np.ones(gray.shape, dtype=bool)
        frame[k:-k, k:-k] = False
        if gray[frame].mean() > 0.5:
            gray = 1.0 - gray
        ink = np.clip(gray - np.median(gray[frame]), 0.0, None)
        return ink / ink.max()

    digits = load_dataset("sample").test_images[:60] / 255.0
    for i, digit in enumerate(digits):
        big = np.asarray(Image.fromarray(digits[i] * 255).resize((84, 84)), dtype=np.float64)
        for gray in (digit, 1.0 - digit, np.clip(big / 255.0, 0.0, 1.0)):
            np.testing.assert_allclose(to_white_on_black(gray), plain(gray), atol=1e-9, err_msg=i)


def test_phone_photo_is_turned_upright_by_its_exif_tag(tmp_path) -> None:
    upright = Image.fromarray(draw_blob(150, 220))  # a '7': any rotation of it differs
    expected = to_mnist(np.asarray(upright) / 255.0)
    # Orientation 6: stored turned 90 degrees anticlockwise, to be shown turned
    # clockwise; orientation 8 the other way round.
    for tag, stored in (
        (6, upright.rotate(90, expand=True)),
        (8, upright.rotate(-90, expand=True)),
    ):
        exif = Image.Exif()
        exif[0x0112] = tag
        path = tmp_path / f"photo{tag}.jpg"
        stored.save(path, quality=95, exif=exif)
        got = prepare_image(path)[0]
        assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.95, tag
        sideways = to_mnist(np.asarray(stored) / 255.0)
        assert np.corrcoef(sideways.ravel(), expected.ravel())[0, 1] < 0.5


@pytest.mark.parametrize(
    "picture",
    [
        np.pad(np.ones((2, 2)), 13),  # one dot in a 28x28 MNIST-style field
        np.where(np.hypot(*np.mgrid[-150:150, -200:200]) < 5, 0.1, 0.9),  # a pen dot on paper
        np.where(np.random.default_rng(0).random((300, 400)) < 3e-4, 0.1, 0.9),  # a few specks
        np.clip(0.7 + 0.05 * np.random.default_rng(1).standard_normal((300, 400)), 0, 1),
        0.9 - 0.4 * np.linspace(0, 1, 400)[np.newaxis] * np.ones((300, 1)),  # shading only
    ],
    ids=["dot28", "pen dot", "specks", "noise", "shading"],
)
def test_a_dot_specks_or_noise_are_blank_not_a_digit(picture) -> None:
    with pytest.raises(ImageError, match=r"^no digit found: "):
        to_mnist(picture)


def test_a_digit_too_small_in_its_picture_is_refused_in_fractions_of_it() -> None:
    """A "0" 30x45 px on a 1000x1000 page (4.5% of its side): the message speaks of the
    picture's proportions, which a shrunk copy keeps, and says what to do."""
    page = np.full((1000, 1000), 0.9)
    page[500:545, 500:530] = 0.1
    page[505:540, 505:525] = 0.9  # a ring 5 px wide
    with pytest.raises(ImageError) as e:
        to_mnist(page)
    assert str(e.value) == (
        "no digit found: its only mark spans 4.5% of the picture's shorter side, too small "
        "for a digit (at least 5%): crop the picture around the digit"
    )
    assert to_mnist(page[400:700, 400:700]).max() > 0.9  # cropped, it is a digit


@pytest.mark.parametrize("dark_ink", [True, False])
@pytest.mark.parametrize(
    "shape",
    [
        (slice(60, 240), slice(80, 320)),  # a filled rectangle in the middle
        (slice(None), slice(0, 200)),  # half of the picture, edge to edge
    ],
    ids=["rectangle", "half"],
)
def test_a_filled_area_is_no_digit_and_not_called_blank(shape, dark_ink) -> None:
    picture = np.full((300, 400), 0.9 if dark_ink else 0.1)
    picture[shape] = 0.1 if dark_ink else 0.9
    with pytest.raises(ImageError) as e:
        to_mnist(picture)
    assert str(e.value).startswith("no digit found: nothing stands out from the background as")
    assert "blank" not in str(e.value)


def test_specks_away_from_the_digit_are_not_cropped_in() -> None:
    coverage = ink_coverage()
    reference = to_mnist(photo(coverage))
    dusty = photo(coverage)
    dusty[10:13, 10:13] = INK  # dust in two corners
    dusty[285:288, 225:228] = INK
    iou, _ = agreement(to_mnist(dusty), reference)
    assert iou > 0.95


def test_a_stroke_along_the_border_of_a_tight_crop_stays_ink() -> None:
    # A '7' cropped to its ink: the bar lies along the top border.
    coverage = ink_coverage()
    rows = np.flatnonzero(coverage.max(axis=1) > 0.5)
    cols = np.flatnonzero(coverage.max(axis=0) > 0.5)
    tight = photo(coverage)[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    ink = to_white_on_black(tight)
    assert ink[:3].max() > 0.9  # the bar, on the first rows
    iou, _ = agreement(to_mnist(tight), to_mnist(photo(coverage)))
    assert iou > 0.9


# ----------------------------------------------------------------- decoding


def test_a_stream_reads_as_the_file(tmp_path) -> None:
    import io

    path = tmp_path / "seven.png"
    Image.fromarray(draw_blob(90, 120)).save(path)
    from_stream = prepare_image(io.BytesIO(path.read_bytes()))
    np.testing.assert_array_equal(from_stream, prepare_image(path))
    with pytest.raises(ImageError, match="cannot decode") as caught:
        prepare_image(io.BytesIO(b"not an image"))
    assert caught.value.source is None


def test_large_pictures_are_shrunk_and_16_bit_grey_is_scaled(tmp_path) -> None:
    blob = draw_blob(300, 200)
    Image.fromarray(blob).resize((3000, 2000)).save(tmp_path / "big.png")
    assert load_image(tmp_path / "big.png", max_side=1024).shape == (683, 1024)
    assert load_image(tmp_path / "big.png").shape == (2000, 3000)
    # 16-bit grey (scanners): 65535 is white, not 255
    deep = (blob.astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    gray = load_image(tmp_path / "deep.png")
    np.testing.assert_allclose(gray, blob / 255.0, atol=1e-6)


def test_pillow_warnings_do_not_escape_decoding(tmp_path, monkeypatch) -> None:
    import struct
    import warnings

    path = tmp_path / "photo.jpg"
    # EXIF whose one tag points past the end of the data: Pillow warns
    # "Tag data larger than file" while reading the orientation.
    entry = struct.pack(">HHII", 0x010F, 2, 400, 1000)
    exif = b"Exif\x00\x00MM\x00\x2a" + struct.pack(">IH", 8, 1) + entry + struct.pack(">I", 0)
    Image.fromarray(draw_blob(150, 220)).save(path, quality=95, exif=exif)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would fail the decode
        assert prepare_image(path).shape == (1, FIELD, FIELD)
        # A picture over Pillow's decompression-bomb warning limit is still read
        # (it is shrunk at once); over twice the limit it is refused, in one line.
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150 * 220 - 1)
        assert prepare_image(path).shape == (1, FIELD, FIELD)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
        with pytest.raises(ImageError, match=r"cannot decode the image: .*decompression bomb") as e:
            prepare_image(path)
    assert "\n" not in str(e.value) and e.value.source == str(path)


def test_decode_errors_name_the_file_and_say_why(tmp_path) -> None:
    with pytest.raises(ImageError, match="is a directory") as e:
        load_image(tmp_path)
    assert str(e.value) == f"{tmp_path}: is a directory, not an image"
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    with pytest.raises(ImageError, match=r"^.*junk\.jpg: cannot decode the image: \S"):
        load_image(junk)
    blank = tmp_path / "blank.png"
    Image.new("L", (64, 64), 255).save(blank)
    with pytest.raises(ImageError, match="blank") as e:
        prepare_image(blank)
    assert e.value.source == str(blank)
    assert str(e.value) == f"{blank}: no digit found: the image is blank (one even tone)"


def test_a_mark_that_lies_only_along_the_border_is_still_ink() -> None:
    # A dash along the top edge of a page, nothing else: the only marks are
    # those that count the picture's mirror image beyond its border.
    picture = np.full((600, 600), PAPER)
    picture[:10, 200:350] = INK
    ink = to_white_on_black(picture)
    assert ink[:10, 200:350].min() == pytest.approx(1.0)
    assert np.count_nonzero(ink > 0.5) == 10 * 150


def test_arrays_that_are_not_pictures_are_refused() -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        to_mnist(np.where(np.eye(30) > 0, np.nan, 0.9))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        to_mnist(np.zeros((4, 30, 30)))


def _object_field(rng: np.random.Generator) -> np.ndarray:
    """A 28x28 light object on black spanning the field's height, as Fashion-MNIST's are."""
    rows, cols = np.mgrid[0:28, 0:28]
    body = ((rows - 13.5) / 14) ** 2 + ((cols - 13.5) / 9) ** 2 <= 1
    shading = 0.4 + 0.5 * (rows / 27) * rng.uniform(0.8, 1.0)  # smooth, as cloth is
    return np.where(body, shading, 0.0)


def test_an_image_of_fashion_mnists_kind_comes_back_as_it_was(rng) -> None:
    field = _object_field(rng)
    np.testing.assert_allclose(to_fashion_mnist(field), field, atol=1e-6)
    np.testing.assert_array_equal(as_is(field), field.astype(np.float32))


def test_a_photo_of_an_object_on_a_light_page_is_trimmed_fitted_and_negated(rng) -> None:
    field = _object_field(rng)
    page = np.full((300, 250), 0.9)
    big = resize(field, 280, 280)  # dark on the light page, off-centre
    page[12:292, 3:248] = np.minimum(0.9, 0.9 - big[:, 20:265] * 0.9 + 0.001)
    got = to_fashion_mnist(page)
    assert got.shape == (28, 28) and got.dtype == np.float32
    assert got[:, :3].max() == 0 and got[:, -3:].max() == 0  # centred, black around
    assert np.abs(got - field).mean() < 0.05


@pytest.mark.parametrize("page", [0.45, 0.3, 0.6])
def test_a_dark_object_on_a_grey_page_comes_out_light_on_black(page: float) -> None:
    gray = np.full((100, 100), page)
    gray[30:70, 40:60] = 0.0  # a black box, 40 x 20
    got = to_fashion_mnist(gray)
    assert got[14, 14] == pytest.approx(1.0) and got[0, 0] == 0 and got[14, 2] == 0
    assert got.max() == pytest.approx(1.0)


def test_a_picture_of_one_tone_shows_no_object() -> None:
    with pytest.raises(ImageError, match="no object found: nothing differs from the background"):
        to_fashion_mnist(np.full((40, 30), 0.8))
