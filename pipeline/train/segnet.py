"""The segmentation network and its training.

Networks: a dense encoder (the pretrain stage's ViT, any timm model, or torchvision DeepLabv3) with a light
convolutional decoder. Training: one loop for the CPU, one GPU (bf16/fp16 autocast, channels-last for
convolutional encoders, DataLoader workers with pinned memory) and several processes under torchrun
(DistributedDataParallel, DistributedSampler, batch statistics and the loss normaliser synchronised, so N
processes compute what one process computes with the same global batch). Every random choice (data order,
crops) derives from (seed, round, epoch, image), so a run resumed from a checkpoint reaches the same
weights. Self-training rounds relabel the images with the model's confident pixels and retrain.

Images may differ in size (lists of (H_i, W_i, 3) arrays; a stacked (N, H, W, 3) array works too): training draws
crop_size x crop_size random resized crops, so batches stack; prediction batches images of one size together and
can upsample each image's logits to any size (the image's original size) before the argmax.

Streaming: images and labels may be any sequence read on access (io.LazyImages / io.LazyLabels: files read by the
Dataset, in the DataLoader workers, one image at a time), and self-training keeps each round's relabelled maps on
disk (`maps_dir`), so memory does not grow with the number of images.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from pipeline import io
from pipeline.backbone import factory as bb
from pipeline.config import TrainConfig
from pipeline.io import IGNORE


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (padding 1, no bias), BatchNorm, ReLU: (B, c_in, H, W) -> (B, c_out, ceil(H/stride), ceil(W/stride))."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class FusedHead(nn.Module):
    """A decoder that sees finer detail than the encoder's map: a shallow pixel stem at 1/4 fused with the
    upsampled encoder map (DeepLabv3+'s decoder, Chen et al. 2018).

    stem: normalised images (B, 3, H, W) -> two 3x3 stride-2 conv+BN+ReLU -> (B, stem_dim, H/4, W/4) (stem_stride
    2: the second conv has stride 1, and everything below is at H/2 x W/2);
    project: encoder map (B, D, h, w) -> 3x3 conv+BN+ReLU -> (B, decoder_dim, h, w), upsampled bilinearly to
    (H/4, W/4); fuse: their concatenation (B, decoder_dim + stem_dim, H/4, W/4) -> 3x3 conv+BN+ReLU -> 1x1 conv
    -> logits (B, num_classes, H/4, W/4) (ceil(H/4) for sides not a multiple of 4).
    Departures from DeepLabv3+ (its low-level features are the encoder's 1/4 map projected by a 1x1 conv to 48
    channels, then two 3x3 convs of 256): a ViT has no 1/4 map, so the low-level features come from a stem on
    the pixels; one fuse conv of decoder_dim channels instead of two of 256, for the CPU budget.
    """

    def __init__(self, in_dim: int, num_classes: int, decoder_dim: int, stem_dim: int, stem_stride: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn_relu(3, stem_dim, 2), conv_bn_relu(stem_dim, stem_dim, stem_stride // 2))
        self.project = conv_bn_relu(in_dim, decoder_dim)
        self.fuse = conv_bn_relu(decoder_dim + stem_dim, decoder_dim)
        self.classify = nn.Conv2d(decoder_dim, num_classes, 1)

    def forward(self, feats: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Encoder map (B, D, h, w), normalised images (B, 3, H, W) -> logits (B, num_classes, H/4, W/4)."""
        fine = self.stem(x)
        coarse = F.interpolate(self.project(feats), size=fine.shape[-2:], mode="bilinear", align_corners=False)
        return self.classify(self.fuse(torch.cat([coarse, fine], 1)))


class SegNet(nn.Module):
    """Encoder dense map (B, D, h, w) -> decoder `head` -> logits upsampled bilinearly to the input (B, K, H, W).

    decoder simple: 3x3 conv, BN, ReLU, 1x1 conv on the encoder map (h, w = H/8, W/8 for the stage's ViT);
    fused: `FusedHead` (a pixel stem at H/4 x W/4 fused with the upsampled encoder map; logits at 1/4).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, decoder_dim: int, decoder: str = "simple",
                 stem_dim: int = 32, stem_stride: int = 4) -> None:
        super().__init__()
        self.backbone = backbone
        if decoder == "fused":
            self.head: nn.Module = FusedHead(bb.dense_dim(backbone), num_classes, decoder_dim, stem_dim, stem_stride)
        else:
            self.head = nn.Sequential(
                nn.Conv2d(bb.dense_dim(backbone), decoder_dim, 3, padding=1, bias=False), nn.BatchNorm2d(decoder_dim),
                nn.ReLU(inplace=True), nn.Conv2d(decoder_dim, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) -> logits (B, num_classes, H, W)."""
        feats = bb.dense_map(self.backbone, x)
        logits = self.head(feats, x) if isinstance(self.head, FusedHead) else self.head(feats)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class TorchvisionSeg(nn.Module):
    """torchvision's DeepLabv3 behind the SegNet interface (`backbone`, `head`, logits at input size)."""

    def __init__(self, arch: str, num_classes: int, pretrained: bool) -> None:
        super().__init__()
        from torchvision.models import segmentation
        net = getattr(segmentation, f"deeplabv3_{arch}")(weights=None, weights_backbone="DEFAULT" if pretrained else None,
                                                         num_classes=num_classes, aux_loss=False)
        self.backbone, self.head = net.backbone, net.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) -> logits (B, num_classes, H, W)."""
        return F.interpolate(self.head(self.backbone(x)["out"]), size=x.shape[-2:], mode="bilinear", align_corners=False)


def build_model(cfg: TrainConfig, num_classes: int, img_size: int, stage_backbone: Callable[[], nn.Module]) -> nn.Module:
    """The network train.model names: stage (`stage_backbone()`, the pretrain stage's ViT), timm or deeplabv3;
    the first two with train.decoder's head (simple or fused)."""
    if cfg.model == "deeplabv3":
        return TorchvisionSeg(cfg.model_name, num_classes, cfg.pretrained)
    enc = stage_backbone() if cfg.model == "stage" else bb.create_dense(cfg.model_name, img_size, cfg.pretrained)
    return SegNet(enc, num_classes, cfg.decoder_dim, cfg.decoder, cfg.stem_dim, cfg.stem_stride)


# ---------------------------------------------------------------- distributed helpers

def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose gradient is the sum of the processes' gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics span every process (any backend, gloo on the CPU included;
    torch's SyncBatchNorm is GPU-only). Same parameters and buffers as BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world()[1] == 1:
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        c = x.shape[1]
        count = all_reduce(x.new_tensor([x.numel() / c]))[0]
        mean = all_reduce(x.sum((0, 2, 3))) / count
        var = all_reduce(((x - mean.view(1, c, 1, 1)) ** 2).sum((0, 2, 3))) / count
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 0.1
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * count / max(float(count) - 1, 1.0))
            self.num_batches_tracked += 1
        y = (x - mean.view(1, c, 1, 1)) * torch.rsqrt(var.view(1, c, 1, 1) + self.eps)
        return y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1) if self.affine else y


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d -> synchronised across processes: torch's SyncBatchNorm on CUDA, AllReduceBatchNorm2d else."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            new = AllReduceBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats).to(child.weight.device if child.affine else device)
            new.load_state_dict(child.state_dict())
            setattr(model, name, new)
        else:
            sync_batchnorm(child, device)
    return model


# ---------------------------------------------------------------- data

class ZoomCrop(v2.RandomResizedCrop):
    """RandomResizedCrop whose area scale may exceed 1, zooming out as well as in (MaskDistill's ScaleNRotate
    scales 0.75..1.25 around 1; a crop only zooms in).

    One draw: area share s ~ U(scale) of the image and aspect r log-uniform in `ratio`; the window (sqrt(s r) W,
    sqrt(s / r) H) lies uniformly inside the image along a side it fits, else holds that whole side at a uniform
    offset. Outside the image the image is the ImageNet mean (0 once normalised) and the label 255 (ignored); the
    window is resized to size x size (labels nearest). Where the window fits (s <= 1 with a fitting aspect) this is
    RandomResizedCrop's first draw; unlike it, a window that does not fit is padded, never redrawn.
    """

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        area = height * width * torch.empty(1).uniform_(self.scale[0], self.scale[1]).item()
        ratio = float(torch.exp(torch.empty(1).uniform_(*self._log_ratio)).item())
        w, h = max(int(round((area * ratio) ** 0.5)), 1), max(int(round((area / ratio) ** 0.5)), 1)
        top = int(torch.randint(min(height - h, 0), max(height - h, 0) + 1, size=(1,)).item())
        left = int(torch.randint(min(width - w, 0), max(width - w, 0) + 1, size=(1,)).item())
        return dict(top=top, left=left, height=h, width=w, image_size=(height, width))

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        top, left, h, w = params["top"], params["left"], params["height"], params["width"]
        height, width = params["image_size"]
        pad = [max(-left, 0), max(-top, 0), max(left + w - width, 0), max(top + h - height, 0)]  # l, t, r, b
        if any(pad):
            fill = IGNORE if isinstance(inpt, tv_tensors.Mask) else list(bb.MEAN)
            inpt = v2.functional.pad(inpt, pad, fill=fill)
        return v2.functional.resized_crop(inpt, top + pad[1], left + pad[0], h, w, size=self.size,
                                          interpolation=self.interpolation, antialias=self.antialias)


def augment(size: int, scale_min: float, scale_max: float = 1.0, jitter: float = 0.0) -> v2.Compose:
    """Joint image/label augmentation: a random resized crop of area share (scale_min, scale_max) back to `size`
    (labels nearest) and a horizontal flip. scale_max <= 1: torchvision's RandomResizedCrop (zooms in); > 1:
    `ZoomCrop` (zooms out too; outside the image the label is 255). jitter > 0: then torchvision's ColorJitter on
    the image alone (brightness, contrast, saturation by factors in [1 - jitter, 1 + jitter], hue by up to jitter / 2;
    v2 leaves masks untouched), so that the network cannot lean on colours the labels do not follow."""
    crop = v2.RandomResizedCrop if scale_max <= 1 else ZoomCrop
    steps = [crop(size, scale=(scale_min, scale_max), antialias=True), v2.RandomHorizontalFlip()]
    if jitter > 0:
        steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=min(0.5, jitter / 2)))
    return v2.Compose(steps)


def shapes_of(images: Sequence[np.ndarray]) -> list[tuple[int, ...]]:
    """Each image's array shape: a lazy sequence's `shapes()` (io.LazyImages: from the file headers, no pixels
    read), else each array's shape."""
    shapes = getattr(images, "shapes", None)
    return list(shapes()) if callable(shapes) else [tuple(np.shape(im)) for im in images]


class Take(Sequence):
    """seq[idx[0]], seq[idx[1]], ...: a subset of a sequence (in memory or read on access) that reads nothing
    until an item is asked for."""

    def __init__(self, seq: Sequence[np.ndarray], idx: Sequence[int]) -> None:
        self.seq, self.idx = seq, list(idx)

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, j):
        if isinstance(j, slice):
            return Take(self.seq, self.idx[j])
        return self.seq[self.idx[j]]

    def shapes(self) -> list[tuple[int, ...]]:
        shapes = shapes_of(self.seq)
        return [shapes[i] for i in self.idx]


def make_batch(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
               aug: v2.Compose | None) -> tuple[torch.Tensor, torch.Tensor]:
    """B (H, W, 3) uint8 images and B (H, W) uint8 labels -> normalised (B, 3, H, W) and (B, H, W) int64 (without
    `aug` every image must have the same size; `aug` crops them to one size)."""
    xs, ys = [], []
    for img, lab in zip(images, labels):
        x = tv_tensors.Image(torch.from_numpy(img).permute(2, 0, 1).float() / 255.0)
        y = tv_tensors.Mask(torch.from_numpy(lab.astype(np.int64)))
        if aug is not None:
            x, y = aug(x, y)
        xs.append(x.as_subclass(torch.Tensor))
        ys.append(y.as_subclass(torch.Tensor))
    return bb.normalize(torch.stack(xs)), torch.stack(ys)


class PairDataset(Dataset):
    """Augmented (image, label) pairs keyed by (epoch, index): a random resized crop of image i to size x size (the
    images may differ in size) whose draw in epoch e depends only on (seed, e, i), whichever process or worker
    draws it. images / labels: in memory or read on access (io.LazyImages, io.LazyLabels, `Take`): each item
    reads one image and its label, in the worker that draws it."""

    def __init__(self, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], scale_min: float, seed: int,
                 size: int, scale_max: float = 1.0, jitter: float = 0.0) -> None:
        self.images, self.labels, self.seed = images, labels, seed
        self.aug = augment(size, scale_min, scale_max, jitter)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.SeedSequence([self.seed, epoch, i]).generate_state(1)[0]))
            x, y = make_batch([self.images[i]], [self.labels[i]], self.aug)
        return x[0], y[0]


def batch_plan(n: int, batch_size: int, epochs: int, seed: int, rank: int, world_size: int) -> tuple[list[list], int]:
    """This process's batches of (epoch, index) keys for the whole run, and the steps per epoch.

    The global batch min(batch_size, n) is split evenly over the processes; DistributedSampler (shuffled with
    `seed`, epoch by epoch, incomplete batches dropped) gives each its share, so step s of every process
    together covers exactly the images step s of a single process covers.
    """
    global_bs = min(batch_size, n)
    if global_bs % world_size:
        raise ValueError(f"train.batch_size {global_bs} does not split evenly over {world_size} processes")
    per_rank = global_bs // world_size
    sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
    steps = len(sampler) // per_rank
    plan = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        idx = list(sampler)
        plan += [[(epoch, i) for i in idx[s * per_rank:(s + 1) * per_rank]] for s in range(steps)]
    return plan, steps


# ---------------------------------------------------------------- loss and optimiser

def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, normalizer: torch.Tensor | float | None = None) -> torch.Tensor:
    """Cross-entropy over pixels, label 255 ignored: (B, C, H, W), (B, H, W) -> scalar (0 if all ignored).

    The sum over valid pixels divided by `normalizer` (default: their count, i.e. the mean).
    """
    valid = (target != IGNORE).sum()
    if valid == 0:
        return logits.sum() * 0.0
    if normalizer is None:
        return F.cross_entropy(logits, target, ignore_index=IGNORE)
    return F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="sum") / normalizer


def optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW: decoder at cfg.lr, backbone at cfg.backbone_lr (frozen when 0)."""
    groups = [{"params": model.head.parameters(), "lr": cfg.lr}]
    if cfg.backbone_lr > 0:
        groups.append({"params": model.backbone.parameters(), "lr": cfg.backbone_lr})
    freeze_backbone(model, cfg)
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def freeze_backbone(model: nn.Module, cfg: TrainConfig) -> None:
    """backbone_lr 0: the backbone's params stop requiring grad (no gradient, no optimiser state)."""
    if cfg.backbone_lr <= 0:
        for p in model.backbone.parameters():
            p.requires_grad_(False)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Multiplier of every param group's peak lr at optimiser step `step` (0-based) of `total`: a linear warm-up
    (step + 1) / (warmup + 1) over the first `warmup` steps, then the cosine 0.5 (1 + cos(pi (step - warmup) /
    (total - warmup))) from the peak at step `warmup` towards 0 at step `total` (warmup 0: the plain cosine)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return 0.5 * (1.0 + float(np.cos(np.pi * (step - warmup) / max(total - warmup, 1))))


def lr_schedule(opt: torch.optim.Optimizer, total: int, warmup: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-step schedule of `fit` (`lr_factor`), stepped once per optimiser step: without warm-up torch's
    CosineAnnealingLR(T_max=total) (the same floats as before warm-up existed), else a LambdaLR of `lr_factor`.
    Its state_dict holds the step, so a resumed run continues the same lr sequence."""
    if warmup == 0:
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, total, warmup))


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """Autocast dtype: bf16 on CUDA where supported, else fp16 (with loss scaling); None on the CPU / disabled."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# ---------------------------------------------------------------- training

def default_crop(images: Sequence[np.ndarray]) -> int:
    """The training crop side when none is given: the shortest image side (every image holds such a square)."""
    return min(min(s[:2]) for s in shapes_of(images))


def fit(model: nn.Module, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], cfg: TrainConfig, seed: int,
        device: torch.device, epochs: int, start: dict | None = None, on_step: Callable[[dict], None] | None = None,
        on_checkpoint: Callable[[dict], None] | None = None, max_steps: int | None = None,
        crop_size: int | None = None) -> tuple[list[dict], bool]:
    """Train on images ((H_i, W_i, 3) uint8, sizes may differ) with labels ((H_i, W_i) uint8, 255 ignore) for
    `epochs` epochs, on random resized crops of crop_size x crop_size (default: `default_crop`).

    start: a state from `on_checkpoint` ({'step', 'model', 'opt', 'sched', 'scaler', 'history'}) to resume
    from; its 'opt' may be None (fresh optimiser on its weights). on_checkpoint gets that state every
    cfg.checkpoint_every steps and at the end (on every process; the caller writes on rank 0 only).
    max_steps: stop after this many steps of this call (as if killed just after a checkpoint).
    Returns the per-step history ({'step', 'epoch', 'loss', 'lr', 'images_per_second'}) and whether it finished.
    Learning rate per step: linear warm-up over cfg.warmup_epochs, then cosine decay (`lr_schedule`); under
    torch.distributed the model runs in DDP.
    """
    rank, world_size = world()
    model.to(device)
    conv = device.type == "cuda" and not (cfg.model == "stage" or "vit" in cfg.model_name)
    if conv:
        model.to(memory_format=torch.channels_last)
    if start is not None:
        model.load_state_dict(start["model"])
    net = model
    if world_size > 1:
        freeze_backbone(model, cfg)  # DDP reduces the gradients of the params that require grad when it wraps
        sync_batchnorm(model, device)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = optimizer(model, cfg)  # after sync_batchnorm, which replaces the BatchNorm modules and their params
    plan, steps_per_epoch = batch_plan(len(images), cfg.batch_size, epochs, seed, rank, world_size)
    sched = lr_schedule(opt, len(plan), cfg.warmup_epochs * steps_per_epoch)
    dtype = amp_dtype(device, cfg.amp)
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
    done_here, tick = 0, time.time()
    for x, y in loader:
        if max_steps is not None and done_here >= max_steps:
            return history, False
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if conv:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = net(x)
        logits = logits.float()
        # One all-reduce gives the global valid-pixel count and loss sum: dividing by the global count
        # (times the world size, which DDP's gradient averaging divides by again) is the single-process mean.
        with torch.no_grad():
            local = torch.stack([F.cross_entropy(logits, y, ignore_index=IGNORE, reduction="sum")
                                 if (y != IGNORE).any() else logits.new_zeros(()),
                                 (y != IGNORE).sum().float()])
            if world_size > 1:
                dist.all_reduce(local)
        loss = segmentation_loss(logits, y, normalizer=local[1].clamp(min=1) / world_size)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        lr = float(opt.param_groups[0]["lr"])
        sched.step()
        step += 1
        done_here += 1
        now = time.time()
        rec = {"step": step, "epoch": (step - 1) // steps_per_epoch, "loss": float(local[0] / local[1].clamp(min=1)),
               "lr": lr, "images_per_second": len(x) * world_size / max(now - tick, 1e-9)}
        tick = now
        history.append(rec)
        if on_step:
            on_step(rec)
        if on_checkpoint and (step % cfg.checkpoint_every == 0 or step == len(plan)):
            on_checkpoint(state())
    return history, True


def epoch_summary(history: list[dict]) -> list[dict]:
    """Per-step records -> per-epoch means {'epoch', 'loss', 'lr' (last), 'images_per_second'}."""
    out: dict[int, list[dict]] = {}
    for r in history:
        out.setdefault(r["epoch"], []).append(r)
    return [{"epoch": e, "loss": float(np.mean([r["loss"] for r in rs])), "lr": rs[-1]["lr"],
             "images_per_second": float(np.mean([r["images_per_second"] for r in rs]))} for e, rs in sorted(out.items())]


def train(model: nn.Module, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], cfg: TrainConfig, seed: int,
          device: torch.device, log: Callable[[dict], None] | None = None, crop_size: int | None = None) -> list[dict]:
    """One uninterrupted training run of cfg.epochs epochs -> per-epoch history (see `fit`)."""
    history, _ = fit(model, images, labels, cfg, seed, device, cfg.epochs, on_step=log, crop_size=crop_size)
    return epoch_summary(history)


# ---------------------------------------------------------------- prediction and self-training

@torch.no_grad()
def iter_predictions(model: nn.Module, images: Sequence[np.ndarray], batch_size: int, device: torch.device,
                     amp: bool = True, sizes: Sequence[tuple[int, int]] | None = None, with_probs: bool = False
                     ) -> Iterator[tuple]:
    """Images ((H_i, W_i, 3) uint8, sizes may differ) -> per image (index, argmax classes uint8, their softmax
    probability float32), tensors on `device`, batch by batch: images of one size are batched together
    (`factory.size_batches`), so indices may come out of order.

    sizes: per image the (H, W) its logits are upsampled to (bilinear, align_corners=False) before the softmax and
    argmax (the image's original size); None, or an image's own size, keeps the logits at the input size. Only one
    batch's logits (and one image's upsampled logits) are held at a time.
    with_probs: each tuple gets a fourth item, every class's softmax probability (C, H_i, W_i) float32 at the INPUT
    size (what the dense CRF refines on the input image), from the same forward pass.
    """
    model.to(device).eval()
    dtype = amp_dtype(device, amp)
    for idx in bb.size_batches(shapes_of(images), batch_size):
        x = bb.normalize(bb.to_tensor(np.stack([images[i] for i in idx])).to(device))
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = model(x)
        logits = logits.float()
        targets = [tuple(logits.shape[-2:]) if sizes is None else tuple(int(v) for v in sizes[i]) for i in idx]
        probs = logits.softmax(1) if with_probs else None
        extra = (lambda j: (probs[j],)) if with_probs else (lambda j: ())
        if all(t == tuple(logits.shape[-2:]) for t in targets):
            conf, cls = (probs if with_probs else logits.softmax(1)).max(1)
            for j, i in enumerate(idx):
                yield i, cls[j].to(torch.uint8), conf[j], *extra(j)
            continue
        for j, i in enumerate(idx):
            lg = logits[j:j + 1]
            if targets[j] != tuple(lg.shape[-2:]):
                lg = F.interpolate(lg, size=targets[j], mode="bilinear", align_corners=False)
            conf, cls = lg.softmax(1).max(1)
            yield i, cls[0].to(torch.uint8), conf[0], *extra(j)


def _all_gather_images(mine: list[torch.Tensor], shapes: list[tuple[int, int]], share: int, dtype: torch.dtype,
                       device: torch.device) -> list[torch.Tensor]:
    """Per-image (H_i, W_i) tensors of this process (process r holds images r*share .. (r+1)*share - 1 of the
    images of `shapes`) -> every image's tensor, on every process (one all_gather of the padded flat tensors)."""
    _, world_size = world()
    n, sizes = len(shapes), [h * w for h, w in shapes]
    lengths = [sum(sizes[r * share:(r + 1) * share]) for r in range(world_size)]
    flat = torch.cat([t.reshape(-1) for t in mine]) if mine else torch.zeros(0, dtype=dtype, device=device)
    flat = torch.cat([flat, flat.new_zeros(max(lengths) - len(flat))]).contiguous()
    parts = [torch.empty_like(flat) for _ in range(world_size)]
    dist.all_gather(parts, flat)
    out = []
    for r in range(world_size):
        pos = 0
        for i in range(r * share, min((r + 1) * share, n)):
            out.append(parts[r][pos:pos + sizes[i]].view(shapes[i]))
            pos += sizes[i]
    return out


@torch.no_grad()
def predict_with_confidence(model: nn.Module, images: Sequence[np.ndarray], batch_size: int,
                            device: torch.device, amp: bool = True) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Images ((H_i, W_i, 3) uint8) -> per image, at its own size: argmax classes (H_i, W_i) uint8 and their
    softmax probability (H_i, W_i) float32 (two lists).

    Under torch.distributed each process predicts a share and all receive every prediction.
    """
    rank, world_size = world()
    n = len(images)
    share = -(-n // world_size)
    mine = list(range(rank * share, min((rank + 1) * share, n)))
    preds: list = [None] * len(mine)
    confs: list = [None] * len(mine)
    for j, cls, conf in iter_predictions(model, [images[i] for i in mine], batch_size, device, amp):
        preds[j], confs[j] = cls, conf
    if world_size > 1:
        shapes = [tuple(im.shape[:2]) for im in images]
        preds = _all_gather_images(preds, shapes, share, torch.uint8, device)
        confs = _all_gather_images(confs, shapes, share, torch.float32, device)
    return [t.cpu().numpy() for t in preds], [t.cpu().numpy() for t in confs]


# (key, image (H, W, 3) uint8, probabilities (C, H, W) float32) items -> (key, refined (C, H, W)) in the same order:
# `crf.refine_all` with its configuration bound
Refiner = Callable[[Iterable[tuple[Any, np.ndarray, np.ndarray]]], Iterator[tuple[Any, np.ndarray]]]


def predict_refined(model: nn.Module, images: Sequence[np.ndarray], batch_size: int, device: torch.device,
                    amp: bool, refine: Refiner) -> list[np.ndarray]:
    """Images ((H_i, W_i, 3) uint8) -> per image the argmax (H_i, W_i) uint8 of the network's softmax at the image's
    own size refined by `refine` (the dense CRF) on that image.

    Under torch.distributed each process refines a share and all receive every map."""
    rank, world_size = world()
    n = len(images)
    share = -(-n // world_size)
    mine = list(range(rank * share, min((rank + 1) * share, n)))
    sub = [images[i] for i in mine]
    items = ((j, sub[j], prob.cpu().numpy())
             for j, _, _, prob in iter_predictions(model, sub, batch_size, device, amp, with_probs=True))
    maps: list = [None] * len(mine)
    for j, q in refine(items):
        maps[j] = torch.from_numpy(q.argmax(0).astype(np.uint8)).to(device)
    if world_size > 1:
        maps = _all_gather_images(maps, [tuple(im.shape[:2]) for im in images], share, torch.uint8, device)
    return [t.cpu().numpy() for t in maps]


def predict(model: nn.Module, images: Sequence[np.ndarray], batch_size: int, device: torch.device) -> list[np.ndarray]:
    """Images ((H_i, W_i, 3) uint8) -> per image (H_i, W_i) uint8 argmax classes."""
    return predict_with_confidence(model, images, batch_size, device)[0]


def relabel(pred: np.ndarray, conf: np.ndarray, threshold: float) -> np.ndarray:
    """Classes (..., H, W) uint8 and confidences (..., H, W) -> the classes where conf >= threshold, IGNORE elsewhere."""
    return np.where(conf >= threshold, pred, IGNORE).astype(np.uint8)


def core_images(labels: Sequence[np.ndarray]) -> list[int]:
    """Indices of the label maps ((H_i, W_i) uint8, 0 background, 255 ignore) holding at least one object pixel
    (a class 1..254): the images with a kept mask, COMUS's core. Every index when none holds one."""
    core = [i for i, lab in enumerate(labels) if ((lab > 0) & (lab != IGNORE)).any()]
    return core or list(range(len(labels)))


def round_plan(cfg: TrainConfig, labels: Sequence[np.ndarray]) -> list[dict]:
    """Every round of `self_train` -> {'epochs', 'images' (indices trained on), 'fresh' (starts from the initial
    weights with a fresh optimiser), 'crf' (a CRF round), 'threshold' (relabelling confidence of the NEXT round's
    maps; 0 = every pixel, the argmax)}; labels: round 1's maps (for train.first_round: core)."""
    n = len(labels)
    comus = cfg.self_training == "comus"
    plan = []
    for r in range(cfg.rounds + cfg.crf_rounds):
        crf_round = r >= cfg.rounds
        plan.append({"epochs": cfg.round_epochs if 0 < r < cfg.rounds else cfg.epochs,
                     "images": core_images(labels) if r == 0 and cfg.first_round == "core" else list(range(n)),
                     "fresh": crf_round or (comus and r > 0), "crf": crf_round,
                     "threshold": 0.0 if comus else cfg.relabel_threshold})
    return plan


def round_maps(maps_dir: str | Path, r: int, n: int) -> io.LazyLabels:
    """Round r's (1-based) relabelled maps of n images, as `write_round_maps` wrote them under maps_dir/round_<r>/:
    a sequence of (H_i, W_i) uint8 maps read on access."""
    return io.LazyLabels(Path(maps_dir) / f"round_{r}", [f"{i:07d}" for i in range(n)])


def maps_complete(maps_dir: str | Path, r: int, n: int) -> bool:
    """Whether round r's (1-based) maps of all n images are in maps_dir (what a resumed run needs)."""
    return all((m.folder / f"{name}.png").is_file() for m in [round_maps(maps_dir, r, n)] for name in m.names)


@torch.no_grad()
def write_round_maps(model: nn.Module, images: Sequence[np.ndarray], batch_size: int, device: torch.device,
                     amp: bool, threshold: float, refine: Refiner | None, folder: str | Path) -> float:
    """The maps the next self-training round trains on, written as they are predicted: this process's contiguous
    share of `images` ((H_i, W_i, 3) uint8, in memory or read on access), batch by batch, each image's (H_i, W_i)
    uint8 map -> folder/<index:07d>.png (`round_maps` reads them back): `relabel` of the network's argmax at
    `threshold` (0: every pixel), or with `refine` the argmax of the dense CRF on the network's softmax (every pixel
    labelled). Under torch.distributed every process writes its share (the folder must be one they all see) and
    waits for the others. -> the share of labelled (not 255) pixels over every image of every process."""
    rank, world_size = world()
    n = len(images)
    share = -(-n // world_size)
    mine = list(range(rank * share, min((rank + 1) * share, n)))
    sub = Take(images, mine)
    folder = Path(folder)
    counts = torch.zeros(2, dtype=torch.int64)  # labelled pixels, pixels

    def write(j: int, m: np.ndarray) -> None:
        io.write_label(folder / f"{mine[j]:07d}.png", m)
        counts[0] += int((m != IGNORE).sum())
        counts[1] += m.size

    if refine is not None:
        items = ((j, sub[j], prob.cpu().numpy())
                 for j, _, _, prob in iter_predictions(model, sub, batch_size, device, amp, with_probs=True))
        for j, q in refine(items):
            write(j, q.argmax(0).astype(np.uint8))
    else:
        for j, cls, conf in iter_predictions(model, sub, batch_size, device, amp):
            write(j, relabel(cls.cpu().numpy(), conf.cpu().numpy(), threshold))
    if world_size > 1:
        counts = counts.to(device)
        dist.all_reduce(counts)  # also waits until every process has written its share
        dist.barrier()
    kept, total = (int(v) for v in counts.cpu())
    return kept / max(total, 1)


def self_train(model: nn.Module, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], cfg: TrainConfig,
               seed: int, device: torch.device, resume: dict | None = None,
               on_step: Callable[[dict], None] | None = None, save: Callable[[dict], None] | None = None,
               max_steps: int | None = None, crop_size: int | None = None,
               refine: Refiner | None = None, maps_dir: str | Path | None = None) -> list[dict] | None:
    """cfg.rounds rounds of training, then cfg.crf_rounds CRF rounds (`round_plan` says which images, epochs and
    start each has). Round 1 trains on `labels` for cfg.epochs (train.first_round core: only on `core_images`,
    COMUS's first round on its core masks). Each later round trains for cfg.round_epochs on the previous round's
    predictions of EVERY image:
    - train.self_training continue: its confident pixels (`relabel` at cfg.relabel_threshold, at each image's own
      size), continuing from its weights and optimiser state reset;
    - comus: its argmax, every pixel (no threshold), from the model's INITIAL weights with a fresh optimiser, as
      COMUS's main.py trains a new network each iteration (configs/self_training/pascal.yaml: 2 iterations, the
      second over train_aug for 4 epochs). Departure: COMUS's later rounds see more images than its first (train
      1,464 -> train_aug 10,582); here every round sees the whole training split, the first only its core when
      asked.
    CRF rounds train on the previous round's predictions refined by `refine` (the dense CRF, `predict_refined`:
    every pixel labelled), from the INITIAL weights for cfg.epochs with a fresh optimiser, as MaskDistill's
    train_plus_crf.sh retrains a new network (its deeplab_plus_crf.yml: a new output folder, so no checkpoint; the
    same MoCo initialisation and the full 45 epochs). crop_size: the training crop side (see `fit`).

    images, labels: (H_i, W_i, 3) and (H_i, W_i) uint8, in memory or read on access (io.LazyImages / LazyLabels):
    nothing here holds the dataset. Each round's relabelled maps are written to maps_dir/round_<r>/ as they are
    predicted (`write_round_maps`) and read back by the next round (a resumed run finds them there: keep maps_dir
    with the checkpoint). maps_dir None: a temporary folder, removed once the returned maps are no longer referenced
    (one process only; under torch.distributed give a folder every process sees).

    save gets the resumable state ({'round', 'fit' (a `fit` state), 'rounds'}) at every checkpoint and round
    end; resume is such a state. on_step gets fit's records with 'round' (1-based) added.
    Returns per round {'round', 'relabel' (the maps the next round trains on, (H_i, W_i) uint8 per image, read from
    maps_dir on access), 'kept' (their share of labelled pixels), 'history', 'crf' (whether it is a CRF round)}
    and, when there are several rounds, for every round but the last 'weights' (its state dict on the CPU: the
    model holds the last round's), or None when stopped by max_steps.
    """
    plan = round_plan(cfg, labels)
    total = len(plan)
    n = len(images)
    if cfg.crf_rounds and refine is None:
        raise ValueError("train.crf_rounds > 0 needs `refine` (the dense CRF, pipeline.train.crf.refine_all)")
    tmp = None
    if maps_dir is None:
        if world()[1] > 1:
            raise ValueError("self_train under torch.distributed needs maps_dir, a folder every process sees")
        tmp = tempfile.TemporaryDirectory(prefix="self_train_maps_")  # removed with the last map sequence
        maps_dir = tmp.name
    maps_dir = Path(maps_dir)
    init = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}  # fresh rounds start here
    rounds = list(resume["rounds"]) if resume else []
    if rounds and not maps_complete(maps_dir, len(rounds), n):
        raise ValueError(f"resume: round {len(rounds)} finished, but its {n} relabelled maps are not all in "
                         f"{maps_dir / f'round_{len(rounds)}'} (give the maps_dir of the interrupted run)")
    if resume and resume["round"] >= total:  # every round finished before the interruption
        model.load_state_dict(resume["fit"]["model"])
    for r in range(len(rounds), total):
        start = resume["fit"] if resume and resume["round"] == r else None
        if plan[r]["fresh"] and start is None:
            start = {"step": 0, "model": init, "opt": None, "history": []}
        train_labels = labels if r == 0 else round_maps(maps_dir, r, n)
        idx = plan[r]["images"]

        def checkpoint(state: dict, r: int = r) -> None:
            if save:
                save({"round": r, "fit": state, "rounds": rounds})

        def step_log(rec: dict, r: int = r) -> None:
            if on_step:
                on_step({**rec, "round": r + 1})

        history, finished = fit(model, Take(images, idx), Take(train_labels, idx), cfg, seed + r,
                                device, plan[r]["epochs"], start=start, on_step=step_log, on_checkpoint=checkpoint,
                                max_steps=max_steps, crop_size=crop_size)
        if not finished:
            return None
        if max_steps is not None:
            max_steps -= len(history) - (len(start["history"]) if start and start.get("opt") is not None else 0)
        next_crf = r + 1 < total and plan[r + 1]["crf"]  # the next round trains on this network's CRF-refined maps
        share = write_round_maps(model, images, cfg.batch_size, device, cfg.amp, plan[r]["threshold"],
                                 refine if next_crf else None, maps_dir / f"round_{r + 1}")
        rd = {"round": r + 1, "kept": float(share), "history": history, "crf": plan[r]["crf"]}
        if r < total - 1:  # the weights that predict this round's maps later (the model moves on)
            rd["weights"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        rounds.append(rd)
        if save:  # the next round starts from these weights (a fresh round: the initial ones) with a fresh optimiser
            fresh_next = r + 1 < total and plan[r + 1]["fresh"]
            save({"round": r + 1, "fit": {"step": 0, "model": init if fresh_next else model.state_dict(), "opt": None,
                                          "history": []}, "rounds": rounds})
        resume = None
    out = []
    for rd in rounds:
        maps = round_maps(maps_dir, rd["round"], n)
        maps.keep_alive = tmp  # the temporary folder lives as long as a sequence of its maps
        out.append({**rd, "relabel": maps})
    return out
