"""Jigsaw puzzles (Noroozi & Favaro 2016): recognise which permutation of a fixed set shuffled 3x3 tiles.

The permutation set is chosen greedily for a large Hamming distance (the paper's Algorithm 1, here
maximising the minimum distance to the set chosen so far). Tiles are cut at a random place inside their
cell (so edges do not line up), each tile is normalised on its own, and some puzzles are grayscale, as
the paper does against low-level shortcuts. A shared trunk embeds every tile (the backbone), the 9
embeddings are concatenated and an MLP classifies the permutation.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.backbone.factory import normalize
from pipeline.backbone.pretext.common import Objective, check_multiple, embed, mlp, to_gray
from pipeline.config import JigsawConfig

TILES = 9  # a 3 x 3 grid


def hamming_permutations(count: int, seed: int, n: int = TILES) -> np.ndarray:
    """`count` distinct permutations of range(n), greedily far apart in Hamming distance -> (count, n) int64.

    Starts from a random permutation; each next one maximises its minimum Hamming distance to those already
    chosen (ties broken at random).
    """
    rng = np.random.default_rng(seed)
    flat = itertools.chain.from_iterable(itertools.permutations(range(n)))
    allp = np.fromiter(flat, dtype=np.int8).reshape(-1, n)
    cols = np.ascontiguousarray(allp.T)  # (n, n!): one contiguous row per position, for fast comparisons

    def dist_to(i: int) -> np.ndarray:
        d = np.zeros(allp.shape[0], np.int8)
        for j in range(n):
            d += cols[j] != allp[i, j]
        return d

    chosen = [int(rng.integers(len(allp)))]
    dmin = dist_to(chosen[0])
    for _ in range(count - 1):
        i = int(rng.choice(np.flatnonzero(dmin == dmin.max())))
        chosen.append(i)
        dmin = np.minimum(dmin, dist_to(i))
    return allp[chosen].astype(np.int64)


def min_hamming(perms: np.ndarray) -> int:
    """The smallest Hamming distance between two different rows of (P, n)."""
    d = (perms[:, None, :] != perms[None, :, :]).sum(-1)
    return int(d[~np.eye(len(perms), dtype=bool)].min())


def jigsaw_puzzles(images: torch.Tensor, perms: torch.Tensor, grid_crop: int, tile: int,
                   gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (B, 3, H, W) -> (tiles (B, 9, 3, tile, tile), labels (B,), origins (B, 9, 2)).

    A random grid_crop x grid_crop square is split in 3 x 3 cells of grid_crop // 3; a tile x tile tile is
    cut at a random place in each cell. Puzzle position i shows cell perms[label, i] (cells in row-major
    order); origins[b, i] is the (y, x) of that tile's top-left pixel in the image.
    """
    b, _, h, w = images.shape
    cell = grid_crop // 3
    if grid_crop > min(h, w) or tile > cell:
        raise ValueError(f"jigsaw: grid_crop {grid_crop} must fit the {h}x{w} images and tile {tile} its cells of {cell}")
    y0 = torch.randint(0, h - grid_crop + 1, (b,), generator=gen)
    x0 = torch.randint(0, w - grid_crop + 1, (b,), generator=gen)
    jit = torch.randint(0, cell - tile + 1, (b, TILES, 2), generator=gen)
    rows = torch.arange(TILES) // 3
    cols = torch.arange(TILES) % 3
    cell_origin = torch.stack([y0[:, None] + rows * cell, x0[:, None] + cols * cell], -1) + jit  # (B, 9, 2)
    labels = torch.randint(0, len(perms), (b,), generator=gen)
    order = perms.cpu()[labels]  # (B, 9): the cell shown at each position
    origins = torch.gather(cell_origin, 1, order[..., None].expand(-1, -1, 2))
    tiles = torch.stack([torch.stack([images[i, :, y:y + tile, x:x + tile] for y, x in origins[i].tolist()])
                         for i in range(b)])
    return tiles, labels.to(images.device), origins


def normalize_tiles(tiles: torch.Tensor) -> torch.Tensor:
    """(..., 3, t, t) -> each tile and channel to zero mean, unit std (the paper's per-tile normalisation)."""
    mean = tiles.mean(dim=(-1, -2), keepdim=True)
    std = tiles.std(dim=(-1, -2), keepdim=True)
    return (tiles - mean) / (std + 1e-3)


class JigsawNet(Objective):
    """Shared trunk per tile -> per-tile fc -> concatenated -> MLP -> permutation logits."""

    def __init__(self, backbone: nn.Module, cfg: JigsawConfig, image_size: int, seed: int) -> None:
        super().__init__(backbone)
        check_multiple(cfg.tile, backbone, "pretrain.jigsaw.tile")
        if cfg.grid_crop > image_size:
            raise ValueError(f"params: 'pretrain.jigsaw.grid_crop' is {cfg.grid_crop}; must be <= data.image_size {image_size}")
        self.cfg = cfg
        self.register_buffer("perms", torch.from_numpy(hamming_permutations(cfg.permutations, seed)))
        d = backbone.num_features
        self.tile_fc = nn.Sequential(nn.Linear(d, cfg.hidden_dim), nn.ReLU(inplace=True))
        self.classifier = mlp([TILES * cfg.hidden_dim, cfg.hidden_dim, cfg.permutations])

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        """Normalised tiles (B, 9, 3, t, t) -> permutation logits (B, P)."""
        b = tiles.shape[0]
        e = self.tile_fc(embed(self.backbone, tiles.flatten(0, 1)))
        return self.classifier(e.reshape(b, -1))

    def loss(self, batch: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        tiles, labels, _ = jigsaw_puzzles(batch, self.perms, self.cfg.grid_crop, self.cfg.tile)
        gray = (torch.rand(len(tiles)) < self.cfg.gray_prob).to(tiles.device)
        tiles = torch.where(gray[:, None, None, None, None], to_gray(tiles), tiles)
        logits = self(normalize_tiles(tiles))
        acc = float((logits.argmax(1) == labels).float().mean())
        return F.cross_entropy(logits, labels), {"accuracy": acc}


__all__ = ["hamming_permutations", "min_hamming", "jigsaw_puzzles", "normalize_tiles", "JigsawNet", "normalize"]
