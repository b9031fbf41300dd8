"""``npcnn predict``: several files, unreadable or blank ones, standard input, warnings."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import npcnn
from npcnn.cli.main import main
from npcnn.models import get_preset

Image = pytest.importorskip("PIL.Image")
ImageDraw = pytest.importorskip("PIL.ImageDraw")

LINE = re.compile(r"^(.+): (\S+) \((\d+\.\d)%\)(, \S+ \(\d+\.\d%\))*$")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.npz"
    npcnn.save(get_preset("small").model(seed=0), path)
    return path


def digit(path: Path, angle: float = 0.0) -> Path:
    """A dark '7' on white paper, saved at ``path`` (format from its suffix)."""
    pic = Image.new("L", (120, 160), 255)
    draw = ImageDraw.Draw(pic)
    draw.line([(25, 35), (90, 35)], fill=0, width=10)
    draw.line([(90, 35), (45, 130)], fill=0, width=10)
    pic.rotate(angle, fillcolor=255).save(path)
    return path


def test_bad_files_are_reported_one_line_each_and_the_others_predicted(
    capsys, tmp_path, model
) -> None:
    good = digit(tmp_path / "seven.png")
    other = digit(tmp_path / "tilted.jpg", angle=10)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    blank = tmp_path / "blank.png"
    Image.new("L", (80, 80), 255).save(blank)
    dot = tmp_path / "dot.png"
    Image.fromarray(np.pad(np.full((2, 2), 255, np.uint8), 13)).save(dot)
    missing = tmp_path / "missing.png"

    code, out, err = run_cli(capsys, "predict", model, good, junk, blank, missing, dot, other)
    assert code == 1
    assert [LINE.match(line).group(1) for line in out.splitlines()] == [str(good), str(other)]
    lines = err.splitlines()
    assert "Traceback" not in err and len(lines) == 4, err
    assert all(line.startswith("npcnn: error: ") for line in lines)
    assert lines[0].startswith(f"npcnn: error: {junk}: cannot decode the image: ")
    assert lines[1] == f"npcnn: error: {blank}: no digit found: the image is blank (one even tone)"
    assert lines[2] == f"npcnn: error: {missing}: no such image file"
    assert lines[3].startswith(f"npcnn: error: {dot}: no digit found: its only mark is 2x2 px")

    code, out, err = run_cli(capsys, "predict", model, good, other)
    assert code == 0 and err == "" and len(out.splitlines()) == 2


def test_a_dash_reads_the_image_from_standard_input(capsys, tmp_path, model, monkeypatch) -> None:
    path = digit(tmp_path / "seven.png")

    class Stdin(io.StringIO):
        def __init__(self, data: bytes) -> None:
            super().__init__()
            self.buffer = io.BytesIO(data)

    monkeypatch.setattr(sys, "stdin", Stdin(path.read_bytes()))
    code, out, err = run_cli(capsys, "predict", model, path, "-")
    assert code == 0, err
    from_file, from_stdin = out.splitlines()
    assert from_stdin == "<stdin>" + from_file[len(str(path)) :]

    monkeypatch.setattr(sys, "stdin", Stdin(b""))
    code, out, err = run_cli(capsys, "predict", model, "-", path)
    assert code == 1 and out.startswith(f"{path}: ")
    assert err == "npcnn: error: <stdin>: standard input is empty\n"

    code, out, err = run_cli(capsys, "predict", model, "-", "-")
    assert code == 2 and out == ""
    assert err.startswith("npcnn: error: standard input ('-') can be read only once")


def test_an_endless_pipe_is_read_up_to_a_cap(capsys, tmp_path, model, monkeypatch) -> None:
    from npcnn.cli import predict

    class Endless(io.RawIOBase):  # as /dev/zero: read(n) always gives n bytes
        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            buffer[:] = bytes(len(buffer))
            return len(buffer)

    stdin = io.TextIOWrapper(io.BufferedReader(Endless()))
    monkeypatch.setattr(sys, "stdin", stdin)
    monkeypatch.setattr(predict, "MAX_STDIN_BYTES", 3 << 20)
    code, out, err = run_cli(capsys, "predict", model, "-")
    assert code == 1 and out == ""
    assert (
        err
        == "npcnn: error: <stdin>: standard input holds more than 3 MiB: too much for one picture\n"
    )


def test_a_dash_at_a_terminal_says_to_pipe_an_image(capsys, model, monkeypatch) -> None:
    class Terminal(io.StringIO):
        buffer = io.BytesIO()

        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    code, _, err = run_cli(capsys, "predict", model, "-")
    assert code == 1
    assert err == "npcnn: error: <stdin>: standard input is a terminal: pipe an image into it\n"


def test_pillow_warnings_do_not_precede_the_output(capsys, tmp_path, model, monkeypatch) -> None:
    big = digit(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 120 * 160 - 1)  # warns, still decodes
    bomb = tmp_path / "bomb.png"
    Image.new("L", (400, 400), 255).save(bomb)  # over twice the limit: refused
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run_cli(capsys, "predict", model, big, bomb)
    assert [str(w.message) for w in caught] == []
    assert code == 1 and out.startswith(f"{big}: ")
    assert err.count("\n") == 1 and "decompression bomb" in err and str(bomb) in err


def test_standard_input_through_a_real_pipe(tmp_path, model) -> None:
    # The installed command as a shell runs it: `npcnn predict MODEL - < photo.jpg`,
    # a phone photo stored sideways whose EXIF also carries a broken tag.
    import struct

    upright = Image.open(digit(tmp_path / "seven.png"))
    entry = struct.pack(">HHII", 0x010F, 2, 400, 1000)  # points past the end: Pillow warns
    orientation = struct.pack(">HHII", 0x0112, 3, 1, 6 << 16)
    exif = b"Exif\x00\x00MM\x00\x2a" + struct.pack(">IH", 8, 2) + entry + orientation
    photo = tmp_path / "photo.jpg"
    upright.rotate(90, expand=True).save(photo, quality=95, exif=exif + struct.pack(">I", 0))
    with photo.open("rb") as stdin:
        result = subprocess.run(
            [sys.executable, "-W", "default", "-m", "npcnn", "predict", str(model), "-"],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert LINE.match(result.stdout.strip()).group(1) == "<stdin>"


def _shoe(path: Path) -> Path:
    """A dark filled shape (a shoe's outline, roughly) on a light grey page."""
    pic = Image.new("L", (300, 220), 230)
    ImageDraw.Draw(pic).polygon([(40, 150), (60, 80), (150, 110), (260, 150), (250, 175)], 40)
    pic.save(path)
    return path


def test_a_fashion_model_gets_pictures_prepared_as_fashion_mnist_was(
    capsys, tmp_path, model
) -> None:
    from npcnn.data import dataset_spec
    from npcnn.imaging import prepare_image, to_fashion_mnist
    from npcnn.training.evaluate import inference_logits

    classes = list(dataset_spec("fashion-mnist").classes)
    record = {"config": {"data": "fashion-mnist"}, "data": {"name": "fashion-mnist"}}
    (tmp_path / "run.json").write_text(
        json.dumps({**record, "data": {**record["data"], "classes": classes}})
    )
    shoe = _shoe(tmp_path / "shoe.png")
    code, out, err = run_cli(capsys, "predict", model, shoe, "--top", "10")
    assert (
        code == 0
        and err == "note: pictures prepared as fashion-mnist's images were (--prepare object)\n"
    )
    # The input: the shape trimmed, 28 px on its longer side, light on black.
    x = prepare_image(shoe, "object")
    assert x.shape == (1, 28, 28) and x[0, 0, 0] == 0 and x.max() > 0.7
    np.testing.assert_array_equal(x[0], to_fashion_mnist(np.asarray(Image.open(shoe), float) / 255))
    probs = npcnn.nn.softmax(inference_logits(npcnn.load(model), x[None]))[0]
    shown = dict(item[:-2].rsplit(" (", 1) for item in out.strip().split(": ", 1)[1].split(", "))
    assert shown == {c: f"{100 * p:.1f}" for c, p in zip(classes, probs, strict=True)}
    code, out, err = run_cli(capsys, "predict", model, shoe, "--prepare", "digit")
    assert code == 0 and err == ""  # asked for: no note
