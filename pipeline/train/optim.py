"""How the network's weights move: which parameters train (`freeze_backbone`), AdamW over the decoder and the
backbone at their own learning rates, the per-step schedule (linear warm-up, cosine decay) and the autocast dtype."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.config import TrainConfig


def freeze_backbone(model: nn.Module, cfg: TrainConfig) -> None:
    """train.backbone_lr 0: the backbone's params stop requiring grad (no gradient, no optimiser state); else
    nothing changes. Call it before wrapping the model in DDP (which reduces the gradients of the params that
    require grad when it wraps) and before `optimizer`."""
    if cfg.backbone_lr <= 0:
        for p in model.backbone.parameters():
            p.requires_grad_(False)


def optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW: decoder (`model.head`) at cfg.lr, backbone at cfg.backbone_lr (left out when 0: see `freeze_backbone`)."""
    groups = [{"params": model.head.parameters(), "lr": cfg.lr}]
    if cfg.backbone_lr > 0:
        groups.append({"params": model.backbone.parameters(), "lr": cfg.backbone_lr})
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Multiplier of every param group's peak lr at optimiser step `step` (0-based) of `total`: a linear warm-up
    (step + 1) / (warmup + 1) over the first `warmup` steps, then the cosine 0.5 (1 + cos(pi (step - warmup) /
    (total - warmup))) from the peak at step `warmup` towards 0 at step `total` (warmup 0: the plain cosine)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return 0.5 * (1.0 + float(np.cos(np.pi * (step - warmup) / max(total - warmup, 1))))


def lr_schedule(opt: torch.optim.Optimizer, total: int, warmup: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-step schedule of `lr_factor`, stepped once per optimiser step: without warm-up torch's
    CosineAnnealingLR(T_max=total), else a LambdaLR of `lr_factor`. Its state_dict holds the step, so a resumed
    run continues the same lr sequence."""
    if warmup == 0:
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, total, warmup))


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """Autocast dtype: bf16 on CUDA where supported, else fp16 (with loss scaling); None on the CPU / disabled."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
