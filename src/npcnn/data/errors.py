"""Exceptions raised by the data module.

Every error is a ``ValueError`` subclass so callers can catch bad data the
same way whether it came from a corrupt file or a failed download.
"""


class DataError(ValueError):
    """A data file is missing, malformed or does not match its checksum.

    ``summary`` is the gist in one line (for a command line's error message);
    ``str()`` may add detail over several lines.
    """

    def __init__(self, message: str, summary: str | None = None) -> None:
        super().__init__(message)
        self.summary = summary or message.strip().splitlines()[0]


class LabelError(DataError):
    """Labels lie outside ``[0, number of classes)`` of the data set."""


class DownloadError(DataError):
    """No mirror could deliver a file (offline, refused, truncated, ...)."""


class ChecksumError(DownloadError):
    """A file's content does not match its published checksum."""
