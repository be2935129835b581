"""The segmentation network: the ViT backbone plus a light convolutional decoder, and its training loop."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2

from pipeline import backbone as bb
from pipeline.config import TrainConfig
from pipeline.io import IGNORE


class SegNet(nn.Module):
    """Backbone patch tokens (B, h, w, D) -> 3x3 conv, BN, ReLU, 1x1 conv -> logits upsampled to the input."""

    def __init__(self, backbone: nn.Module, num_classes: int, decoder_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(
            nn.Conv2d(backbone.num_features, decoder_dim, 3, padding=1), nn.BatchNorm2d(decoder_dim), nn.ReLU(inplace=True),
            nn.Conv2d(decoder_dim, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) -> logits (B, num_classes, H, W)."""
        tokens = bb.patch_tokens(self.backbone, x).permute(0, 3, 1, 2)
        return F.interpolate(self.head(tokens), size=x.shape[-2:], mode="bilinear", align_corners=False)


def augment(size: int, scale_min: float) -> v2.Compose:
    """Joint image/label augmentation: random resized crop back to `size` (labels nearest) and flip."""
    return v2.Compose([v2.RandomResizedCrop(size, scale=(scale_min, 1.0), antialias=True), v2.RandomHorizontalFlip()])


def make_batch(images: np.ndarray, labels: np.ndarray, aug: v2.Compose | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, H, W, 3) uint8 images and (B, H, W) uint8 labels -> normalised (B, 3, H, W) and (B, H, W) int64."""
    xs, ys = [], []
    for img, lab in zip(images, labels):
        x = tv_tensors.Image(torch.from_numpy(img).permute(2, 0, 1).float() / 255.0)
        y = tv_tensors.Mask(torch.from_numpy(lab.astype(np.int64)))
        if aug is not None:
            x, y = aug(x, y)
        xs.append(x.as_subclass(torch.Tensor))
        ys.append(y.as_subclass(torch.Tensor))
    return bb.normalize(torch.stack(xs)), torch.stack(ys)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over pixels, label 255 ignored: (B, C, H, W), (B, H, W) -> scalar (0 if all ignored)."""
    if (target != IGNORE).sum() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, ignore_index=IGNORE)


def optimizer(model: SegNet, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW: decoder at cfg.lr, backbone at cfg.backbone_lr (frozen when 0)."""
    groups = [{"params": model.head.parameters(), "lr": cfg.lr}]
    if cfg.backbone_lr > 0:
        groups.append({"params": model.backbone.parameters(), "lr": cfg.backbone_lr})
    else:
        for p in model.backbone.parameters():
            p.requires_grad_(False)
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def train(model: SegNet, images: np.ndarray, labels: np.ndarray, cfg: TrainConfig, seed: int, device: torch.device,
          log: Callable[[dict], None] | None = None) -> list[dict]:
    """Train on images (N, H, W, 3) uint8 with labels (N, H, W) uint8 (255 ignore) -> per-epoch history.

    Cosine learning-rate decay per step; bf16 autocast on CUDA.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model.to(device)
    opt = optimizer(model, cfg)
    aug = augment(images.shape[1], cfg.crop_scale_min)
    bs = min(cfg.batch_size, len(images))
    steps = max(len(images) // bs, 1)
    total = cfg.epochs * steps
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    history = []
    for epoch in range(cfg.epochs):
        model.train()
        order = rng.permutation(len(images))
        losses, start = [], time.time()
        for s in range(steps):
            idx = np.sort(order[s * bs:(s + 1) * bs])
            x, y = make_batch(images[idx], labels[idx], aug)
            x, y = x.to(device), y.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(x)
            loss = segmentation_loss(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        rec = {"epoch": epoch, "loss": float(np.mean(losses)), "lr": float(opt.param_groups[0]["lr"]),
               "images_per_second": steps * bs / (time.time() - start)}
        history.append(rec)
        if log:
            log(rec)
    return history


@torch.no_grad()
def predict(model: SegNet, images: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    """Images (N, H, W, 3) uint8 -> (N, H, W) uint8 argmax classes."""
    model.to(device).eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = bb.normalize(bb.to_tensor(images[i:i + batch_size]).to(device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x)
        out.append(logits.float().argmax(1).to(torch.uint8).cpu().numpy())
    return np.concatenate(out)
