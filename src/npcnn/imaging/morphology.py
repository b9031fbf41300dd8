"""Filters of (H, W) arrays: closing, opening, Gaussian blur, connected components.

A closing with a w x w square (the max over every square, then the min)
erases every dark feature narrower than w and keeps the rest as it was,
including a linear brightness ramp; an opening does the same for light
features. They are the local background of ink: dark ink is what a
closing lifts, light ink what an opening lowers.
"""

from __future__ import annotations

import numpy as np


def _running_max(a: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Max over every ``size`` consecutive entries along ``axis`` (length n - size + 1).

    Maxima over windows of 1, 2, 4, ... entries, each from two of the
    previous; two overlapping power-of-two windows then cover ``size``.
    """
    m = np.moveaxis(a, axis, 0)
    width = 1
    while 2 * width <= size:
        m = np.maximum(m[:-width], m[width:])
        width *= 2
    m = np.maximum(m[: len(m) - (size - width)], m[size - width :])
    return np.moveaxis(m, 0, axis)


def _dilate(a: np.ndarray, size: int) -> np.ndarray:
    """Max over the size x size square at each entry; the result is size - 1 shorter per axis."""
    return _running_max(_running_max(a, size, 0), size, 1)


def dilate(image: np.ndarray, size: int) -> np.ndarray:
    """Max over the size x size square centred on each pixel (size odd), (H, W) -> (H, W)."""
    return _dilate(np.pad(image, size // 2, mode="edge"), size)


def closing(gray: np.ndarray, size: int, pad: str = "symmetric") -> np.ndarray:
    """Grey-scale closing of (H, W) ``gray`` with a size x size square (size odd) -> (H, W).

    Beyond its border the picture is taken to be its mirror image
    (``pad="symmetric"``: a stroke along the border is then a feature twice
    as wide) or its border pixels continued (``pad="edge"``: a dark frame
    around the picture is then background, however thin).
    """
    padded = np.pad(gray, 2 * (size // 2), mode=pad)
    return -_dilate(-_dilate(padded, size), size)


def opening(gray: np.ndarray, size: int, pad: str = "symmetric") -> np.ndarray:
    """Grey-scale opening, the :func:`closing` for light features."""
    return -closing(-gray, size, pad)


def components(mask: np.ndarray) -> np.ndarray:
    """Label the 4-connected components of a boolean (H, W) mask.

    Returns an int64 (H, W) array: on the mask, the smallest flat index of a
    pixel of the same component; off it, H * W. Union-find on whole arrays:
    every tree whose pixels touch a tree with a smaller root hangs itself
    under the smallest such root, then every pixel points straight at its
    root; until no two neighbours have different roots. Roots only ever get
    smaller, so no cycle can form.
    """
    h, w = mask.shape
    index = np.arange(h * w).reshape(h, w)
    across = mask[:, :-1] & mask[:, 1:]
    down = mask[:-1] & mask[1:]
    a = np.concatenate([index[:, :-1][across], index[:-1][down]])
    b = np.concatenate([index[:, 1:][across], index[1:][down]])
    on = index[mask]
    parent = np.arange(h * w)
    while True:
        ra, rb = parent[a], parent[b]
        split = ra != rb
        if not split.any():
            break
        np.minimum.at(parent, np.maximum(ra, rb)[split], np.minimum(ra, rb)[split])
        while True:  # point every pixel at its root
            up = parent[parent[on]]
            if np.array_equal(up, parent[on]):
                break
            parent[on] = up
    return np.where(mask, parent.reshape(h, w), h * w)


def largest_component(mask: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The component of ``mask`` with the largest sum of ``weights``, as a boolean mask."""
    labels = components(mask)
    ids, index = np.unique(labels[mask], return_inverse=True)
    return labels == ids[np.argmax(np.bincount(index, weights=weights[mask]))]


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W) image convolved with a Gaussian of standard deviation ``sigma`` px.

    Separable, the kernel cut at 3 sigma and normalised; the picture is
    mirrored beyond its border. ``sigma`` below 0.3 px returns the image.
    """
    if sigma < 0.3:
        return image
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    out = np.asarray(image, dtype=np.float64)
    for axis in (0, 1):
        lines = np.moveaxis(out, axis, 0)
        padded = np.pad(lines, [(radius, radius), (0, 0)], mode="symmetric")
        n = lines.shape[0]
        out = np.moveaxis(sum(t * padded[k : k + n] for k, t in enumerate(taps)), 0, axis)
    return out
