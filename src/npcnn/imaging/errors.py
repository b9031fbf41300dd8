"""The one exception of npcnn.imaging."""

from __future__ import annotations

import numpy as np

#: How every "there is no digit in this picture" cause begins.
NO_DIGIT = "no digit found"
#: Seen in an ink map (after background removal) that is 0 everywhere.
NOTHING_STANDS_OUT = (
    "nothing stands out from the background as pen strokes do (an area wider "
    "than a third of the picture counts as background)"
)
# A picture whose pixels all lie within this of one another is of one tone.
EVEN_TONE = 1 / 255


def nothing_stands_out(gray: np.ndarray) -> str:
    """The cause for a picture (H, W) in [0, 1] in which no mark was found."""
    if float(np.ptp(gray)) <= EVEN_TONE:
        return f"{NO_DIGIT}: the image is blank (one even tone)"
    return f"{NO_DIGIT}: {NOTHING_STANDS_OUT}"


class ImageError(ValueError):
    """A picture could not be decoded, or shows no digit (it is blank, or has no
    mark shaped as pen strokes are).

    ``cause`` says why; ``source`` names the file when known, and ``str()``
    is ``"source: cause"``.
    """

    def __init__(self, cause: str, source: str | None = None) -> None:
        super().__init__(f"{source}: {cause}" if source else cause)
        self.cause = cause
        self.source = source
