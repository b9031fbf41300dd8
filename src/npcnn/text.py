"""Short texts of arbitrary values, so that an error message stays one short line
whatever a damaged or crafted file holds."""

from __future__ import annotations

import reprlib
import unicodedata

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


def display_width(text: str) -> int:
    """The terminal columns ``text`` takes: two for a wide East Asian character (CJK),
    none for a combining mark, one for any other."""
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


def pad(text: str, columns: int, right: bool = False) -> str:
    """``text`` padded with spaces to ``columns`` terminal columns (on the left when
    ``right``-aligned), as str.ljust/rjust would with one column per character."""
    spaces = " " * max(0, columns - display_width(text))
    return spaces + text if right else text + spaces


def cut(text: str, columns: int) -> str:
    """The longest start of ``text`` that fits in ``columns`` terminal columns."""
    while display_width(text) > columns:
        text = text[:-1]
    return text
