"""Build src/npcnn/data/sample/mnist_sample.npz, the MNIST sample shipped with npcnn.

Only the official MNIST test split (t10k, 10,000 digits) is needed: a
class-balanced draw with a fixed seed gives 200 "train" and 50 "test" digits
per class, disjoint. The t10k files are checked against their published
sha256 first, and the indices they came from are stored in the output, so
the result is reproducible byte for byte.

    python scripts/make_sample.py --source DIR   # DIR holds t10k-*-ubyte[.gz]
    python scripts/make_sample.py                # t10k files from npcnn's MNIST cache
                                                 # (downloaded if missing)

MNIST: Y. LeCun, C. Cortes, C. J. C. Burges, CC BY-SA 3.0.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from npcnn.data.datasets import MNIST
from npcnn.data.download import fetch
from npcnn.data.errors import DataError
from npcnn.data.idx import parse_idx, read_bytes
from npcnn.data.load import default_cache_dir, find_file
from npcnn.data.sample import balanced_split, save_sample

SEED = 20240229
TRAIN_PER_CLASS = 200
TEST_PER_CLASS = 50
OUTPUT = Path(__file__).resolve().parents[1] / "src/npcnn/data/sample/mnist_sample.npz"


def _t10k_files(source: Path | None):
    """(path, FileSpec) of the t10k images and labels, fetched into the cache if needed."""
    specs = [f for f in MNIST.files if f.name.startswith("t10k-")]
    directory = source if source is not None else default_cache_dir() / MNIST.name
    found = []
    for spec in specs:
        path = find_file(directory, spec)
        if path is None:
            if source is not None:
                raise DataError(f"{directory}: no {spec.name} (or {spec.stem})")
            path = fetch(spec, MNIST.mirrors, directory)
        found.append((path, spec))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="directory holding the MNIST t10k files")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()

    arrays = {}
    sources = {}
    for path, spec in _t10k_files(args.source):
        data = read_bytes(path)
        digest = hashlib.sha256(data).hexdigest()
        if digest != spec.sha256:
            raise DataError(f"{path}: sha256 {digest}, expected {spec.sha256}")
        arrays[spec.stem] = parse_idx(data, str(path))
        sources[spec.stem] = {"sha256_decompressed": digest, "md5_gz_published": spec.md5}
    images = arrays["t10k-images-idx3-ubyte"]
    labels = arrays["t10k-labels-idx1-ubyte"]
    train_idx, test_idx = balanced_split(labels, TRAIN_PER_CLASS, TEST_PER_CLASS, SEED)

    provenance = {
        "dataset": "MNIST",
        "authors": "Yann LeCun, Corinna Cortes, Christopher J. C. Burges",
        "homepage": MNIST.homepage,
        "licence": "CC BY-SA 3.0 (https://creativecommons.org/licenses/by-sa/3.0/)",
        "source_split": "official MNIST test set (t10k), 10,000 images",
        "source_files": sources,
        "selection": (
            f"per class (0-9), a permutation from numpy.random.default_rng({SEED}); "
            f"first {TRAIN_PER_CLASS} -> train, next {TEST_PER_CLASS} -> test; "
            "indices sorted; train_indices/test_indices are positions in t10k"
        ),
        "seed": SEED,
        "built_by": "scripts/make_sample.py",
    }
    out = save_sample(
        args.output,
        {
            "train_images": images[train_idx],
            "train_labels": labels[train_idx],
            "test_images": images[test_idx],
            "test_labels": labels[test_idx],
            "train_indices": train_idx.astype(np.uint16),
            "test_indices": test_idx.astype(np.uint16),
        },
        provenance,
    )
    size = out.stat().st_size
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    print(f"wrote {out}: {len(train_idx)} train + {len(test_idx)} test, {size} bytes, sha256 {sha}")


if __name__ == "__main__":
    main()
