"""Writing files atomically, so a crash or Ctrl-C never leaves half a file behind.

Everything npcnn writes (models, checkpoints, logs, plots, downloads) goes
to a temporary file in the destination's directory and is renamed over the
destination only once complete; a previous file stays intact until then.

A temporary file is named `.NAME.tmp-HOST-PID-RANDOM` (`.part` for downloads):
hidden, and saying which process wrote it. A process killed before the rename
leaves it behind; the next atomic write into the same directory, and the
command line's next use of a file there (a resume, an evaluation), remove
those whose writer is gone (same host, no such process) or that nobody has
touched for `STALE_AFTER` seconds (another host's, or a process id used
again since).
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

#: An untouched temporary file older than this is stale whatever its process id says.
STALE_AFTER = 24 * 3600


def temporary_name(target: Path, suffix: str = ".tmp") -> Path:
    """A fresh temporary path beside `target`: `.NAME{suffix}-HOST-PID-RANDOM`."""
    return target.with_name(
        f"{_temporary_prefix(target, suffix)}{_host()}-{os.getpid()}-{secrets.token_hex(4)}"
    )


def _temporary_prefix(target: Path, suffix: str) -> str:
    return f".{target.name}{suffix}-"


def _host() -> str:
    # The name goes between dashes in the file name: dashes and dots would be ambiguous.
    return "".join(c for c in socket.gethostname() if c.isalnum()) or "host"


# `.NAME.tmp-HOST-PID-RANDOM` (or .part): what `temporary_name` makes, for any NAME.
_TEMPORARY = re.compile(r"^\..+\.(?:tmp|part)-(?P<tail>[A-Za-z0-9]+-\d+-[0-9a-f]{8})$")


def remove_stale_temporaries(target: Path, suffix: str = ".tmp") -> list[Path]:
    """Remove the temporary files of earlier writes of `target` that were killed
    before renaming them (see the module docstring); returns what was removed."""
    prefix = _temporary_prefix(target, suffix)
    return _remove_stale(
        target.parent, lambda name: name[len(prefix) :] if name.startswith(prefix) else None
    )


def remove_stale_temporaries_in(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove abandoned temporary files of any name from `directory` (see the module
    docstring); returns what was removed."""

    def tail(name: str) -> str | None:
        match = _TEMPORARY.match(name)
        return match["tail"] if match else None

    return _remove_stale(Path(directory), tail)


def _remove_stale(directory: Path, tail_of: Callable[[str], str | None]) -> list[Path]:
    """Remove the files of `directory` whose name has a HOST-PID-RANDOM tail (`tail_of`)
    and that are stale."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        tail = tail_of(entry.name)
        if tail is not None and _is_stale(entry, tail):
            with suppress(FileNotFoundError, PermissionError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _is_stale(entry: os.DirEntry, tail: str) -> bool:
    """Whether the temporary file `entry`, named ...-HOST-PID-RANDOM, was abandoned."""
    try:
        age = time.time() - entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return False
    if age > STALE_AFTER:
        return True
    host, _, rest = tail.partition("-")
    pid = rest.partition("-")[0]
    if host != _host() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    return not _process_exists(int(pid))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True  # another user's process (PermissionError), or an odd id: keep the file
    return True


@contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` if the block succeeds.

    If the block raises, the temporary file is removed and `path` is untouched.
    The temporary file is created empty, with the permissions a plain open()
    would give it; stale temporaries of earlier, killed writes into the same
    directory are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries_in(path.parent)
    tmp = temporary_name(path, suffix)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))
