"""Label-free baselines that the pipeline must beat: k-means on pixel colours, on patch features.

Each is fitted on a seeded sample drawn across all images and then predicts image by image, so memory holds the
sample and one image, never the dataset, and images may differ in size:

    model = fit_colour(images, k, seed, sample, n_init)          # images: re-iterable, (H_i, W_i, 3) uint8 RGB
    labels = predict_colour(model, image)                        # (H, W) uint8, any size
    model = fit_features(token_grids, k, seed, n_init, sample)   # token_grids: re-iterable, (h_i, w_i, D) each
    labels = predict_features(model, grid, (H, W))              # (H, W) uint8 at the image's original size

"Re-iterable": a list, an array, or a lazy sequence that reads an image each time it is iterated; the fit reads it
twice (once to count pixels, once to gather the sample), so a one-shot generator is refused.
"""
from __future__ import annotations

from typing import Callable, Iterable

import cv2
import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans

from pipeline.evaluate.metrics import to_size
from pipeline.method.vectors import unit_rows


def _lab(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H * W, 3) float32 Lab colours (OpenCV's 8-bit Lab)."""
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)


def _unit_rows(grid: np.ndarray) -> np.ndarray:
    """(h, w, D) patch tokens -> (h * w, D) float32 rows scaled to unit L2 norm."""
    return unit_rows(np.asarray(grid).reshape(-1, grid.shape[-1]).astype(np.float32))


def _sample_rows(arrays: Iterable[np.ndarray], idx: np.ndarray | None, rows: Callable[[np.ndarray], np.ndarray],
                 total: int) -> np.ndarray:
    """Rows `idx` (indices into the concatenation of every array's rows, in that order; None = every row) of
    `rows(array)` for each array, gathered one array at a time, in the order of `idx`: what
    `concatenated[idx]` gives, without the concatenation."""
    if idx is None:
        return np.concatenate([rows(a) for a in arrays])
    order = np.argsort(idx, kind="stable")
    wanted = idx[order]
    out, start = None, 0
    for a in arrays:
        n = int(np.prod(np.shape(a)[:2]))
        lo, hi = np.searchsorted(wanted, [start, start + n])
        if hi > lo:
            r = rows(a)[wanted[lo:hi] - start]
            if out is None:
                out = np.empty((len(idx), r.shape[1]), r.dtype)
            out[order[lo:hi]] = r
        start += n
    if start != total:
        raise ValueError(f"the images changed between the two passes of the fit: {total} then {start} pixels")
    return out


def _count(arrays: Iterable[np.ndarray], what: str) -> int:
    if iter(arrays) is arrays:
        raise TypeError(f"{what} must be re-iterable (a list, an array or a lazy sequence): the fit reads it twice, "
                        "once to count, once to sample; a one-shot iterator or generator cannot be read twice")
    total = sum(int(np.prod(np.shape(a)[:2])) for a in arrays)
    if total == 0:
        raise ValueError(f"{what}: nothing to fit on (no pixels)")
    return total


def fit_colour(images: Iterable[np.ndarray], k: int, seed: int, sample: int, n_init: int) -> KMeans:
    """k-means (k clusters, n_init restarts, random_state seed) on the Lab colours of `sample` pixels drawn
    without replacement, seeded, uniformly across every pixel of `images` ((H_i, W_i, 3) uint8 RGB, any sizes).

    The draw is `default_rng(seed).choice(total pixels, min(sample, total), replace=False)` over the images'
    pixels in order, so the fit (and every prediction) is the same as on the images' pixels concatenated."""
    total = _count(images, "images")
    idx = np.random.default_rng(seed).choice(total, size=min(sample, total), replace=False)
    fit = _sample_rows(images, idx, _lab, total)
    return KMeans(k, n_init=n_init, random_state=seed).fit(fit)


def predict_colour(model: KMeans, image: np.ndarray) -> np.ndarray:
    """One (H, W, 3) uint8 RGB image, any size -> (H, W) uint8 cluster ids (nearest centre in Lab)."""
    return model.predict(_lab(image)).reshape(image.shape[:2]).astype(np.uint8)


def fit_features(token_grids: Iterable[np.ndarray], k: int, seed: int, n_init: int, sample: int) -> MiniBatchKMeans:
    """Mini-batch k-means (k clusters, n_init, random_state seed, batch 4096) on L2-normalised patch tokens of
    per-image grids of any shapes ((h_i, w_i, D) each).

    When the grids hold at most `sample` tokens, all of them are used in order. Otherwise `sample` tokens are drawn without replacement, seeded
    (`default_rng(seed).choice`), uniformly across every token (params.yaml `evaluate.baseline_patches`)."""
    total = _count(token_grids, "token_grids")
    idx = None if total <= sample else np.random.default_rng(seed).choice(total, size=sample, replace=False)
    fit = _sample_rows(token_grids, idx, _unit_rows, total)
    return MiniBatchKMeans(k, n_init=n_init, random_state=seed, batch_size=4096).fit(fit)


def predict_features(model: MiniBatchKMeans, grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One image's patch tokens (h, w, D) -> (H, W) = `size` uint8 cluster ids: each patch's nearest centre,
    upsampled by nearest neighbour (metrics.to_size) to the image's original size."""
    labels = model.predict(_unit_rows(grid)).reshape(grid.shape[:2]).astype(np.uint8)
    return to_size(labels, size)


def kmeans_colours(images: np.ndarray, k: int, seed: int, sample: int, n_init: int) -> np.ndarray:
    """Images (N, H, W, 3) uint8 -> (N, H, W) uint8 labels in 0..k-1 (fit_colour, then predict_colour per image)."""
    model = fit_colour(images, k, seed, sample, n_init)
    return np.stack([predict_colour(model, im) for im in images])


def kmeans_patches(tokens: np.ndarray, k: int, seed: int, n_init: int) -> np.ndarray:
    """Patch features (N, h, w, D) -> (N, h, w) uint8 labels from k-means on every L2-normalised token
    (fit_features on all of them, then predict_features per grid at the grid's own size)."""
    model = fit_features(tokens, k, seed, n_init, sample=int(np.prod(tokens.shape[:3])))
    return np.stack([predict_features(model, g, g.shape[:2]) for g in tokens])


def upsample_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w) uint8 -> (N, size, size) uint8 by nearest neighbour."""
    return np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST) for m in labels])
