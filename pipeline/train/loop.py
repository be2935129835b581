"""The training loop: one loop for the CPU, one GPU (bf16/fp16 autocast, channels-last for convolutional encoders,
DataLoader workers with pinned memory) and several processes under torchrun (DistributedDataParallel, the batch
plan's shares, batch statistics and the loss normaliser synchronised, so N processes compute what one process
computes with the same global batch). Every random choice (data order, crops) derives from (seed, epoch, image), so
a run resumed from a checkpoint reaches the same weights."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from pipeline.config import TrainConfig
from pipeline.io import IGNORE
from pipeline.train import optim
from pipeline.train.data import PairDataset, batch_plan, default_crop
from pipeline.distributed import sync_batchnorm, world


def pixel_loss(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy over pixels, label 255 ignored: logits (B, C, H, W), target (B, H, W) -> (the sum over the
    valid pixels, a scalar with gradient, 0 when every pixel is ignored; their count, a float scalar). The sum over
    their count is the mean."""
    return F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="sum"), (target != IGNORE).sum().float()


def fit(model: nn.Module, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], cfg: TrainConfig, seed: int,
        device: torch.device, epochs: int, start: dict | None = None, on_step: Callable[[dict], None] | None = None,
        on_checkpoint: Callable[[dict], None] | None = None, max_steps: int | None = None,
        crop_size: int | None = None) -> tuple[list[dict], bool]:
    """Train on images ((H_i, W_i, 3) uint8, sizes may differ) with labels ((H_i, W_i) uint8, 255 ignore) for
    `epochs` epochs, on random resized crops of crop_size x crop_size (None: `default_crop`).

    start: a state from `on_checkpoint` ({'step', 'model', 'opt', 'sched', 'scaler', 'history'}) to resume
    from; its 'opt' may be None (fresh optimiser on its weights). on_checkpoint gets that state every
    cfg.checkpoint_every steps and at the end (on every process; the caller writes on rank 0 only).
    max_steps: stop after this many steps of this call (as if killed just after a checkpoint).
    Returns the per-step history ({'step', 'epoch', 'loss', 'lr'}) and whether it finished.
    Learning rate per step: linear warm-up over cfg.warmup_epochs, then cosine decay (`optim.lr_schedule`); under
    torch.distributed the model runs in DDP.
    """
    rank, world_size = world()
    model.to(device)
    conv = device.type == "cuda" and not (cfg.model == "stage" or "vit" in cfg.model_name)
    if conv:
        model.to(memory_format=torch.channels_last)
    if start is not None:
        model.load_state_dict(start["model"])
    optim.freeze_backbone(model, cfg)
    net = model
    if world_size > 1:
        sync_batchnorm(model, device)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = optim.optimizer(model, cfg)  # after sync_batchnorm, which replaces the BatchNorm modules and their params
    plan, steps_per_epoch = batch_plan(len(images), cfg.batch_size, epochs, seed, rank, world_size)
    sched = optim.lr_schedule(opt, len(plan), cfg.warmup_epochs * steps_per_epoch)
    dtype = optim.amp_dtype(device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    step, history = 0, []
    if start is not None and start.get("opt") is not None:
        opt.load_state_dict(start["opt"])
        sched.load_state_dict(start["sched"])
        scaler.load_state_dict(start["scaler"])
        step, history = start["step"], list(start["history"])

    def state() -> dict:
        return {"step": step, "model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                "scaler": scaler.state_dict(), "history": list(history)}

    size = crop_size or default_crop(images)
    loader = DataLoader(PairDataset(images, labels, cfg.crop_scale_min, seed, size, cfg.crop_scale_max,
                                    cfg.color_jitter),
                        batch_sampler=plan[step:],
                        num_workers=cfg.workers, pin_memory=device.type == "cuda",
                        persistent_workers=False, prefetch_factor=4 if cfg.workers else None)
    net.train()
    done_here = 0
    for x, y in loader:
        if max_steps is not None and done_here >= max_steps:
            return history, False
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if conv:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = net(x)
        loss_sum, valid = pixel_loss(logits.float(), y)
        # One all-reduce gives the global loss sum and valid-pixel count: dividing by the global count (times the
        # world size, which DDP's gradient averaging divides by again) is the single-process mean.
        local = torch.stack([loss_sum.detach(), valid])
        if world_size > 1:
            dist.all_reduce(local)
        loss = loss_sum / (local[1].clamp(min=1) / world_size)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        lr = float(opt.param_groups[0]["lr"])
        sched.step()
        step += 1
        done_here += 1
        rec = {"step": step, "epoch": (step - 1) // steps_per_epoch, "loss": float(local[0] / local[1].clamp(min=1)),
               "lr": lr}
        history.append(rec)
        if on_step:
            on_step(rec)
        if on_checkpoint and (step % cfg.checkpoint_every == 0 or step == len(plan)):
            on_checkpoint(state())
    return history, True


def epoch_summary(history: list[dict]) -> list[dict]:
    """Per-step records -> per-epoch {'epoch', 'loss' (mean), 'lr' (last)}."""
    out: dict[int, list[dict]] = {}
    for r in history:
        out.setdefault(r["epoch"], []).append(r)
    return [{"epoch": e, "loss": float(np.mean([r["loss"] for r in rs])), "lr": rs[-1]["lr"]}
            for e, rs in sorted(out.items())]


def train(model: nn.Module, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], cfg: TrainConfig, seed: int,
          device: torch.device, crop_size: int | None = None) -> list[dict]:
    """One uninterrupted training run of cfg.epochs epochs -> per-epoch history (see `fit`)."""
    history, _ = fit(model, images, labels, cfg, seed, device, cfg.epochs, crop_size=crop_size)
    return epoch_summary(history)
