"""``npcnn predict``: classify image files with a saved model."""

from __future__ import annotations

import argparse
import io
import sys
from typing import TYPE_CHECKING

from npcnn.cli import options
from npcnn.cli.errors import EXIT_FAILURE, EXIT_OK, CLIError, UsageError, print_error
from npcnn.imaging.prepare import RECIPES
from npcnn.training.evaluate import TTA_MODES

if TYPE_CHECKING:
    import numpy as np

    from npcnn.nn import Layer

#: The IMAGE argument that means standard input, and its name in the output.
STDIN = "-"
STDIN_NAME = "<stdin>"
#: A picture piped in is read up to this size (the largest photos are tens of MB).
MAX_STDIN_BYTES = 256 << 20
STDIN_PIECE_BYTES = 1 << 20


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="classify PNG/JPEG images with a saved model (top-3 classes)",
        description=(
            "Classify each IMAGE with MODEL. Photos and drawings of any size and "
            "polarity are turned upright as their EXIF tag says, made grayscale, and "
            "prepared as the images of the model's data set were (--prepare). Digits "
            "and characters as MNIST's: the ink found against its local background "
            "(uneven light, a desk around the page, noise), cropped to the digit, "
            "scaled to 20 px on the longer side and centred by centre of mass in "
            "28x28. Objects as Fashion-MNIST's products: the object found against the "
            "tone of the picture's edges, trimmed, scaled to 28 px on the longer side "
            "and centred, light on black. An image that cannot be read, or shows "
            "nothing to classify (blank, a dot, a filled shape), gets one error line "
            "and the others are still classified; the exit code is then 1."
        ),
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        type=options.non_empty,
        help=options.MODEL_HELP,
    )
    p.add_argument(
        "images",
        metavar="IMAGE",
        nargs="+",
        type=options.non_empty,
        help="image files (PNG, JPEG, ...); '-' reads one image from standard input",
    )
    p.add_argument(
        "--data",
        metavar="NAME",
        help="take the class names from this data set (default: run.json next to MODEL, "
        "else class indices)",
    )
    p.add_argument(
        "--prepare",
        choices=list(RECIPES),
        help="how pictures become 28x28 inputs: digit (MNIST's recipe), object "
        "(Fashion-MNIST's), as-is (only resized: pictures already in that format); "
        "default: the recipe of the model's data set (--data, else run.json next to "
        "MODEL), else digit",
    )
    p.add_argument("--top", type=options.positive_int, default=3, help="classes shown (default: 3)")
    p.add_argument(
        "--tta",
        choices=TTA_MODES,
        help="test-time augmentation: flip averages each image's logits with those of its "
        "mirror image (default: the run's, from run.json next to MODEL, else none)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from npcnn.cli.common import check_finite, check_model_fits, class_names, load_model, run_tta

    if args.images.count(STDIN) > 1:
        raise UsageError(f"standard input ('{STDIN}') can be read only once")
    model = load_model(args.model)
    check_model_fits(model, (1, 28, 28), args.model)
    tta, tta_source = run_tta(args.model, args.tta)
    recipe, data_name = picture_recipe(args.model, args.prepare, args.data)
    names, inputs = [], []
    for source in args.images:
        name = STDIN_NAME if source == STDIN else source
        try:
            inputs.append(read_image(source, recipe))
            names.append(name)
        except CLIError as err:
            print_error(f"{name}: {err}")
    if inputs:
        if args.tta is None and tta != "none":  # the run's, which the user may not know
            note = f"note: test-time augmentation: {tta} ({tta_source}); --tta none turns it off"
            print(note, file=sys.stderr)
        if args.prepare is None and recipe != "digit":  # likewise
            note = f"note: pictures prepared as {data_name}'s images were (--prepare {recipe})"
            print(note, file=sys.stderr)
        probabilities = classify(model, inputs, tta)
        check_finite(probabilities, args.model)
        classes = class_names(args.model, args.data, probabilities.shape[1])
        top = min(args.top, len(classes))
        for name, probs in zip(names, probabilities, strict=True):
            order = (-probs).argsort(kind="stable")[:top]
            print(f"{name}: " + ", ".join(f"{classes[k]} ({100 * probs[k]:.1f}%)" for k in order))
    return EXIT_OK if len(inputs) == len(args.images) else EXIT_FAILURE


def picture_recipe(model_path: str, given: str | None, data: str | None) -> tuple[str, str]:
    """How pictures are prepared for the model (a key of `npcnn.imaging.RECIPES`), and
    the data set that says so: ``given`` (--prepare), else the recipe of the data set
    ``data`` (--data) or of the run's (run.json next to the model), else "digit"."""
    from npcnn.cli.common import run_data_name
    from npcnn.data import dataset_spec

    name = data if data is not None else run_data_name(model_path)
    spec = dataset_spec(name) if name is not None else None
    if given is not None or spec is None:
        return given or "digit", ""
    return spec.pictures, spec.name


def read_image(source: str, recipe: str = "digit") -> np.ndarray:
    """The model input (1, 28, 28) for a path, or for standard input if ``source`` is '-'.

    Raises CLIError with the cause (without the file's name) for a file that
    is missing, unreadable, not an image or shows no digit.
    """
    from npcnn.imaging import ImageError, prepare_image

    try:
        if source == STDIN:
            return prepare_image(io.BytesIO(_read_stdin()), recipe)
        return prepare_image(source, recipe)
    except FileNotFoundError:
        raise CLIError("no such image file") from None
    except ImageError as err:
        raise CLIError(err.cause) from None


def _read_stdin() -> bytes:
    stream = sys.stdin
    if stream is None:
        raise CLIError("standard input is closed")
    if stream.isatty():
        raise CLIError("standard input is a terminal: pipe an image into it")
    # Read in pieces, up to a cap: one unbounded read() of an endless pipe (/dev/zero)
    # would fill the memory, and a signal (Ctrl-C, SIGTERM) is only handled between reads.
    pieces, size = [], 0
    while piece := stream.buffer.read(STDIN_PIECE_BYTES):
        pieces.append(piece)
        size += len(piece)
        if size > MAX_STDIN_BYTES:
            raise CLIError(
                f"standard input holds more than {MAX_STDIN_BYTES >> 20} MiB: too much for "
                "one picture"
            )
    if not size:
        raise CLIError("standard input is empty")
    return b"".join(pieces)


def classify(model: Layer, inputs: list[np.ndarray], tta: str = "none") -> np.ndarray:
    """Class probabilities (N, classes) of the model for a list of (1, 28, 28) inputs,
    with the test-time augmentation ``tta`` (`npcnn.training.evaluate`)."""
    import numpy as np

    from npcnn import nn
    from npcnn.training.evaluate import inference_logits

    # The model's parameters decide the precision; one without any (a Relu, a pooling)
    # computes in the dtype of its input, and float32 is what the images are.
    x = np.stack(inputs).astype(next((p.dtype for p in model.parameters()), np.float32))
    try:
        logits = inference_logits(model, x, tta)
    except ValueError as err:
        raise CLIError(f"the model does not take 28x28 grayscale images: {err}") from None
    if logits.ndim != 2:
        raise CLIError(
            f"the model's outputs for {len(x)} image{'s' if len(x) != 1 else ''} are "
            f"{logits.shape}, not ({len(x)}, K) scores of K classes"
        )
    return nn.softmax(logits)
