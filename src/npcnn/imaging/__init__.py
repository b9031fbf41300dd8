"""Turn an arbitrary picture of a digit into an MNIST-style 28x28 input.

MNIST's recipe (LeCun et al.): white ink on a black background, the ink's
bounding box scaled so its longer side is 20 px (aspect ratio kept, with
anti-aliasing), then placed in a 28x28 field so that the ink's centre of
mass sits at the field's centre.

- :func:`load_image` (:mod:`.decode`) decodes a PNG/JPEG/... file or
  stream with Pillow to upright grayscale.
- :func:`to_white_on_black` (:mod:`.ink`) finds the ink on a page of either
  polarity, under uneven light, on a desk, through noise.
- :func:`to_mnist` and :func:`prepare_image` (:mod:`.mnist`) apply the
  recipe, or raise :class:`ImageError` for a picture with no digit in it.
"""

from npcnn.imaging.decode import load_image
from npcnn.imaging.errors import ImageError
from npcnn.imaging.ink import INK_THRESHOLD, ink_is_dark, stroke_width, to_white_on_black
from npcnn.imaging.mnist import BOX, FIELD, WORK_SIDE, center_of_mass, prepare_image, to_mnist
from npcnn.imaging.morphology import closing, opening

__all__ = [
    "BOX",
    "FIELD",
    "INK_THRESHOLD",
    "WORK_SIDE",
    "ImageError",
    "center_of_mass",
    "closing",
    "ink_is_dark",
    "load_image",
    "opening",
    "prepare_image",
    "stroke_width",
    "to_mnist",
    "to_white_on_black",
]
