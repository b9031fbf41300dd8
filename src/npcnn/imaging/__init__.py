"""Turn an arbitrary picture of a digit (or of an object) into a 28x28 model input.

MNIST's recipe (LeCun et al.): white ink on a black background, the ink's
bounding box scaled so its longer side is 20 px (aspect ratio kept, with
anti-aliasing), then placed in a 28x28 field so that the ink's centre of
mass sits at the field's centre.

- :func:`load_image` (:mod:`.decode`) decodes a PNG/JPEG/... file or
  stream with Pillow to upright grayscale.
- :func:`to_white_on_black` (:mod:`.ink`) finds the ink on a page of either
  polarity, under uneven light, on a desk, through noise.
- :func:`to_mnist` (:mod:`.mnist`) applies the recipe, or raises
  :class:`ImageError` for a picture with no digit in it.
- :func:`to_fashion_mnist` (:mod:`.objects`) applies Fashion-MNIST's recipe
  instead (an object on a plain background: trimmed, fitted in 28x28), and
  :func:`prepare_image` (:mod:`.prepare`) decodes a file and applies the
  recipe it is asked for (``RECIPES``).
"""

from npcnn.imaging.decode import load_image
from npcnn.imaging.errors import ImageError
from npcnn.imaging.ink import INK_THRESHOLD, ink_is_dark, stroke_width, to_white_on_black
from npcnn.imaging.mnist import BOX, FIELD, center_of_mass, to_mnist
from npcnn.imaging.morphology import closing, opening
from npcnn.imaging.objects import as_is, to_fashion_mnist
from npcnn.imaging.prepare import RECIPES, WORK_SIDE, prepare_image

__all__ = [
    "BOX",
    "FIELD",
    "INK_THRESHOLD",
    "RECIPES",
    "WORK_SIDE",
    "ImageError",
    "as_is",
    "center_of_mass",
    "closing",
    "ink_is_dark",
    "load_image",
    "opening",
    "prepare_image",
    "stroke_width",
    "to_fashion_mnist",
    "to_mnist",
    "to_white_on_black",
]
