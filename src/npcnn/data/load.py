"""``load_dataset``: find a data set on disk, download it if needed, read it.

Look-up order for the files of a named data set: the cache directory
(``<cache>/<name>/``), then the spec's read-only ``search_dirs`` (such as the
directory of Debian's ``dataset-fashion-mnist``), then the mirrors. Files
are accepted compressed (``*.gz``) or decompressed, and checked against the
published checksums before use.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from npcnn.data.checksums import FileSpec, check_digests
from npcnn.data.datasets import DATASETS, DIGITS, IDX_FILE_NAMES, Dataset, DatasetSpec
from npcnn.data.download import fetch, mirror_url
from npcnn.data.errors import ChecksumError, DataError, DownloadError
from npcnn.data.idx import decompress_idx, parse_idx, read_raw
from npcnn.data.sample import read_packaged

ENV_VAR = "NPCNN_DATA"


def default_cache_dir() -> Path:
    """Root of the download cache; each data set gets a sub-directory.

    ``$NPCNN_DATA`` if set, else the platform's user cache directory for
    npcnn (``~/.cache/npcnn`` on Linux), via platformdirs when installed.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    try:
        from platformdirs import user_cache_dir
    except ImportError:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(base) / "npcnn"
    return Path(user_cache_dir("npcnn", appauthor=False))


def find_file(directory: str | os.PathLike[str], file: FileSpec) -> Path | None:
    """``directory/name.gz`` or its decompressed ``directory/name``, whichever exists."""
    for candidate in (file.name, file.stem):
        path = Path(directory) / candidate
        if path.is_file():
            return path
    return None


def _read_checked(path: Path, file: FileSpec | None, hint: str = "") -> np.ndarray:
    """Read an IDX file, checking its checksum first when ``file`` gives one."""
    raw = read_raw(path)
    data = decompress_idx(raw, str(path))
    if file is not None:
        try:
            check_digests(raw, data, file, str(path))
        except ChecksumError as exc:
            raise ChecksumError(f"{exc}{hint}") from None
    return parse_idx(data, str(path))


def _manual_download_error(
    spec: DatasetSpec, missing: Sequence[FileSpec], target: Path, reason: str
) -> DownloadError:
    """The error for files that are neither on disk nor downloadable: what to fetch, where to."""
    names = ", ".join(file.name for file in missing)
    source = f" from {spec.mirrors[0]}" if spec.mirrors else ""
    summary = (
        f"the {spec.name!r} data set is not on disk and could not be downloaded "
        f"({reason.splitlines()[0].rstrip(':')}); download {names}{source} into {target} "
        f"(or into ${ENV_VAR}/{spec.name})"
    )
    lines = [f"The {spec.name!r} data set is not on disk and was not downloaded: {reason}"]
    lines.append("Download these files by hand:")
    for file in missing:
        lines.append(f"  {mirror_url(spec.mirrors[0], file.name)}" if spec.mirrors else file.name)
    if len(spec.mirrors) > 1:
        lines.append("  (same names under the other mirrors: " + ", ".join(spec.mirrors[1:]) + ")")
    lines.append(f"and put them, as .gz or decompressed, in:\n  {target}")
    lines.append(
        f"(or set {ENV_VAR}=/some/dir and use /some/dir/{spec.name}, or pass the directory "
        "to load_dataset)."
    )
    if spec.search_dirs:
        lines.append("Also looked in: " + ", ".join(spec.search_dirs))
    return DownloadError("\n".join(lines), summary=summary)


def _locate(
    spec: DatasetSpec, target: Path, download: bool, progress: bool | None
) -> list[tuple[Path, str]]:
    """Paths of the four files of ``spec`` (downloading missing ones) with a hint for errors."""
    found: list[tuple[Path, str] | None] = []
    for file in spec.files:
        path = find_file(target, file)
        if path is not None:
            found.append((path, " (delete the file to download it again)"))
            continue
        others = (find_file(d, file) for d in spec.search_dirs)
        path = next((p for p in others if p is not None), None)
        found.append(None if path is None else (path, ""))
    missing = [file for file, hit in zip(spec.files, found, strict=True) if hit is None]
    if missing and not download:
        raise _manual_download_error(spec, missing, target, "download=False")
    if missing and not spec.mirrors:
        raise _manual_download_error(spec, missing, target, "no mirrors known")
    for i, file in enumerate(spec.files):
        if found[i] is not None:
            continue
        try:
            found[i] = (fetch(file, spec.mirrors, target, progress=progress), "")
        except ChecksumError:
            raise
        except DownloadError as exc:
            still_missing = [f for f, hit in zip(spec.files, found, strict=True) if hit is None]
            raise _manual_download_error(spec, still_missing, target, str(exc)) from exc
    return found  # type: ignore[return-value]


def _load_spec(
    spec: DatasetSpec, cache_dir: Path | None, download: bool, progress: bool | None
) -> Dataset:
    if spec.packaged is not None:
        arrays, _ = read_packaged(spec.packaged)
        return Dataset(
            name=spec.name,
            train_images=arrays["train_images"],
            train_labels=arrays["train_labels"],
            test_images=arrays["test_images"],
            test_labels=arrays["test_labels"],
            classes=list(spec.classes),
            source=f"npcnn/data/sample/{spec.packaged}",
        )
    target = (default_cache_dir() if cache_dir is None else Path(cache_dir)) / spec.name
    located = _locate(spec, target, download, progress)
    arrays = [
        _read_checked(path, file, hint)
        for (path, hint), file in zip(located, spec.files, strict=True)
    ]
    return Dataset(spec.name, *arrays, classes=list(spec.classes), source=str(located[0][0].parent))


def load_directory(path: str | os.PathLike[str], classes: Sequence[str] | None = None) -> Dataset:
    """Load the four MNIST-named IDX files (raw or gzip) from ``path``, unchecked.

    Class names default to the digits for labels 0-9, else "0", "1", ... up
    to the largest label.
    """
    path = Path(path)
    files = [FileSpec(name) for name in IDX_FILE_NAMES]
    paths = [find_file(path, f) for f in files]
    missing = [f.stem + "[.gz]" for f, p in zip(files, paths, strict=True) if p is None]
    if missing:
        raise DataError(f"{path}: missing IDX file(s) {', '.join(missing)}")
    arrays = [_read_checked(p, None) for p in paths]  # type: ignore[arg-type]
    if classes is None:
        top = max((int(a.max()) for a in (arrays[1], arrays[3]) if a.size), default=0)
        classes = DIGITS if top < 10 else [str(i) for i in range(top + 1)]
    return Dataset(path.name or str(path), *arrays, classes=list(classes), source=str(path))


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def load_dataset(
    name_or_path: str | os.PathLike[str] = "sample",
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    spec: DatasetSpec | None = None,
    progress: bool | None = None,
) -> Dataset:
    """Load a data set by name (``sample``, ``mnist``, ``fashion-mnist``,
    ``kmnist``, or any name in :data:`DATASETS`) or from a directory.

    ``cache_dir``: root of the download cache (default
    :func:`default_cache_dir`); files live in ``<cache_dir>/<name>/``.
    ``download``: allow network access for missing files. ``spec``: use this
    :class:`DatasetSpec` instead of looking the name up. ``progress``: show a
    download progress bar (default: when stderr is a terminal).

    Raises :class:`DataError` (a ValueError) for an unknown name, a malformed
    file or a checksum mismatch, and :class:`DownloadError` with instructions
    for placing the files by hand when they cannot be downloaded.
    """
    cache = None if cache_dir is None else Path(cache_dir).expanduser()
    if spec is not None:
        return _load_spec(spec, cache, download, progress)
    if isinstance(name_or_path, str) and _normalise(name_or_path) in DATASETS:
        return _load_spec(DATASETS[_normalise(name_or_path)], cache, download, progress)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return load_directory(path)
    raise DataError(
        f"unknown data set {str(name_or_path)!r}: use one of {', '.join(DATASETS)} or a "
        f"directory holding {', '.join(IDX_FILE_NAMES)} (gzipped or not)"
    )
