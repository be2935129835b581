"""Colorization as a proxy task (Larsson, Maire & Shakhnarovich 2017): lightness in, colour distributions out.

The network sees only the lightness (L of CIE Lab, replicated to 3 channels) and predicts, for every
sub-cell of every patch, a distribution over quantised ab colours (in-gamut bins of a regular grid, as
Zhang et al. 2016: 313 bins at grid 10). The target is the histogram of the sub-cell's pixel colours, the
loss the KL divergence, as Larsson et al.'s histogram loss. The head is one linear layer on the patch
tokens, so the dense features themselves must carry the colour evidence.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.backbone.factory import normalize, patch_size
from pipeline.backbone.pretext.common import Objective, check_multiple, random_crops
from pipeline.config import ColorizationConfig

AB_RANGE = 110.0  # |a|, |b| of sRGB colours stay below this (CIE Lab, D65)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB (..., 3, H, W) in [0, 1] -> CIE Lab (D65) (..., 3, H, W): L in [0, 100], a and b about [-110, 110]."""
    lin = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = torch.tensor([[0.412453, 0.357580, 0.180423],
                      [0.212671, 0.715160, 0.072169],
                      [0.019334, 0.119193, 0.950227]], dtype=rgb.dtype, device=rgb.device)
    xyz = torch.einsum("ij,...jhw->...ihw", m, lin)
    white = torch.tensor([0.950456, 1.0, 1.088754], dtype=rgb.dtype, device=rgb.device).view(3, 1, 1)
    t = xyz / white
    eps = (6 / 29) ** 3
    f = torch.where(t > eps, t.clamp_min(eps) ** (1 / 3), t / (3 * (6 / 29) ** 2) + 4 / 29)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], -3)


@functools.lru_cache(maxsize=8)
def gamut_bins(grid: float) -> tuple[np.ndarray, np.ndarray]:
    """The in-gamut ab bins of a grid of width `grid` -> (centres (Q, 2) float32, lut (G * G,) int64).

    A bin is in gamut when some sRGB colour (a 64^3 sample of the cube) falls in it. lut maps every cell of
    the full G x G grid over [-AB_RANGE, AB_RANGE)^2 to its in-gamut bin, out-of-gamut cells to the nearest one.
    """
    g = int(np.ceil(2 * AB_RANGE / grid))
    v = torch.linspace(0, 1, 64)
    cube = torch.stack(torch.meshgrid(v, v, v, indexing="ij")).reshape(3, -1, 1)
    ab = rgb_to_lab(cube)[1:].reshape(2, -1).T.numpy()
    cells = np.unique(_cell(ab, grid, g))
    all_centres = _centre(np.arange(g * g), grid, g)
    centres = all_centres[cells]
    nearest = np.argmin(((all_centres[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    lut = nearest.astype(np.int64)
    lut[cells] = np.arange(len(cells))
    return centres.astype(np.float32), lut


def _cell(ab: np.ndarray, grid: float, g: int) -> np.ndarray:
    idx = np.clip(np.floor((ab + AB_RANGE) / grid).astype(np.int64), 0, g - 1)
    return idx[..., 0] * g + idx[..., 1]


def _centre(cell: np.ndarray, grid: float, g: int) -> np.ndarray:
    return np.stack([(cell // g + 0.5) * grid - AB_RANGE, (cell % g + 0.5) * grid - AB_RANGE], -1)


def ab_to_bin(ab: np.ndarray, grid: float) -> np.ndarray:
    """ab values (..., 2) -> in-gamut bin indices (...) int64."""
    _, lut = gamut_bins(grid)
    return lut[_cell(ab, grid, int(np.ceil(2 * AB_RANGE / grid)))]


def bin_to_ab(bins: np.ndarray, grid: float) -> np.ndarray:
    """Bin indices (...) -> their ab centres (..., 2)."""
    centres, _ = gamut_bins(grid)
    return centres[bins]


def colour_histograms(rgb: torch.Tensor, grid: float, cell: int) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] -> per cell x cell block, the distribution of its pixels' ab bins
    (B, Q, H / cell, W / cell), summing to 1 over Q."""
    b, _, h, w = rgb.shape
    centres, _ = gamut_bins(grid)
    q = len(centres)
    ab = rgb_to_lab(rgb)[:, 1:].permute(0, 2, 3, 1).cpu().numpy()
    bins = torch.from_numpy(ab_to_bin(ab, grid)).to(rgb.device)  # (B, H, W)
    hb, wb = h // cell, w // cell
    ar = lambda n: torch.arange(n, device=rgb.device)  # noqa: E731
    block = (ar(h)[:, None] // cell) * wb + ar(w)[None, :] // cell  # (H, W)
    flat = (ar(b)[:, None, None] * (hb * wb) + block) * q + bins
    counts = torch.bincount(flat.reshape(-1), minlength=b * hb * wb * q).float()
    return (counts.view(b, hb, wb, q) / (cell * cell)).permute(0, 3, 1, 2)


def lightness(rgb: torch.Tensor) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] -> L / 100 replicated to 3 channels (B, 3, H, W), the network's input."""
    return (rgb_to_lab(rgb)[:, :1] / 100.0).expand(-1, 3, -1, -1)


class ColorizationNet(Objective):
    """Backbone on lightness -> linear head on each patch token -> logits over Q bins for cells x cells sub-cells."""

    def __init__(self, backbone: nn.Module, cfg: ColorizationConfig) -> None:
        super().__init__(backbone)
        check_multiple(cfg.crop_size, backbone, "pretrain.colorization.crop_size")
        p = patch_size(backbone)
        if p % cfg.cells:
            raise ValueError(f"params: 'pretrain.colorization.cells' is {cfg.cells}; must divide the patch size {p}")
        self.cfg = cfg
        self.q = len(gamut_bins(cfg.grid)[0])
        self.head = nn.Linear(backbone.num_features, cfg.cells * cfg.cells * self.q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised lightness images (B, 3, H, W) -> log-probabilities (B, Q, H/p * cells, W/p * cells)."""
        tokens = self.backbone.forward_features(x)[:, self.backbone.num_prefix_tokens:]
        b, n, _ = tokens.shape
        h = x.shape[2] // patch_size(self.backbone)
        w = n // h
        c = self.cfg.cells
        out = self.head(tokens).view(b, h, w, c, c, self.q).permute(0, 5, 1, 3, 2, 4)
        return F.log_softmax(out.reshape(b, self.q, h * c, w * c), dim=1)

    def loss(self, batch: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        crops = random_crops(batch, self.cfg.crop_size, self.cfg.crop_scale_min)
        target = colour_histograms(crops, self.cfg.grid, patch_size(self.backbone) // self.cfg.cells)
        logp = self(normalize(lightness(crops)))
        kl = (target * (torch.log(target.clamp_min(1e-8)) - logp)).sum(1).mean()
        return kl, {}
