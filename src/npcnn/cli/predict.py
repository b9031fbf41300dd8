"""``npcnn predict``: classify image files with a saved model."""

from __future__ import annotations

import argparse

from npcnn.cli import options
from npcnn.cli.errors import EXIT_OK


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="classify PNG/JPEG images with a saved model (top-3 classes)",
        description=(
            "Classify each IMAGE with MODEL. Images of any size and polarity are "
            "prepared as MNIST was: grayscale, white ink on black, cropped to the ink, "
            "scaled to 20 px on the longer side and centred by centre of mass in 28x28."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="a model .npz written by 'npcnn train'")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument(
        "--data",
        metavar="NAME",
        help="take the class names from this data set (default: run.json next to MODEL, "
        "else class indices)",
    )
    p.add_argument("--top", type=options.positive_int, default=3, help="classes shown (default: 3)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from npcnn import nn
    from npcnn.cli.common import class_names, load_model
    from npcnn.cli.errors import CLIError
    from npcnn.imaging import ImageError, prepare_image

    model = load_model(args.model)
    inputs = []
    for path in args.images:
        try:
            inputs.append(prepare_image(path))
        except FileNotFoundError:
            raise CLIError(f"no such image file: {path}") from None
        except ImageError as err:
            raise CLIError(str(err)) from None
    x = np.stack(inputs).astype(next(p.dtype for p in model.parameters()))
    try:
        probabilities = nn.softmax(model.forward(x, training=False))
    except ValueError as err:
        raise CLIError(f"the model does not take 28x28 grayscale images: {err}") from None
    classes = class_names(args.model, args.data, probabilities.shape[1])
    top = min(args.top, len(classes))
    for path, probs in zip(args.images, probabilities, strict=True):
        order = np.argsort(-probs, kind="stable")[:top]
        ranked = ", ".join(f"{classes[k]} ({100 * probs[k]:.1f}%)" for k in order)
        print(f"{path}: {ranked}")
    return EXIT_OK
