"""A picture file -> a model input (1, 28, 28), by the recipe of the model's data set."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import BinaryIO

import numpy as np

from npcnn.imaging.decode import load_image
from npcnn.imaging.errors import ImageError
from npcnn.imaging.mnist import to_mnist
from npcnn.imaging.objects import as_is, to_fashion_mnist

#: How a picture becomes a 28 x 28 input: "digit" as MNIST's digits were made (ink
#: cropped, 20 px, centred by mass), "object" as Fashion-MNIST's products (trimmed,
#: 28 px, centred), "as-is" only resized (a picture already in the data set's format).
RECIPES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "digit": to_mnist,
    "object": to_fashion_mnist,
    "as-is": as_is,
}
# Larger pictures are shrunk to this longer side first: a digit or a product needs
# far fewer pixels, and it bounds the time and memory per picture.
WORK_SIDE = 1024


def prepare_image(source: str | os.PathLike[str] | BinaryIO, recipe: str = "digit") -> np.ndarray:
    """Load a file or binary stream; return the model input (1, 28, 28) float32 in [0, 1]
    made by `recipe` (a key of RECIPES).

    The picture is shrunk to ``WORK_SIDE`` px on its longer side first.
    Raises FileNotFoundError, KeyError for an unknown recipe, or
    :class:`ImageError` (its ``source`` the path, None for a stream) if it cannot
    be decoded or shows nothing the recipe can find.
    """
    make = RECIPES[recipe]
    gray = load_image(source, max_side=WORK_SIDE)
    try:
        return make(gray)[np.newaxis]
    except ImageError as err:
        name = None if hasattr(source, "read") else os.fspath(source)
        raise ImageError(err.cause, name) from None
