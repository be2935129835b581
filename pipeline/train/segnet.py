"""The segmentation network and its training.

Networks: a dense encoder (the pretrain stage's ViT, any timm model, or torchvision DeepLabv3) with a light
convolutional decoder. Training: one loop for the CPU, one GPU (bf16/fp16 autocast, channels-last for
convolutional encoders, DataLoader workers with pinned memory) and several processes under torchrun
(DistributedDataParallel, DistributedSampler, batch statistics and the loss normaliser synchronised, so N
processes compute what one process computes with the same global batch). Every random choice (data order,
crops) derives from (seed, round, epoch, image), so a run resumed from a checkpoint reaches the same
weights. Self-training rounds relabel the images with the model's confident pixels and retrain.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from pipeline.backbone import factory as bb
from pipeline.config import TrainConfig
from pipeline.io import IGNORE


class SegNet(nn.Module):
    """Encoder dense map (B, D, h, w) -> 3x3 conv, BN, ReLU, 1x1 conv -> logits upsampled to the input."""

    def __init__(self, backbone: nn.Module, num_classes: int, decoder_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(
            nn.Conv2d(bb.dense_dim(backbone), decoder_dim, 3, padding=1, bias=False), nn.BatchNorm2d(decoder_dim),
            nn.ReLU(inplace=True), nn.Conv2d(decoder_dim, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) -> logits (B, num_classes, H, W)."""
        return F.interpolate(self.head(bb.dense_map(self.backbone, x)), size=x.shape[-2:], mode="bilinear",
                             align_corners=False)


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
    """The network train.model names: stage (`stage_backbone()`, the pretrain stage's ViT), timm or deeplabv3."""
    if cfg.model == "deeplabv3":
        return TorchvisionSeg(cfg.model_name, num_classes, cfg.pretrained)
    enc = stage_backbone() if cfg.model == "stage" else bb.create_dense(cfg.model_name, img_size, cfg.pretrained)
    return SegNet(enc, num_classes, cfg.decoder_dim)


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


class PairDataset(Dataset):
    """Augmented (image, label) pairs keyed by (epoch, index): the crop of image i in epoch e depends only on
    (seed, e, i), whichever process or worker draws it."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, scale_min: float, seed: int) -> None:
        self.images, self.labels, self.seed = images, labels, seed
        self.aug = augment(images.shape[1], scale_min)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.SeedSequence([self.seed, epoch, i]).generate_state(1)[0]))
            x, y = make_batch(self.images[i:i + 1], self.labels[i:i + 1], self.aug)
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
    else:
        for p in model.backbone.parameters():
            p.requires_grad_(False)
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """Autocast dtype: bf16 on CUDA where supported, else fp16 (with loss scaling); None on the CPU / disabled."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# ---------------------------------------------------------------- training

def fit(model: nn.Module, images: np.ndarray, labels: np.ndarray, cfg: TrainConfig, seed: int, device: torch.device,
        epochs: int, start: dict | None = None, on_step: Callable[[dict], None] | None = None,
        on_checkpoint: Callable[[dict], None] | None = None, max_steps: int | None = None) -> tuple[list[dict], bool]:
    """Train on images (N, H, W, 3) uint8 with labels (N, H, W) uint8 (255 ignore) for `epochs` epochs.

    start: a state from `on_checkpoint` ({'step', 'model', 'opt', 'sched', 'scaler', 'history'}) to resume
    from; its 'opt' may be None (fresh optimiser on its weights). on_checkpoint gets that state every
    cfg.checkpoint_every steps and at the end (on every process; the caller writes on rank 0 only).
    max_steps: stop after this many steps of this call (as if killed just after a checkpoint).
    Returns the per-step history ({'step', 'epoch', 'loss', 'lr', 'images_per_second'}) and whether it finished.
    Cosine learning-rate decay per step; under torch.distributed the model runs in DDP.
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
        sync_batchnorm(model, device)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = optimizer(model, cfg)
    plan, steps_per_epoch = batch_plan(len(images), cfg.batch_size, epochs, seed, rank, world_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=len(plan))
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

    loader = DataLoader(PairDataset(images, labels, cfg.crop_scale_min, seed), batch_sampler=plan[step:],
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


def train(model: nn.Module, images: np.ndarray, labels: np.ndarray, cfg: TrainConfig, seed: int, device: torch.device,
          log: Callable[[dict], None] | None = None) -> list[dict]:
    """One uninterrupted training run of cfg.epochs epochs -> per-epoch history (see `fit`)."""
    history, _ = fit(model, images, labels, cfg, seed, device, cfg.epochs, on_step=log)
    return epoch_summary(history)


# ---------------------------------------------------------------- prediction and self-training

@torch.no_grad()
def predict_with_confidence(model: nn.Module, images: np.ndarray, batch_size: int,
                            device: torch.device, amp: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, 3) uint8 -> argmax classes (N, H, W) uint8 and their softmax probability (N, H, W) float32.

    Under torch.distributed each process predicts a share and all receive every prediction.
    """
    rank, world_size = world()
    model.to(device).eval()
    dtype = amp_dtype(device, amp)
    n = len(images)
    share = -(-n // world_size)
    mine = images[rank * share:(rank + 1) * share]
    preds, confs = [], []
    for i in range(0, len(mine), batch_size):
        x = bb.normalize(bb.to_tensor(mine[i:i + batch_size]).to(device))
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = model(x)
        conf, cls = logits.float().softmax(1).max(1)
        preds.append(cls.to(torch.uint8))
        confs.append(conf)
    h, w = images.shape[1:3]
    pred = torch.cat(preds) if preds else torch.zeros((0, h, w), dtype=torch.uint8, device=device)
    conf = torch.cat(confs) if confs else torch.zeros((0, h, w), device=device)
    if world_size > 1:
        pad = share - len(pred)
        pred = torch.cat([pred, pred.new_zeros((pad, h, w))]).contiguous()
        conf = torch.cat([conf, conf.new_zeros((pad, h, w))]).contiguous()
        pg, cg = [torch.empty_like(pred) for _ in range(world_size)], [torch.empty_like(conf) for _ in range(world_size)]
        dist.all_gather(pg, pred)
        dist.all_gather(cg, conf)
        pred, conf = torch.cat(pg)[:n], torch.cat(cg)[:n]
    return pred.cpu().numpy(), conf.cpu().numpy()


def predict(model: nn.Module, images: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    """Images (N, H, W, 3) uint8 -> (N, H, W) uint8 argmax classes."""
    return predict_with_confidence(model, images, batch_size, device)[0]


def relabel(pred: np.ndarray, conf: np.ndarray, threshold: float) -> np.ndarray:
    """Classes (N, H, W) uint8 and confidences (N, H, W) -> the classes where conf >= threshold, IGNORE elsewhere."""
    return np.where(conf >= threshold, pred, IGNORE).astype(np.uint8)


def self_train(model: nn.Module, images: np.ndarray, labels: np.ndarray, cfg: TrainConfig, seed: int,
               device: torch.device, resume: dict | None = None, on_step: Callable[[dict], None] | None = None,
               save: Callable[[dict], None] | None = None, max_steps: int | None = None) -> list[dict] | None:
    """cfg.rounds rounds of training: round 1 on `labels` for cfg.epochs, each later round for cfg.round_epochs
    on the previous round's confident predictions (`relabel`), continuing from its weights.

    save gets the resumable state ({'round', 'fit' (a `fit` state), 'rounds'}) at every checkpoint and round
    end; resume is such a state. on_step gets fit's records with 'round' (1-based) added.
    Returns per round {'round', 'pred' (N, H, W) uint8, 'relabel' (N, H, W) uint8, 'kept', 'history'},
    or None when stopped by max_steps.
    """
    rounds = list(resume["rounds"]) if resume else []
    if resume and resume["round"] >= cfg.rounds:  # every round finished before the interruption
        model.load_state_dict(resume["fit"]["model"])
    for r in range(len(rounds), cfg.rounds):
        start = resume["fit"] if resume and resume["round"] == r else None
        train_labels = labels if r == 0 else rounds[r - 1]["relabel"].numpy()
        epochs = cfg.epochs if r == 0 else cfg.round_epochs

        def checkpoint(state: dict, r: int = r) -> None:
            if save:
                save({"round": r, "fit": state, "rounds": rounds})

        def step_log(rec: dict, r: int = r) -> None:
            if on_step:
                on_step({**rec, "round": r + 1})

        history, finished = fit(model, images, train_labels, cfg, seed + r, device, epochs, start=start,
                                on_step=step_log, on_checkpoint=checkpoint, max_steps=max_steps)
        if not finished:
            return None
        if max_steps is not None:
            max_steps -= len(history) - (len(start["history"]) if start and start.get("opt") is not None else 0)
        pred, conf = predict_with_confidence(model, images, cfg.batch_size, device, cfg.amp)
        kept = relabel(pred, conf, cfg.relabel_threshold)
        rounds.append({"round": r + 1, "pred": torch.from_numpy(pred), "relabel": torch.from_numpy(kept),
                       "kept": float((kept != IGNORE).mean()), "history": history})
        if save:  # the next round starts from these weights with a fresh optimiser
            save({"round": r + 1, "fit": {"step": 0, "model": model.state_dict(), "opt": None, "history": []},
                  "rounds": rounds})
        resume = None
    return [{**rd, "pred": rd["pred"].numpy(), "relabel": rd["relabel"].numpy()} for rd in rounds]
