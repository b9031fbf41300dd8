"""Download one file from a list of mirrors, verified and written atomically.

Each mirror is tried in order. Transient failures (timeouts, resets, a body
shorter than its Content-Length, HTTP 5xx) are retried on the same mirror;
permanent ones (refused connection, unknown host, HTTP 4xx) and checksum
mismatches move on to the next mirror. The bytes go to a temporary file in
the destination directory and are renamed into place only once verified, so
an interrupted or bad download never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from npcnn.data.checksums import FileSpec, verify_file
from npcnn.data.errors import ChecksumError, DownloadError
from npcnn.files import atomic_path

DEFAULT_TIMEOUT = 30.0  # seconds per socket operation, not for the whole file
DEFAULT_ATTEMPTS = 2  # per mirror
RETRY_DELAY = 1.0  # seconds, multiplied by the attempt number
CHUNK_SIZE = 1 << 16
USER_AGENT = "npcnn-data/0.1 (python urllib)"


class IncompleteTransfer(OSError):
    """The server closed the connection before sending Content-Length bytes."""


def mirror_url(mirror: str, name: str) -> str:
    """The URL of file ``name`` on ``mirror`` (a base URL)."""
    return mirror.rstrip("/") + "/" + name


def _is_transient(exc: BaseException) -> bool:
    """Whether retrying the same URL might succeed."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code in (408, 429)
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, ConnectionRefusedError | socket.gaierror):
        return False
    return isinstance(exc, OSError | http.client.HTTPException)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _progress_bar(total: int | None, desc: str, progress: bool | None):
    """A tqdm bar counting bytes, or None when tqdm is missing or not wanted."""
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024)


def _copy_response(response, out: BinaryIO, desc: str, progress: bool | None) -> None:
    length = response.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None
    bar = _progress_bar(total, desc, progress)
    received = 0
    try:
        while chunk := response.read(CHUNK_SIZE):
            out.write(chunk)
            received += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    # urllib returns a short body without complaint when the peer closes early.
    if total is not None and received != total:
        raise IncompleteTransfer(f"received {received} of {total} bytes")


def _download(url: str, dest: Path, file: FileSpec, timeout: float, progress) -> None:
    """Fetch `url` into `dest` atomically, verified against `file`'s checksum first."""
    with atomic_path(dest, suffix=".part") as tmp:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        with open(tmp, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            _copy_response(resp, out, file.name, progress)
        verify_file(tmp, file, label=url, allow_decompressed=False)


def fetch(
    file: FileSpec,
    mirrors: Sequence[str],
    dest_dir: str | os.PathLike[str],
    *,
    progress: bool | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    attempts: int = DEFAULT_ATTEMPTS,
) -> Path:
    """Download ``file`` from the first mirror that delivers it intact.

    Returns ``dest_dir / file.name``. ``progress``: True shows a tqdm bar,
    False hides it, None shows it when stderr is a terminal.

    Raises :class:`ChecksumError` (naming the file and the expected and actual
    checksums) when some mirror answered but none with the right bytes, and
    :class:`DownloadError` listing every failed URL when none answered.
    """
    dest_dir = Path(dest_dir)
    made = not dest_dir.exists()
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _fetch_into(file, mirrors, dest_dir, progress, timeout, attempts)
    except (ChecksumError, DownloadError):
        if made:  # a failed download leaves no empty folder behind in the cache
            with contextlib.suppress(OSError):
                dest_dir.rmdir()
        raise


def _fetch_into(
    file: FileSpec,
    mirrors: Sequence[str],
    dest_dir: Path,
    progress: bool | None,
    timeout: float,
    attempts: int,
) -> Path:
    """`fetch` into an existing ``dest_dir``."""
    dest = dest_dir / file.name
    failures: list[str] = []
    mismatches: list[str] = []
    for mirror in mirrors:
        url = mirror_url(mirror, file.name)
        for attempt in range(1, attempts + 1):
            try:
                _download(url, dest, file, timeout, progress)
            except (OSError, http.client.HTTPException) as exc:
                failures.append(f"{url}: {_describe(exc)}")
                if attempt < attempts and _is_transient(exc):
                    time.sleep(RETRY_DELAY * attempt)
                    continue
                break
            except ChecksumError as exc:
                mismatches.append(str(exc))
                failures.append(f"{url}: checksum mismatch")
                break
            return dest
    if mismatches:
        raise ChecksumError(
            f"{file.name}: no mirror delivered a file matching the published checksum:\n  "
            + "\n  ".join(mismatches)
        )
    raise DownloadError(f"{file.name}: download failed:\n  " + "\n  ".join(failures))
