"""Mask embeddings and their clustering into classes (DeepCluster / COMUS style), and the gallery of each class's
typical masks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.sparse.csgraph import laplacian
from sklearn.cluster import SpectralClustering
from sklearn.metrics import davies_bouldin_score, silhouette_score
from sklearn.neighbors import kneighbors_graph

from pipeline import io
from pipeline.config import ClusterConfig
from pipeline.method import kmeans
from pipeline.method.vectors import unit_rows
from pipeline.report import viz


class ClusterError(ValueError):
    """Clustering cannot run as configured (e.g. fewer masks than clusters)."""


def mask_embeddings(tokens: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Patch features (h, w, D) and mask coverage (M, h, w) -> (M, D) float32 coverage-weighted means, L2-normalised."""
    x = unit_rows(tokens.reshape(-1, tokens.shape[-1]).astype(np.float32))
    wts = fractions.reshape(len(fractions), -1).astype(np.float32)
    emb = wts @ x / np.maximum(wts.sum(1, keepdims=True), 1e-8)
    return unit_rows(emb).astype(np.float32)


def check_enough_masks(n_masks: int, k: int) -> None:
    """Raise ClusterError when `n_masks` proposals cannot make `k` clusters (checked before any work)."""
    if n_masks < k:
        raise ClusterError(f"params: 'cluster.k' is {k} but only {n_masks} masks were proposed; allowed values: "
                           f"1..{n_masks} (lower cluster.k, or get more masks: more images, proposals.max_per_image, "
                           "proposals.num_eigs, a lower proposals.min_patches)" if n_masks else
                           f"params: 'cluster.k' is {k} but no image got a mask proposal, so there is nothing to "
                           "cluster; see data/04_proposals/overlays (try a lower proposals.min_patches or "
                           "proposals.tau, or another backbone)")


def eigengaps(emb: np.ndarray, n_neighbors: int, count: int) -> np.ndarray:
    """Embeddings (M, D) -> the `count` + 1 smallest eigenvalues (ascending) of the symmetric normalised Laplacian of
    their symmetrised cosine k-nearest-neighbour graph (n_neighbors, connectivity weights)."""
    a = kneighbors_graph(emb, min(n_neighbors, len(emb) - 1), metric="cosine", include_self=False)
    lap = laplacian(0.5 * (a + a.T), normed=True).toarray()
    return np.linalg.eigvalsh(lap)[:count + 1]


def choose_k(emb: np.ndarray, cfg: ClusterConfig, seed: int) -> tuple[int, dict[int, float]]:
    """cluster.k auto: the number of classes from the embeddings (M, D) alone, by cfg.k_rule over
    k_min..min(k_max, M - 1) -> (k, {k tried: its score}).

    - davies_bouldin: k-means (`kmeans_labels`) for each k; the lowest Davies-Bouldin index (mean over clusters of
      the worst ratio of summed spreads to centre distance) wins: compact, well separated clusters.
    - silhouette: the same k-means; the highest mean cosine silhouette wins.
    - eigengap: the k after which the normalised Laplacian's eigenvalues jump most (score: lambda_(k+1) - lambda_k,
      the highest wins), the spectral clustering heuristic (von Luxburg 2007), 10 neighbours; k = 1 is possible.
    Every anchor is given k (20 on VOC); none chooses it, so this rule is ours: measured in docs/stages.md."""
    hi = min(cfg.k_max, len(emb) - 1)
    ks = list(range(cfg.k_min, hi + 1))
    if not ks:
        raise ClusterError(f"params: 'cluster.k' is auto but only {len(emb)} masks were proposed; cluster.k_min = "
                           f"{cfg.k_min} needs at least {cfg.k_min + 1}")
    if cfg.k_rule == "eigengap":
        ev = eigengaps(emb, 10, hi)
        scores = {k: float(ev[k] - ev[k - 1]) for k in ks}
        return max(ks, key=lambda k: scores[k]), scores
    scores = {}
    for k in ks:
        labels = kmeans_labels(emb, k, cfg, seed)
        if len(np.unique(labels)) < 2:  # identical embeddings: no structure to score
            scores[k] = float("nan")
        elif cfg.k_rule == "silhouette":
            scores[k] = float(silhouette_score(emb, labels, metric="cosine"))
        else:
            scores[k] = -float(davies_bouldin_score(emb, labels))  # negated: higher is better for every rule
    finite = [k for k in ks if np.isfinite(scores[k])]
    return (max(finite, key=lambda k: scores[k]) if finite else ks[0]), scores


def kmeans_labels(emb: np.ndarray, k: int, cfg: ClusterConfig, seed: int) -> np.ndarray:
    """Embeddings (M, D) -> (M,) int64 labels in 0..k-1: k-means (cfg.backend, cfg.n_init seeded starts) fitted on a
    seeded sample of at most cfg.fit_sample of them (all of them when they fit), every embedding then assigned to its
    nearest centre."""
    sample = kmeans.sample_rows(emb, cfg.fit_sample, seed)
    centres = kmeans.fit(sample, k, cfg.n_init, kmeans.MAX_ITER, seed, cfg.backend)
    return kmeans.assign(emb, centres)


def cluster_embeddings(emb: np.ndarray, cfg: ClusterConfig, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embeddings (M, D) -> (labels (M,) int64 in 0..k-1, centres (k, D) unit-norm, cosine distance to own centre (M,)).
    cfg.k must be a number here (the stage resolves auto with `choose_k` first)."""
    check_enough_masks(len(emb), cfg.k)
    if cfg.method == "kmeans":
        labels = kmeans_labels(emb, cfg.k, cfg, seed)
    else:
        nn = min(10, len(emb) - 1)
        labels = SpectralClustering(cfg.k, affinity="nearest_neighbors", n_neighbors=nn, random_state=seed,
                                    assign_labels="cluster_qr").fit_predict(emb)
    centres = np.zeros((cfg.k, emb.shape[1]), np.float32)
    for c in range(cfg.k):
        if (labels == c).any():  # an empty cluster keeps a zero centre and no members
            centres[c] = emb[labels == c].mean(0)
    centres = unit_rows(centres)
    dist = 1.0 - np.sum(emb * centres[labels], axis=1)
    return labels.astype(np.int64), centres, dist.astype(np.float32)


def cluster_tiles(prepare: str | Path, distill: str | Path, records: list[dict], labels: np.ndarray,
                  dist: np.ndarray, k: int, per_cluster: int) -> np.ndarray:
    """Mask records ({"image", "mask"}), their cluster (M,) and distance to its centre (M,) -> the gallery picture
    (viz.grid): one row per cluster, its per_cluster masks closest to the centre (64 px tiles, blank where fewer)."""
    tiles = []
    for c in range(k):
        members = [i for i in np.argsort(dist) if labels[i] == c][:per_cluster]
        row = []
        for i in members:
            r = records[i]
            image = io.read_image(Path(prepare) / "images" / f"{r['image']}.png")
            masks = io.read_label(Path(distill) / "masks" / f"{r['image']}.png")
            row.append(viz.mask_tile(image, masks == r["mask"], io.palette()[c + 1], 64))
        tiles += row + [np.full((64, 64, 3), 255, np.uint8)] * (per_cluster - len(row))
    return viz.grid(tiles, per_cluster)
