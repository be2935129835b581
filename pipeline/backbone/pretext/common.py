"""What every pretext objective shares: the `Objective` interface, crops and embeddings, and the training loop.

An objective wraps the pipeline's timm ViT (`pipeline.backbone.factory.create_backbone`) with the small heads its
paper adds on top; only the backbone is kept, so its dense patch tokens feed the rest of the DAG unchanged.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from torch import nn
from torchvision.transforms import v2

from pipeline.backbone.dino import cosine_schedule, decay_groups
from pipeline.backbone.factory import normalize, patch_size
from pipeline.config import PretrainConfig


class Objective(nn.Module):
    """A backbone plus the heads of one self-supervised task.

    `loss(batch, idx)` takes images (B, 3, H, W) float in [0, 1] and their indices (B,) in the dataset and
    returns (scalar loss, {name: float} extras to log).
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def loss(self, batch: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def epoch_start(self, data: torch.Tensor, epoch: int) -> list[nn.Parameter]:
        """Called before each epoch with all images (N, 3, H, W) uint8; returns parameters that were
        re-initialised (their optimiser state is dropped). Default: nothing to do."""
        return []

    def sample_order(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """The order in which the epoch visits the n images (default: a random permutation)."""
        return rng.permutation(n)


def embed(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Normalised images (B, 3, s, s) -> the backbone's pooled embedding (B, D) (the class token for timm ViTs)."""
    return backbone.forward_head(backbone.forward_features(x), pre_logits=True)


def check_multiple(value: int, backbone: nn.Module, key: str) -> None:
    """A crop side the ViT sees must be a multiple of its patch size."""
    p = patch_size(backbone)
    if value % p:
        raise ValueError(f"params: '{key}' is {value}; must be a multiple of the backbone's patch size {p}")


def random_crops(batch: torch.Tensor, size: int, scale_min: float) -> torch.Tensor:
    """(B, 3, H, W) float [0, 1] -> (B, 3, size, size): a random resized crop and flip of each image."""
    tf = v2.Compose([v2.RandomResizedCrop(size, scale=(scale_min, 1.0), antialias=True), v2.RandomHorizontalFlip()])
    return torch.stack([tf(im) for im in batch])


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB -> the same shape with every channel the Rec. 601 luma."""
    y = 0.299 * x[..., 0:1, :, :] + 0.587 * x[..., 1:2, :, :] + 0.114 * x[..., 2:3, :, :]
    return y.expand_as(x)


def mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def train_objective(objective: Objective, images: np.ndarray, cfg: PretrainConfig, seed: int,
                    log: Callable[[dict], None] | None = None,
                    device: torch.device = torch.device("cpu")) -> tuple[nn.Module, list[dict]]:
    """Train `objective` on images (N, H, W, 3) uint8 -> (its backbone on the CPU, per-epoch history).

    AdamW at peak `pretext_lr` after `warmup_epochs`, cosine to `min_lr` over `epochs`, gradient clipping;
    stops early at `stop_after_epochs` or `max_minutes` (checked after every step, so a time budget holds).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    objective.to(device)
    data = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().to(device)
    n = len(data)
    bs = min(cfg.batch_size, n)
    steps_per_epoch = max(n // bs, 1)
    total = cfg.epochs * steps_per_epoch
    lrs = cosine_schedule(cfg.pretext_lr, cfg.min_lr, total, cfg.warmup_epochs * steps_per_epoch)
    opt = torch.optim.AdamW(decay_groups(objective), lr=cfg.pretext_lr, weight_decay=cfg.weight_decay)
    history: list[dict] = []
    start = time.time()
    step = 0
    out_of_time = False
    for epoch in range(cfg.epochs):
        objective.eval()
        for p in objective.epoch_start(data, epoch):
            opt.state.pop(p, None)
        objective.train()
        order = objective.sample_order(n, rng)
        losses: list[float] = []
        extras: dict[str, list[float]] = {}
        for b in range(steps_per_epoch):
            idx = torch.from_numpy(np.asarray(order[b * bs:(b + 1) * bs])).to(device)
            for g in opt.param_groups:
                g["lr"] = float(lrs[step])
            loss, extra = objective.loss(data[idx].float() / 255.0, idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(objective.parameters(), cfg.clip_grad)
            opt.step()
            losses.append(float(loss.detach()))
            for k, v in extra.items():
                extras.setdefault(k, []).append(v)
            step += 1
            if cfg.max_minutes and time.time() - start >= cfg.max_minutes * 60:
                out_of_time = True
                break
        rec = {"epoch": epoch, "loss": float(np.mean(losses)), "lr": float(lrs[step - 1]), "steps": step,
               "minutes": (time.time() - start) / 60, **{k: float(np.mean(v)) for k, v in extras.items()}}
        history.append(rec)
        if log:
            log(rec)
        if out_of_time or (cfg.stop_after_epochs and epoch + 1 >= cfg.stop_after_epochs):
            break
    return objective.backbone.cpu(), history


__all__ = ["Objective", "embed", "check_multiple", "random_crops", "to_gray", "mlp", "normalize", "train_objective"]
