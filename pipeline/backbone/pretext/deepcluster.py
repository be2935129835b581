"""DeepCluster (Caron, Bojanowski, Joulin & Douze 2018): cluster the features, learn to predict the clusters.

Every `recluster_epochs`: embed all images, PCA-reduce, whiten and L2-normalise, k-means; the cluster
assignments become pseudo-labels and the linear classifier is re-initialised (the assignments permute).
The paper's guards against degenerate solutions: an empty cluster takes the centroid of a random
non-empty cluster with a small perturbation and the two split its points; training samples images
uniformly over clusters, so a huge cluster cannot dominate the loss.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.backbone.factory import normalize
from pipeline.backbone.pretext.common import Objective, check_multiple, embed, mlp, random_crops
from pipeline.config import DeepClusterConfig

PERTURB = 1e-4  # relative perturbation of a split centroid (as Faiss and the reference code)


def whiten(x: torch.Tensor, dim: int) -> torch.Tensor:
    """(N, D) -> (N, min(dim, D, N - 1)): centred, projected on the top principal axes, whitened (each axis
    divided by its standard deviation: unit covariance)."""
    x = x - x.mean(0, keepdim=True)
    d = min(dim, x.shape[1], x.shape[0] - 1)
    _, s, vt = torch.linalg.svd(x, full_matrices=False)
    return x @ vt[:d].T / (s[:d] / np.sqrt(max(len(x) - 1, 1)) + 1e-5)


def pca_whiten(x: torch.Tensor, dim: int) -> torch.Tensor:
    """(N, D) -> (N, min(dim, D, N - 1)): `whiten`, then L2-normed (DeepCluster's k-means input)."""
    return F.normalize(whiten(x, dim), dim=1)


def assign(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(N, d), (k, d) -> (N,) index of the nearest centroid."""
    return torch.cdist(x, centroids).argmin(1)


def split_empty(x: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor,
                gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Give every empty cluster half of a random non-empty one -> (centroids, labels, clusters split).

    The empty cluster j takes centroid c_m (1 + eps), c_m becomes c_m (1 - eps), and m's points go to the
    nearer of the two. m is drawn with probability proportional to its size minus one (it must hold >= 2).
    """
    centroids, labels = centroids.clone(), labels.clone()
    k = len(centroids)
    splits = 0
    for j in range(k):
        sizes = torch.bincount(labels, minlength=k)
        if sizes[j] > 0:
            continue
        weights = (sizes - 1).clamp_min(0).float()
        if weights.sum() == 0:
            break  # fewer distinct points than clusters: nothing left to split
        m = int(torch.multinomial(weights, 1, generator=gen))
        base = centroids[m].clone()
        centroids[j], centroids[m] = base * (1 + PERTURB), base * (1 - PERTURB)
        pts = labels == m
        sub = assign(x[pts], centroids[[m, j]])
        if sub.min() == sub.max():  # ties (identical points): split them in half
            sub = (torch.arange(int(pts.sum())) % 2)
        labels[pts] = torch.where(sub == 1, j, m)
        splits += 1
    return centroids, labels, splits


def kmeans(x: torch.Tensor, k: int, iters: int, gen: torch.Generator | None = None,
           init: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Lloyd's k-means with DeepCluster's empty-cluster splitting -> (labels (N,), centroids (k, d), splits)."""
    centroids = x[torch.randperm(len(x), generator=gen)[:k]].clone() if init is None else init.clone()
    total = 0
    for _ in range(iters):
        labels = assign(x, centroids)
        centroids, labels, s = split_empty(x, centroids, labels, gen)
        total += s
        onehot = F.one_hot(labels, k).float()
        centroids = (onehot.T @ x) / onehot.sum(0)[:, None].clamp_min(1)
    labels = assign(x, centroids)
    centroids, labels, s = split_empty(x, centroids, labels, gen)
    return labels, centroids, total + s


def uniform_over_clusters(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n image indices: a cluster drawn uniformly among non-empty ones, then an image uniformly inside it."""
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    picks = rng.integers(0, len(groups), n)
    return np.array([rng.choice(groups[c]) for c in picks])


class DeepClusterNet(Objective):
    """Backbone -> MLP (kept) -> linear classifier over k clusters (reset after every re-clustering)."""

    def __init__(self, backbone: nn.Module, cfg: DeepClusterConfig, image_size: int, num_images: int) -> None:
        super().__init__(backbone)
        check_multiple(cfg.crop_size, backbone, "pretrain.deepcluster.crop_size")
        if cfg.k > num_images:
            raise ValueError(f"params: 'pretrain.deepcluster.k' is {cfg.k}; must be <= the {num_images} images")
        self.cfg = cfg
        d = backbone.num_features
        self.top = mlp([d, d, d])
        self.classifier = nn.Linear(d, cfg.k)
        self.register_buffer("labels", torch.zeros(num_images, dtype=torch.long))
        self.image_size = image_size
        self.splits = 0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, s, s) -> (B, D) features that are clustered and classified."""
        return self.top(embed(self.backbone, x))

    @torch.no_grad()
    def epoch_start(self, data: torch.Tensor, epoch: int) -> list[nn.Parameter]:
        if epoch % self.cfg.recluster_epochs:
            return []
        feats = torch.cat([self.features(normalize(data[i:i + 64].float() / 255.0)) for i in range(0, len(data), 64)])
        z = pca_whiten(feats.cpu(), self.cfg.pca_dim)  # k-means on the CPU, as the paper's Faiss step
        labels, _, self.splits = kmeans(z, self.cfg.k, self.cfg.kmeans_iters)
        self.labels.copy_(labels)
        self.classifier.reset_parameters()
        return list(self.classifier.parameters())

    def sample_order(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return uniform_over_clusters(self.labels.cpu().numpy(), n, rng)

    def loss(self, batch: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        x = normalize(random_crops(batch, self.cfg.crop_size, self.cfg.crop_scale_min))
        logits = self.classifier(self.features(x))
        labels = self.labels[idx]
        return F.cross_entropy(logits, labels), {"clusters": float(len(torch.unique(self.labels))),
                                                 "splits": float(self.splits)}
