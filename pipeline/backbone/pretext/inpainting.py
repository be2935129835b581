"""Context Encoders (Pathak et al. 2016): reconstruct the pixels of a masked region from its context.

The region is filled with the dataset mean (0 after normalisation); the backbone encodes the masked image
and a linear head on each patch token predicts its patch's pixels. As in the paper the prediction also
covers a ring of `overlap` context pixels around the hole, whose L2 loss weighs `overlap_weight` times
more; masks are a central square, random blocks, or random regions (the paper uses PASCAL object shapes;
here smooth random blobs). The paper's adversarial term is left out (the reconstruction loss alone).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.backbone.factory import normalize, patch_size
from pipeline.backbone.pretext.common import Objective, check_multiple, random_crops
from pipeline.config import InpaintingConfig


def central_mask(size: int, frac: float) -> torch.Tensor:
    """(size, size) bool: a centred square of side round(frac * size)."""
    s = int(round(frac * size))
    a = (size - s) // 2
    m = torch.zeros(size, size, dtype=torch.bool)
    m[a:a + s, a:a + s] = True
    return m


def random_block_mask(size: int, coverage: float, block: float, gen: torch.Generator | None = None) -> torch.Tensor:
    """(size, size) bool: random squares of side round(block * size), possibly overlapping, added until at
    least `coverage` of the pixels are masked."""
    s = max(int(round(block * size)), 1)
    m = torch.zeros(size, size, dtype=torch.bool)
    while m.float().mean() < coverage:
        y, x = torch.randint(0, size - s + 1, (2,), generator=gen).tolist()
        m[y:y + s, x:x + s] = True
    return m


def random_region_mask(size: int, coverage: float, gen: torch.Generator | None = None) -> torch.Tensor:
    """(size, size) bool: the round(coverage * size^2) highest pixels of smoothed noise (random blobs)."""
    k = max(size // 8, 1) * 2 + 1
    noise = torch.randn(1, 1, size, size, generator=gen)
    smooth = F.avg_pool2d(F.avg_pool2d(noise, k, 1, k // 2, count_include_pad=False), k, 1, k // 2,
                          count_include_pad=False).flatten()
    m = torch.zeros(size * size, dtype=torch.bool)
    m[torch.argsort(smooth, descending=True)[:int(round(coverage * size * size))]] = True
    return m.view(size, size)


def overlap_ring(mask: torch.Tensor, width: int) -> torch.Tensor:
    """(H, W) bool -> (H, W) bool: pixels within `width` (Chebyshev distance) of the mask, outside it."""
    if width == 0:
        return torch.zeros_like(mask)
    grown = F.max_pool2d(mask[None, None].float(), 2 * width + 1, 1, width)[0, 0] > 0
    return grown & ~mask


def make_masks(cfg: InpaintingConfig, n: int, size: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """n masks (n, size, size) bool of the configured kind."""
    if cfg.mask == "central":
        return central_mask(size, cfg.size)[None].expand(n, -1, -1).clone()
    if cfg.mask == "random_block":
        return torch.stack([random_block_mask(size, cfg.coverage, cfg.block, gen) for _ in range(n)])
    return torch.stack([random_region_mask(size, cfg.coverage, gen) for _ in range(n)])


def loss_weights(masks: torch.Tensor, overlap: int, overlap_weight: float) -> torch.Tensor:
    """(B, H, W) bool -> (B, H, W) float: 1 in the hole, overlap_weight in its ring, 0 elsewhere."""
    ring = torch.stack([overlap_ring(m, overlap) for m in masks])
    return masks.float() + overlap_weight * ring.float()


class ContextEncoder(Objective):
    """Backbone on the masked image -> linear head per patch token -> that patch's p x p x 3 pixels."""

    def __init__(self, backbone: nn.Module, cfg: InpaintingConfig) -> None:
        super().__init__(backbone)
        check_multiple(cfg.crop_size, backbone, "pretrain.inpainting.crop_size")
        self.cfg = cfg
        p = patch_size(backbone)
        self.head = nn.Linear(backbone.num_features, p * p * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised masked images (B, 3, H, W) -> predicted normalised images (B, 3, H, W)."""
        p = patch_size(self.backbone)
        tokens = self.backbone.forward_features(x)[:, self.backbone.num_prefix_tokens:]
        b, _, h, w = x.shape
        out = self.head(tokens).view(b, h // p, w // p, p, p, 3)
        return out.permute(0, 5, 1, 3, 2, 4).reshape(b, 3, h, w)

    def loss(self, batch: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        x = normalize(random_crops(batch, self.cfg.crop_size, self.cfg.crop_scale_min))
        masks = make_masks(self.cfg, len(x), self.cfg.crop_size).to(x.device)
        weights = loss_weights(masks, self.cfg.overlap, self.cfg.overlap_weight)[:, None]
        pred = self(x.masked_fill(masks[:, None], 0.0))
        loss = (weights * (pred - x) ** 2).sum() / (3 * weights.sum())
        return loss, {}
