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
from npcnn.data.datasets import (
    DATASETS,
    IDX_FILE_NAMES,
    SPLITS,
    Dataset,
    DatasetSpec,
    DatasetSplit,
    check_labels,
    check_split_name,
    dataset_spec,
)
from npcnn.data.download import fetch, mirror_url
from npcnn.data.errors import ChecksumError, DataError, DownloadError
from npcnn.data.idx import decompress_idx, parse_idx, read_raw
from npcnn.data.sample import read_packaged

ENV_VAR = "NPCNN_DATA"
#: A directory of IDX files may name its classes in this file, one per line.
CLASSES_FILE = "classes.txt"
#: Classes of a directory that does not say: MNIST-format drop-ins have ten.
DEFAULT_NUM_CLASSES = 10
#: The positions of each split's images and labels among a data set's four files.
_SPLIT_FILES = {"train": (0, 1), "test": (2, 3)}


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
    spec: DatasetSpec,
    files: Sequence[FileSpec],
    target: Path,
    download: bool,
    progress: bool | None,
) -> list[tuple[Path, str]]:
    """Paths of ``files`` (some of ``spec``'s, downloading missing ones) with a hint for errors."""
    found: list[tuple[Path, str] | None] = []
    for file in files:
        path = find_file(target, file)
        if path is not None:
            found.append((path, " (delete the file to download it again)"))
            continue
        others = (find_file(d, file) for d in spec.search_dirs)
        path = next((p for p in others if p is not None), None)
        found.append(None if path is None else (path, ""))
    missing = [file for file, hit in zip(files, found, strict=True) if hit is None]
    if missing and not download:
        raise _manual_download_error(spec, missing, target, "download=False")
    if missing and not spec.mirrors:
        raise _manual_download_error(spec, missing, target, "no mirrors known")
    for i, file in enumerate(files):
        if found[i] is not None:
            continue
        try:
            found[i] = (fetch(file, spec.mirrors, target, progress=progress), "")
        except ChecksumError:
            raise
        except DownloadError as exc:
            still_missing = [f for f, hit in zip(files, found, strict=True) if hit is None]
            raise _manual_download_error(spec, still_missing, target, str(exc)) from exc
    return found  # type: ignore[return-value]


def _read_spec_files(
    spec: DatasetSpec,
    files: Sequence[FileSpec],
    cache_dir: Path | None,
    download: bool,
    progress: bool | None,
) -> tuple[list[np.ndarray], str]:
    """The arrays of ``files`` (pairs of images and labels of ``spec``), checked,
    and the directory they were found in."""
    target = (default_cache_dir() if cache_dir is None else Path(cache_dir)) / spec.name
    located = _locate(spec, files, target, download, progress)
    arrays = [
        _read_checked(path, file, hint) for (path, hint), file in zip(located, files, strict=True)
    ]
    for i in range(1, len(arrays), 2):
        check_labels(arrays[i], len(spec.classes), str(located[i][0]))
    return arrays, str(located[0][0].parent)


def _load_spec(
    spec: DatasetSpec,
    splits: Sequence[str],
    cache_dir: Path | None,
    download: bool,
    progress: bool | None,
) -> list[DatasetSplit]:
    """The ``splits`` of a named data set: only their files are looked for and read."""
    if spec.packaged is not None:
        packaged, _ = read_packaged(spec.packaged)
        arrays = [packaged[f"{split}_{kind}"] for split in splits for kind in ("images", "labels")]
        source = f"npcnn/data/sample/{spec.packaged}"
    else:
        files = [spec.files[i] for split in splits for i in _SPLIT_FILES[split]]
        arrays, source = _read_spec_files(spec, files, cache_dir, download, progress)
    return [
        DatasetSplit(spec.name, split, *arrays[2 * k : 2 * k + 2], list(spec.classes), source)
        for k, split in enumerate(splits)
    ]


def _read_class_names(path: Path) -> list[str] | None:
    """The non-blank lines of ``path`` (stripped), or None if there is no such file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the class names ({exc})") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]


def directory_classes(
    path: str | os.PathLike[str],
    classes: Sequence[str] | None = None,
    num_classes: int | None = None,
) -> list[str]:
    """The class names of a directory of IDX files, without reading the files.

    In order: ``classes`` if given; else the lines of ``path/classes.txt``;
    else ``"0"``, ..., ``str(num_classes - 1)``; else the ten digits (a
    directory is taken for an MNIST-format drop-in). ``num_classes``, when
    given with names, must match their count. Raises :class:`DataError` for
    fewer than two classes, repeated names or a count that does not match.
    """
    if classes is not None:
        names, where = list(classes), "the classes argument"
    else:
        where = str(Path(path) / CLASSES_FILE)
        names = _read_class_names(Path(path) / CLASSES_FILE)
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
            raise DataError(f"num_classes must be an integer, got {num_classes!r}")
        if names is not None and len(names) != num_classes:
            raise DataError(f"{where} lists {len(names)} classes, not {num_classes}")
    if names is None:
        count = DEFAULT_NUM_CLASSES if num_classes is None else int(num_classes)
        names, where = [str(i) for i in range(count)], "num_classes"
    if len(names) < 2:
        raise DataError(f"{where}: a classifier needs at least 2 classes, got {len(names)}")
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"{where}: class names repeated: {', '.join(repeated)}")
    return names


def _directory_splits(
    path: Path, splits: Sequence[str], classes: Sequence[str] | None, num_classes: int | None
) -> list[DatasetSplit]:
    """The ``splits`` of a directory of MNIST-named IDX files: only their files are read."""
    names = directory_classes(path, classes, num_classes)
    files = [FileSpec(IDX_FILE_NAMES[i]) for split in splits for i in _SPLIT_FILES[split]]
    paths = [find_file(path, f) for f in files]
    missing = [f.stem + "[.gz]" for f, p in zip(files, paths, strict=True) if p is None]
    if missing:
        raise DataError(f"{path}: missing IDX file(s) {', '.join(missing)}")
    arrays = [_read_checked(p, None) for p in paths]  # type: ignore[arg-type]
    hint = (
        "If the data set has more classes, pass load_dataset(..., num_classes=N) "
        f"or name them, one per line, in {path / CLASSES_FILE}."
    )
    for i in range(1, len(arrays), 2):
        check_labels(arrays[i], len(names), str(paths[i]), hint)
    images = list(zip(paths[0::2], arrays[0::2], strict=True))
    if len({a.shape[1:] for _, a in images}) > 1:  # a model takes one size of image
        sizes = [f"{p.name} {'x'.join(map(str, a.shape[1:]))}" for p, a in images]
        raise DataError(f"{path}: the splits' images differ in size: {' and '.join(sizes)}")
    name = path.name or str(path)
    return [
        DatasetSplit(name, split, *arrays[2 * k : 2 * k + 2], names, str(path))
        for k, split in enumerate(splits)
    ]


def _joined(train: DatasetSplit, test: DatasetSplit) -> Dataset:
    """The data set of its two splits."""
    return Dataset(
        train.name, train.images, train.labels, test.images, test.labels, train.classes, test.source
    )


def load_directory(
    path: str | os.PathLike[str],
    classes: Sequence[str] | None = None,
    *,
    num_classes: int | None = None,
) -> Dataset:
    """Load the four MNIST-named IDX files (raw or gzip) from ``path``, unchecked.

    The classes come from :func:`directory_classes`: ``classes``, else
    ``path/classes.txt``, else ``num_classes`` numbered ones, else the ten
    digits. They are never guessed from the labels: a label outside them
    raises :class:`LabelError` naming the file, how many labels are out of
    range and which values.
    """
    return _joined(*_directory_splits(Path(path), SPLITS, classes, num_classes))


def _load_splits(
    name_or_path: str | os.PathLike[str],
    splits: Sequence[str],
    cache_dir: str | os.PathLike[str] | None,
    download: bool,
    spec: DatasetSpec | None,
    progress: bool | None,
    num_classes: int | None,
) -> list[DatasetSplit]:
    """The ``splits`` of a named data set or a directory (see :func:`load_dataset`)."""
    cache = None if cache_dir is None else Path(cache_dir).expanduser()
    if spec is None and isinstance(name_or_path, str):
        spec = dataset_spec(name_or_path)
    if spec is not None:
        if num_classes is not None and num_classes != len(spec.classes):
            raise DataError(
                f"the {spec.name!r} data set has {len(spec.classes)} classes, not "
                f"{num_classes}; num_classes is for a directory of files"
            )
        return _load_spec(spec, splits, cache, download, progress)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return _directory_splits(path, splits, None, num_classes)
    what = (
        f"{str(name_or_path)!r} is a file, not a data set"
        if path.exists()
        else f"unknown data set {str(name_or_path)!r}"
    )
    raise DataError(
        f"{what}: use one of {', '.join(DATASETS)} or a directory holding "
        f"{', '.join(IDX_FILE_NAMES)} (gzipped or not)"
    )


def load_dataset(
    name_or_path: str | os.PathLike[str] = "sample",
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    spec: DatasetSpec | None = None,
    progress: bool | None = None,
    num_classes: int | None = None,
) -> Dataset:
    """Load a data set by name (``sample``, ``mnist``, ``fashion-mnist``,
    ``kmnist``, or any name in :data:`DATASETS`) or from a directory.

    ``cache_dir``: root of the download cache (default
    :func:`default_cache_dir`); files live in ``<cache_dir>/<name>/``.
    ``download``: allow network access for missing files. ``spec``: use this
    :class:`DatasetSpec` instead of looking the name up. ``progress``: show a
    download progress bar (default: when stderr is a terminal).

    The classes of a named data set are those of its spec; ``num_classes``,
    if given, must equal their count. A directory's are ``classes.txt`` in
    it, else ``num_classes`` numbered ones, else the ten digits (see
    :func:`load_directory`). Labels outside the classes are refused.

    Raises :class:`DataError` (a ValueError) for an unknown name, a malformed
    file or a checksum mismatch, :class:`LabelError` (a DataError) for labels
    outside the classes, and :class:`DownloadError` with instructions for
    placing the files by hand when they cannot be downloaded.
    """
    return _joined(
        *_load_splits(name_or_path, SPLITS, cache_dir, download, spec, progress, num_classes)
    )


def load_split(
    name_or_path: str | os.PathLike[str] = "sample",
    split: str = "test",
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    spec: DatasetSpec | None = None,
    progress: bool | None = None,
    num_classes: int | None = None,
) -> DatasetSplit:
    """Load one split (``"train"`` or ``"test"``) of a data set, as a :class:`DatasetSplit`.

    Like :func:`load_dataset`, whose arguments it takes, but only the two
    files of ``split`` are looked for, downloaded if missing and read: a
    directory or cache holding only ``t10k-*`` files gives its test split.
    """
    check_split_name(split)
    return _load_splits(name_or_path, (split,), cache_dir, download, spec, progress, num_classes)[0]
