"""Context prediction (Doersch, Gupta & Efros 2015): where is the second patch relative to the first?

A 3 x 3 grid of patches with gaps between them is laid on the image; the centre patch and one of its 8
neighbours go through the shared trunk (the backbone), their embeddings are concatenated, and an MLP
classifies the neighbour's position (8 ways). Against shortcuts, as in the paper: the gap between patches
and a random jitter of every patch (no continuing edges or textures across the border), and colour
dropping (only one channel kept, the others replaced by noise; against chromatic aberration).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.backbone.factory import normalize
from pipeline.backbone.pretext.common import Objective, check_multiple, embed, mlp
from pipeline.config import ContextConfig

# label -> (dy, dx) of the second patch's grid cell relative to the centre cell, row-major as in the paper's figure
NEIGHBOURS = torch.tensor([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)])


def grid_extent(patch: int, gap: int, jitter: int) -> int:
    """Pixels a jittered 3 x 3 grid of patches can span."""
    return 3 * patch + 2 * gap + 2 * jitter


def context_pairs(images: torch.Tensor, patch: int, gap: int, jitter: int, gen: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (B, 3, H, W) -> (centre (B, 3, p, p), neighbour (B, 3, p, p), labels (B,), corners (B, 2, 2)).

    The grid's cell (r, c) has its top-left at origin + (r, c) * (patch + gap), origin random such that the
    grid fits with its jitter; each patch then moves by its own uniform offset in [-jitter, jitter] per axis.
    corners[b, 0] / corners[b, 1]: (y, x) top-left of the centre / neighbour patch; labels index NEIGHBOURS.
    """
    b, _, h, w = images.shape
    ext = grid_extent(patch, gap, jitter)
    if ext > min(h, w):
        raise ValueError(f"context: 3 * patch + 2 * gap + 2 * jitter = {ext} does not fit the {h}x{w} images")
    step = patch + gap
    oy = torch.randint(jitter, h - ext + jitter + 1, (b,), generator=gen)
    ox = torch.randint(jitter, w - ext + jitter + 1, (b,), generator=gen)
    labels = torch.randint(0, 8, (b,), generator=gen)
    cells = torch.stack([torch.ones(b, 2, dtype=torch.long), 1 + NEIGHBOURS[labels]], 1)  # (B, 2, 2)
    jit = torch.randint(-jitter, jitter + 1, (b, 2, 2), generator=gen)
    corners = torch.stack([oy, ox], -1)[:, None, :] + cells * step + jit
    crops = [torch.stack([images[i, :, y:y + patch, x:x + patch] for y, x in corners[i].tolist()]) for i in range(b)]
    crops_t = torch.stack(crops)  # (B, 2, 3, p, p)
    return crops_t[:, 0], crops_t[:, 1], labels.to(images.device), corners


def color_drop(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Normalised patches (B, 3, p, p) -> one random channel kept per patch, the others Gaussian noise with
    1/100 of the kept channel's standard deviation (the paper's colour dropping)."""
    keep = torch.randint(0, 3, (x.shape[0],), generator=gen).to(x.device)  # drawn on the CPU: same stream everywhere
    kept = x[torch.arange(len(x)), keep][:, None]  # (B, 1, p, p)
    noise = torch.randn(x.shape, generator=gen).to(x.device) * kept.std(dim=(-1, -2), keepdim=True) / 100
    mask = F.one_hot(keep, 3).bool()[:, :, None, None]
    return torch.where(mask, x, noise)


class ContextNet(Objective):
    """Shared trunk on both patches -> concatenated embeddings -> MLP -> 8 relative-position logits."""

    def __init__(self, backbone: nn.Module, cfg: ContextConfig, image_size: int) -> None:
        super().__init__(backbone)
        check_multiple(cfg.patch, backbone, "pretrain.context.patch")
        ext = grid_extent(cfg.patch, cfg.gap, cfg.jitter)
        if ext > image_size:
            raise ValueError(f"params: 3 * pretrain.context.patch + 2 * gap + 2 * jitter is {ext}; "
                             f"must be <= data.image_size {image_size}")
        self.cfg = cfg
        self.head = mlp([2 * backbone.num_features, cfg.hidden_dim, cfg.hidden_dim, 8])

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Normalised patches (B, 3, p, p) x 2 -> (B, 8) logits."""
        e = embed(self.backbone, torch.cat([first, second])).chunk(2)
        return self.head(torch.cat(e, 1))

    def loss(self, batch: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        first, second, labels, _ = context_pairs(batch, self.cfg.patch, self.cfg.gap, self.cfg.jitter)
        first, second = normalize(first), normalize(second)
        if self.cfg.color_drop:
            first, second = color_drop(first), color_drop(second)
        logits = self(first, second)
        acc = float((logits.argmax(1) == labels).float().mean())
        return F.cross_entropy(logits, labels), {"accuracy": acc}
