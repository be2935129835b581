"""STEGO's head (Hamilton et al. 2022): a projection of the frozen backbone's patch tokens trained by the
correspondence loss, so that patches whose features correlate get codes that correlate; its codes are then
clustered (cluster.dense_features stego).

The loss, for two sets of sampled patches of two images with frozen features f, f' and codes c, c' (each
L2-normalised per patch): F_ij = <f_i, f'_j>, S_ij = <c_i, c'_j>; F is centred per row ("pointwise": its mean over j
removed, its global mean kept); loss = mean_ij -max(S_ij, 0) * (F_ij - b) ("zero clamp"). Codes of patches whose
feature correlation is above the shift b are pulled together, those below pushed apart until they are orthogonal.
Three pairs: an image with itself (shift b_intra), with one of its k nearest images (b_inter), with random other
images of the batch, several draws, none the image itself (b_neg); the total is their weighted sum.

Read from `mhamilton723/STEGO` (src/modules.py: ContrastiveCorrelationLoss, helper, tensor_correlation, sample,
norm, super_perm, DinoFeaturizer; src/data.py: ContrastiveSegDataset's positive among the nearest images but itself;
src/train_segmentation.py and configs/train_config.yml). As there: the correlations of unit vectors, the
pointwise centring of F with its global mean kept, the zero clamp on S, the three pairs with their shifts and
weights, negatives by super_perm, the nonlinear head, Dropout2d (p 0.1) drawn separately for the features the loss
sees and for each branch of the head, Adam. Where this departs:
- The tokens are centred on their mean over the head's training images before anything else (loss and head; the
  head keeps the mean and subtracts it from every token it codes). STEGO does not centre them: its shifts were
  tuned on DINO ViT-S/8 features, where two random patches correlate weakly. Every token of a small backbone
  trained on few images shares one large direction, so nearly every pair's correlation, even after the pointwise
  centring (which keeps the global mean), lies above every shift, every pair pulls, and the codes collapse to one
  point (tests/unit/test_stego.py builds such tokens). Centring removes that direction and leaves the differences.
- The features are the features stage's tokens (float16 shards), read once; no image pass, no augmentation, no
  five-crop dataset. The head trains offline on the CPU in seconds to minutes.
- Patches are sampled at random integer patch positions (cluster.stego_samples^2 per image) instead of bilinear
  samples at random continuous coordinates (grid_sample): the images differ in size, and a grid of whole patches
  is what the features are. The negatives are the permuted images' own samples, not a second draw of positions.
- Nearest images by the cosine of their mean unit token (the shards hold no class token; STEGO uses DINO's CLS),
  among a seeded subset of at most cluster.stego_images training images held in memory.
- The head is STEGO's "nonlinear" projection, linear(x) + MLP(x) with a hidden layer as wide as the features, as
  Linear layers on token rows (its 1x1 convolutions on the token map compute the same).
- Fewer steps than the reference (cluster.stego_steps, 5000-7000 there, batch 16 as here) and no `stabilize`
  (off in its configs).
- The cluster probe (STEGO's ClusterLookup: k unit prototypes trained by SGD to maximise each code's cosine to its
  nearest prototype) is fitted in closed form: k-means on the unit codes (pipeline/method/dense.py), whose fixed
  point is the probe's objective; the linear probe needs labels and is left out.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.method.vectors import unit_rows


@dataclass(frozen=True)
class LossWeights:
    """The three pairs' weights and shifts (STEGO's pos_intra / pos_inter / neg_inter _weight and _shift)."""

    intra: float
    inter: float
    neg: float
    intra_shift: float
    inter_shift: float
    neg_shift: float


def channel_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """(B, S, D) tokens of S patches of B images -> in training, each image's feature channels zeroed with
    probability p at all its patches, the rest scaled by 1 / (1 - p) (Dropout2d on the token map); else x."""
    if not training:
        return x
    return F.dropout1d(x.transpose(1, 2), p, True).transpose(1, 2)


class Head(nn.Module):
    """STEGO's nonlinear projection of tokens centred on `centre` (D,): (..., D) -> (..., dim) codes,
    linear(x) + MLP(x), each branch with its own channel dropout in training."""

    def __init__(self, centre: torch.Tensor, dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        in_dim = len(centre)
        self.register_buffer("centre", centre.float())
        self.p = dropout
        self.linear = nn.Linear(in_dim, dim)
        self.mlp = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(), nn.Linear(in_dim, dim))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, D) tokens -> the centred tokens the loss correlates, with a dropout draw of their own in training
        (STEGO's featurizer returns its features dropped out too)."""
        return channel_dropout(x - self.centre, self.p, self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - self.centre
        return (self.linear(channel_dropout(x, self.p, self.training))
                + self.mlp(channel_dropout(x, self.p, self.training)))


def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, S, C) and (B, T, C) -> (B, S, T) cosine of every pair (each row L2-normalised first)."""
    return torch.einsum("bsc,btc->bst", F.normalize(a, dim=-1, eps=1e-10), F.normalize(b, dim=-1, eps=1e-10))


def pair_loss(f1: torch.Tensor, f2: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, shift: float) -> torch.Tensor:
    """Features (B, S, D), (B, T, D) and codes (B, S, K), (B, T, K) of two patch sets -> the scalar correspondence
    loss mean(-clamp(S, min=0) * (F - shift)), F the feature correlation centred per row (global mean kept, no
    gradient), S the code correlation."""
    with torch.no_grad():
        fd = correlation(f1, f2)
        mean = fd.mean()
        fd = fd - fd.mean(-1, keepdim=True)
        fd = fd - fd.mean() + mean
    cd = correlation(c1, c2)
    return (-cd.clamp(min=0) * (fd - shift)).mean()


def derangement(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n,) int64 indices in 0..n-1 (n >= 2), none equal to its position: STEGO's super_perm, a random permutation
    whose fixed points are moved on by one, mod n (so two images may draw the same negative)."""
    perm = torch.randperm(n, generator=gen)
    perm[perm == torch.arange(n)] += 1
    return perm % n


def batch_loss(feats: torch.Tensor, feats_nn: torch.Tensor, head: Head, w: LossWeights, negatives: int,
               gen: torch.Generator) -> torch.Tensor:
    """Sampled patch tokens of B images (B, S, D) and of a near image of each (B, S, D) -> the weighted sum of
    the intra, inter (kNN) and negative (random other images, `negatives` draws) pair losses, on the head's
    centred (dropped-out) features and its codes."""
    code, code_nn = head(feats), head(feats_nn)
    sig, sig_nn = head.features(feats), head.features(feats_nn)
    loss = w.intra * pair_loss(sig, sig, code, code, w.intra_shift)
    loss = loss + w.inter * pair_loss(sig, sig_nn, code, code_nn, w.inter_shift)
    neg = [pair_loss(sig, sig[p], code, code[p], w.neg_shift)
           for p in (derangement(len(feats), gen) for _ in range(negatives))]
    return loss + w.neg * torch.stack(neg).mean() if neg else loss


def nearest_images(grids: list[np.ndarray], k: int) -> np.ndarray:
    """Per-image token grids (h_i, w_i, D) -> (N, min(k, N - 1)) int64 indices of each image's nearest other images
    by the cosine of their mean unit tokens, nearest first."""
    means = unit_rows(np.stack([unit_rows(g.reshape(-1, g.shape[-1]).astype(np.float32)).mean(0) for g in grids]))
    sim = means @ means.T
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1, kind="stable")[:, :min(k, len(grids) - 1)]


def mean_token(grids: list[np.ndarray]) -> np.ndarray:
    """Per-image token grids (h_i, w_i, D) -> (D,) float32 mean token over every patch of every grid."""
    total = sum(g.reshape(-1, g.shape[-1]).astype(np.float64).sum(0) for g in grids)
    return (total / sum(g.shape[0] * g.shape[1] for g in grids)).astype(np.float32)


def sample_patches(grid: np.ndarray, n: int, gen: torch.Generator) -> torch.Tensor:
    """One image's token grid (h, w, D) -> (n, D) float32 tokens at n random patch positions (with replacement)."""
    flat = torch.from_numpy(grid.reshape(-1, grid.shape[-1]).astype(np.float32))
    return flat[torch.randint(len(flat), (n,), generator=gen)]


def train_head(grids: list[np.ndarray], dim: int, steps: int, batch: int, lr: float, samples: int, knn: int,
               negatives: int, w: LossWeights, seed: int, log_every: int = 0) -> tuple[Head, list[float]]:
    """Per-image token grids (h_i, w_i, D), at least 2 -> a trained Head (random init from `seed`, centred on the
    grids' mean token, eval mode) and the loss of every step. Each step draws `batch` images, samples**2 patches
    of each and of one of each image's `knn` nearest images, and takes one Adam step (lr) on `batch_loss`."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    head = Head(torch.from_numpy(mean_token(grids)), dim)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    near = nearest_images(grids, knn)
    n, losses = samples * samples, []
    head.train()
    for step in range(steps):
        idx = torch.randint(len(grids), (min(batch, len(grids)),), generator=gen).tolist()
        pick = torch.randint(near.shape[1], (len(idx),), generator=gen).tolist()
        feats = torch.stack([sample_patches(grids[i], n, gen) for i in idx])
        feats_nn = torch.stack([sample_patches(grids[near[i, j]], n, gen) for i, j in zip(idx, pick)])
        loss = batch_loss(feats, feats_nn, head, w, negatives, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            print(f"cluster: stego step {step + 1}/{steps}, loss {np.mean(losses[-log_every:]):.4f}", flush=True)
    return head.eval(), losses


@torch.no_grad()
def codes(head: Head, tokens: np.ndarray) -> np.ndarray:
    """(N, D) tokens -> (N, dim) float32 unit codes of the trained head (which centres them)."""
    return unit_rows(head(torch.from_numpy(tokens.astype(np.float32))).numpy())
