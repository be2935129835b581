"""Mask embeddings and their clustering into classes (DeepCluster / COMUS style), plus pseudo-label maps."""
from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans, SpectralClustering

from pipeline.config import ClusterConfig


class ClusterError(ValueError):
    """Clustering cannot run as configured (e.g. fewer masks than clusters)."""


def mask_embeddings(tokens: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Patch features (h, w, D) and mask coverage (M, h, w) -> (M, D) float32 coverage-weighted means, L2-normalised."""
    x = tokens.reshape(-1, tokens.shape[-1]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-8
    wts = fractions.reshape(len(fractions), -1).astype(np.float32)
    emb = wts @ x / np.maximum(wts.sum(1, keepdims=True), 1e-8)
    return (emb / (np.linalg.norm(emb, axis=1, keepdims=True) + 1e-8)).astype(np.float32)


def check_enough_masks(n_masks: int, k: int) -> None:
    """Raise ClusterError when `n_masks` proposals cannot make `k` clusters (checked before any work)."""
    if n_masks < k:
        raise ClusterError(f"params: 'cluster.k' is {k} but only {n_masks} masks were proposed; allowed values: "
                           f"1..{n_masks} (lower cluster.k, or get more masks: more images, proposals.max_per_image, "
                           "proposals.num_eigs, a lower proposals.min_patches)" if n_masks else
                           f"params: 'cluster.k' is {k} but no image got a mask proposal, so there is nothing to "
                           "cluster; see data/04_proposals/overlays (try a lower proposals.min_patches or "
                           "proposals.tau, or another backbone)")


def cluster_embeddings(emb: np.ndarray, cfg: ClusterConfig, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embeddings (M, D) -> (labels (M,) int64 in 0..k-1, centres (k, D) unit-norm, cosine distance to own centre (M,))."""
    check_enough_masks(len(emb), cfg.k)
    if cfg.method == "kmeans":
        labels = KMeans(cfg.k, n_init=cfg.n_init, random_state=seed).fit_predict(emb)
    else:
        nn = min(10, len(emb) - 1)
        labels = SpectralClustering(cfg.k, affinity="nearest_neighbors", n_neighbors=nn, random_state=seed,
                                    assign_labels="cluster_qr").fit_predict(emb)
    centres = np.zeros((cfg.k, emb.shape[1]), np.float32)
    for c in range(cfg.k):
        if (labels == c).any():  # an empty cluster keeps a zero centre and no members
            m = emb[labels == c].mean(0)
            centres[c] = m / (np.linalg.norm(m) + 1e-8)
    dist = 1.0 - np.sum(emb * centres[labels], axis=1)
    return labels.astype(np.int64), centres, dist.astype(np.float32)


def render_labels(mask_map: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(H, W) mask map (0 none, i = mask i) and classes (M,) (class of mask i+1, 255 = ignore)
    -> (H, W) uint8 label map: background 0, mask i -> classes[i-1]."""
    lut = np.zeros(256, np.uint8)
    lut[1:len(classes) + 1] = classes
    return lut[mask_map]
