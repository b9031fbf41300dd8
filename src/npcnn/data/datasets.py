"""What a data set is (:class:`Dataset`) and where each named one comes from.

:data:`DATASETS` maps a name to a :class:`DatasetSpec`: its files with their
published checksums, the mirrors to download them from (tried in order),
read-only directories where a system package may already have put them,
and its class names. Tests and users can register their own specs or pass
one to :func:`npcnn.data.load_dataset` directly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from npcnn.data.checksums import FileSpec
from npcnn.data.errors import DataError, LabelError

# The four files of every MNIST-format data set, in the order
# train images, train labels, test images, test labels.
IDX_FILE_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

DIGITS = tuple(str(d) for d in range(10))
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# One hiragana per row of the syllabary, in romaji (o, ki, su, ...).
KMNIST_CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")


def check_labels(labels: np.ndarray, num_classes: int, source: str, hint: str = "") -> np.ndarray:
    """``labels`` as int64, after checking that each is an integer in ``[0, num_classes)``.

    Raises :class:`DataError` for non-integer labels and :class:`LabelError`
    for labels out of range, e.g. ``<source>: 1 of 60,000 labels are outside
    0..9 (values: 255)``: how many, and the first few distinct values. A
    ``hint`` (what to do about it) goes on a second line of the message.
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{source}: labels must be integers, got {labels.dtype}")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        values = np.unique(bad).tolist()
        shown = ", ".join(map(str, values[:5])) + (", ..." if len(values) > 5 else "")
        raise LabelError(
            f"{source}: {bad.size:,} of {labels.size:,} labels are outside "
            f"0..{num_classes - 1} (values: {shown})" + (f"\n{hint}" if hint else "")
        )
    return labels.astype(np.int64, copy=False)


#: The splits of every data set, in the order of their files.
SPLITS = ("train", "test")


def check_split_name(split: str) -> str:
    """``split`` if it is one of :data:`SPLITS`, else a ValueError."""
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


def _checked_split(
    name: str, split: str, images: np.ndarray, labels: np.ndarray, num_classes: int
) -> np.ndarray:
    """The labels of one split as int64, after checking them and the images against
    each other: (N, H, W) uint8 images, (N,) integer labels in ``[0, num_classes)``."""
    labels = np.asarray(labels)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{name}: {split} images must be (N, H, W) uint8, got {images.shape} {images.dtype}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{name}: {split} labels have shape {labels.shape}, "
            f"expected ({images.shape[0]},) to match the images"
        )
    return check_labels(labels, num_classes, f"{name}: {split} labels")


@dataclass(frozen=True)
class DatasetSpec:
    """How to obtain one named data set.

    ``files`` are the four IDX files (train images, train labels, test
    images, test labels); ``mirrors`` base URLs tried in order; ``search_dirs``
    read-only directories looked in before downloading; ``packaged`` the name
    of an ``.npz`` shipped in ``npcnn/data/sample/`` instead of files.
    """

    name: str
    classes: tuple[str, ...]
    files: tuple[FileSpec, ...] = ()
    mirrors: tuple[str, ...] = ()
    search_dirs: tuple[str, ...] = ()
    packaged: str | None = None
    licence: str = ""
    homepage: str = ""
    #: What its images show, which decides how `npcnn predict` prepares a picture for a
    #: model trained on it (`npcnn.imaging.RECIPES`): "digit" (strokes, MNIST's recipe)
    #: or "object" (a product on a plain background, Fashion-MNIST's).
    pictures: str = "digit"

    def __post_init__(self) -> None:
        if self.packaged is None and len(self.files) != 4:
            raise ValueError(f"data set {self.name!r}: need 4 files, got {len(self.files)}")


@dataclass
class Dataset:
    """A labelled image data set held in memory.

    ``train_images``/``test_images``: (N, H, W) uint8 (28 x 28 for the MNIST
    family); ``train_labels``/``test_labels``: (N,) int64 in
    ``[0, len(classes))``; ``source`` says where the arrays came from.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]
    source: str = ""

    def head(self, train: int | None = None, test: int | None = None) -> Dataset:
        """The same data set with only the first `train` / `test` examples (None: all)."""
        return dataclasses.replace(
            self,
            train_images=self.train_images[:train],
            train_labels=self.train_labels[:train],
            test_images=self.test_images[:test],
            test_labels=self.test_labels[:test],
        )

    def __post_init__(self) -> None:
        self.classes = list(self.classes)
        for split in SPLITS:
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            labels = _checked_split(self.name, split, images, labels, len(self.classes))
            setattr(self, f"{split}_labels", labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of one image."""
        return tuple(self.train_images.shape[1:])


@dataclass
class DatasetSplit:
    """One split (``"train"`` or ``"test"``) of a labelled image data set held in memory.

    ``images``: (N, H, W) uint8; ``labels``: (N,) int64 in ``[0, len(classes))``;
    ``source`` says where the arrays came from. What
    :func:`npcnn.data.load_split` returns: the files of the other split are
    neither needed nor read.
    """

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    source: str = ""

    def __post_init__(self) -> None:
        check_split_name(self.split)
        self.classes = list(self.classes)
        self.labels = _checked_split(
            self.name, self.split, self.images, self.labels, len(self.classes)
        )

    def head(self, count: int | None = None) -> DatasetSplit:
        """The same split with only its first ``count`` examples (None: all)."""
        return dataclasses.replace(self, images=self.images[:count], labels=self.labels[:count])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of one image."""
        return tuple(self.images.shape[1:])


def _files(md5: tuple[str, ...], sha256: tuple[str | None, ...]) -> tuple[FileSpec, ...]:
    return tuple(FileSpec(n, m, s) for n, m, s in zip(IDX_FILE_NAMES, md5, sha256, strict=True))


SAMPLE = DatasetSpec(
    name="sample",
    classes=DIGITS,
    packaged="mnist_sample.npz",
    licence="CC BY-SA 3.0 (subset of MNIST, Y. LeCun, C. Cortes, C. J. C. Burges)",
    homepage="http://yann.lecun.com/exdb/mnist/",
)

MNIST = DatasetSpec(
    name="mnist",
    classes=DIGITS,
    files=_files(
        md5=(
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
        # sha256 of the decompressed files where known (train images: md5 only).
        sha256=(
            None,
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
    ),
    # The mirrors the common loaders use; the original host rate-limits.
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    licence="CC BY-SA 3.0 (Y. LeCun, C. Cortes, C. J. C. Burges)",
    homepage="http://yann.lecun.com/exdb/mnist/",
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    classes=FASHION_CLASSES,
    files=_files(
        md5=(
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
        sha256=(
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
    ),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    # Debian/Ubuntu package dataset-fashion-mnist (recompressed: the sha256 applies).
    search_dirs=("/usr/share/datasets/fashion-mnist",),
    licence="MIT (Zalando Research)",
    homepage="https://github.com/zalandoresearch/fashion-mnist",
    pictures="object",
)

KMNIST = DatasetSpec(
    name="kmnist",
    classes=KMNIST_CLASSES,
    files=_files(
        md5=(
            "bdb82020997e1d708af4cf47b453dcf7",
            "e144d726b3acfaa3e44228e80efcd344",
            "5c965bf0a639b31b8f53240b1b52f4d7",
            "7320c461ea6c1c855c0b718fb2a4b134",
        ),
        sha256=(None, None, None, None),
    ),
    mirrors=(
        "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
    ),
    licence="CC BY-SA 4.0 (T. Clanuwat et al., ROIS-DS CODH)",
    homepage="https://github.com/rois-codh/kmnist",
)

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec for spec in (SAMPLE, MNIST, FASHION_MNIST, KMNIST)
}


def dataset_spec(name: str) -> DatasetSpec | None:
    """The spec registered in :data:`DATASETS` under ``name`` (case-insensitive,
    ``_`` for ``-``), or None when ``name`` is not a data set's name."""
    return DATASETS.get(name.strip().lower().replace("_", "-"))
