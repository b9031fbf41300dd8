"""Short texts of arbitrary values, so that an error message stays one short line
whatever a damaged or crafted file holds."""

from __future__ import annotations

import reprlib

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxstring = 3, 4, 4, 40


def clip(text: object, limit: int = 80) -> str:
    """str(text) on one line, cut to at most `limit` characters."""
    line = " ".join(str(text)[: 2 * limit].split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def short_repr(value: object, limit: int = 80) -> str:
    """The repr of some data, its depth and length bounded, cut to `limit` characters."""
    return clip(_SHORT.repr(value), limit)


def names_list(names: list[str], shown: int = 3) -> str:
    """The first `shown` names, quoted, and how many more: "'a', 'b' and 4 more"."""
    text = ", ".join(repr(clip(name, 40)) for name in names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")
