"""Label-free baselines that the pipeline must beat: k-means on pixel colours, on patch features."""
from __future__ import annotations

import cv2
import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans


def kmeans_colours(images: np.ndarray, k: int, seed: int, sample: int, n_init: int) -> np.ndarray:
    """Images (N, H, W, 3) uint8 -> (N, H, W) uint8 labels in 0..k-1 from k-means on Lab pixel colours."""
    lab = np.stack([cv2.cvtColor(im, cv2.COLOR_RGB2LAB) for im in images]).reshape(-1, 3).astype(np.float32)
    rng = np.random.default_rng(seed)
    fit = lab[rng.choice(len(lab), size=min(sample, len(lab)), replace=False)]
    km = KMeans(k, n_init=n_init, random_state=seed).fit(fit)
    return km.predict(lab).reshape(images.shape[:3]).astype(np.uint8)


def kmeans_patches(tokens: np.ndarray, k: int, seed: int, n_init: int) -> np.ndarray:
    """Patch features (N, h, w, D) -> (N, h, w) uint8 labels from k-means on L2-normalised features."""
    x = tokens.reshape(-1, tokens.shape[-1]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-8
    km = MiniBatchKMeans(k, n_init=n_init, random_state=seed, batch_size=4096).fit(x)
    return km.predict(x).reshape(tokens.shape[:3]).astype(np.uint8)


def upsample_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w) uint8 -> (N, size, size) uint8 by nearest neighbour."""
    return np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST) for m in labels])
