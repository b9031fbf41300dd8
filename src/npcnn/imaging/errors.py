"""The one exception of npcnn.imaging."""

from __future__ import annotations

#: How every "there is no digit in this picture" cause begins.
BLANK = "the image is blank"


class ImageError(ValueError):
    """A picture could not be decoded, or shows no digit (it is blank).

    ``cause`` says why; ``source`` names the file when known, and ``str()``
    is ``"source: cause"``.
    """

    def __init__(self, cause: str, source: str | None = None) -> None:
        super().__init__(f"{source}: {cause}" if source else cause)
        self.cause = cause
        self.source = source
