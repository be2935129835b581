"""DINO self-distillation (Caron et al. 2021), compact: multi-crop, EMA teacher, centering, sharpening.

Follows the reference recipe: lr warm-up then cosine (lr scaled by batch/256), weight decay cosine
0.04 -> 0.4, teacher temperature warm-up, EMA momentum cosine to 1, last layer frozen for the first
epochs, gradient clipping, a bottleneck head with unit-norm prototypes. The multi-crop views are made each step
on the training device, for the whole batch at once (pretrain.crops: batched, pipeline/backbone/crops.py) or
image by image with torchvision v2 (per_image).
"""
from __future__ import annotations

import copy
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from pipeline.backbone.crops import batched_crops
from pipeline.backbone.factory import MEAN, STD
from pipeline.config import PretrainConfig


class DINOHead(nn.Module):
    """in_dim -> MLP (3 layers, optional BatchNorm) -> bottleneck, L2-normed -> cosine to out_dim prototypes."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, bottleneck_dim: int, use_bn: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        dims = [in_dim, hidden_dim, hidden_dim]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b)] + ([nn.BatchNorm1d(b)] if use_bn else []) + [nn.GELU()]
        layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.prototypes = nn.Parameter(torch.randn(out_dim, bottleneck_dim) * 0.02)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, out_dim) logits in [-1, 1] (cosines with unit-norm prototypes)."""
        z = F.normalize(self.mlp(x), dim=-1)
        return F.linear(z, F.normalize(self.prototypes, dim=-1))


class DINOLoss(nn.Module):
    """Cross-entropy between sharpened, centred teacher outputs and student outputs of other views."""

    def __init__(self, out_dim: int, student_temp: float, center_momentum: float) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor], teacher_temp: float) -> torch.Tensor:
        """student: per-crop (B, K) logits (global crops first); teacher: per-global-crop (B, K) -> scalar loss."""
        t_probs = [F.softmax((t - self.center) / teacher_temp, dim=-1).detach() for t in teacher]
        s_logp = [F.log_softmax(s / self.student_temp, dim=-1) for s in student]
        total, n = 0.0, 0
        for ti, tp in enumerate(t_probs):
            for si, sl in enumerate(s_logp):
                if si == ti:
                    continue  # never the same view
                total = total + torch.sum(-tp * sl, dim=-1).mean()
                n += 1
        self.update_center(torch.cat(teacher))
        return total / n

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        self.center.mul_(self.center_momentum).add_(teacher_out.mean(0, keepdim=True), alpha=1 - self.center_momentum)


def cosine_schedule(base: float, final: float, steps: int, warmup_steps: int = 0, warmup_start: float = 0.0) -> np.ndarray:
    """Per-step values: linear warm-up from warmup_start to base, then cosine to final -> (steps,)."""
    warm = np.linspace(warmup_start, base, warmup_steps) if warmup_steps > 0 else np.array([])
    rest = steps - len(warm)
    it = np.arange(rest)
    cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * it / max(rest, 1)))
    return np.concatenate([warm, cos])[:steps]


def teacher_temp_schedule(cfg: PretrainConfig, epochs: int) -> np.ndarray:
    """Per-epoch teacher temperature: linear warmup_teacher_temp -> teacher_temp, then constant."""
    w = min(cfg.warmup_teacher_temp_epochs, epochs)
    return np.concatenate([np.linspace(cfg.warmup_teacher_temp, cfg.teacher_temp, w),
                           np.full(epochs - w, cfg.teacher_temp)])


def multicrop_transforms(cfg: PretrainConfig) -> tuple[v2.Compose, v2.Compose]:
    """(global, local) crop pipelines on (3, H, W) float [0, 1] tensors -> normalised crops."""
    colour = [v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.2)], p=0.8), v2.RandomGrayscale(p=0.2)]
    tail = [v2.Normalize(MEAN, STD)]
    glob = v2.Compose([v2.RandomResizedCrop(cfg.global_crop_size, scale=(cfg.global_scale_min, 1.0), antialias=True),
                       v2.RandomHorizontalFlip(), *colour,
                       v2.RandomApply([v2.GaussianBlur(5, (0.1, 1.5))], p=0.3), *tail])
    local = v2.Compose([v2.RandomResizedCrop(cfg.local_crop_size, scale=(0.05, cfg.local_scale_max), antialias=True),
                        v2.RandomHorizontalFlip(), *colour, *tail])
    return glob, local


def make_crops(batch: torch.Tensor, glob: v2.Compose, local: v2.Compose, n_local: int) -> list[torch.Tensor]:
    """(B, 3, H, W) float [0, 1] -> [2 global (B, 3, g, g)] + [n_local local (B, 3, l, l)] crops."""
    crops = [torch.stack([glob(im) for im in batch]) for _ in range(2)]
    crops += [torch.stack([local(im) for im in batch]) for _ in range(n_local)]
    return crops


def make_batched_crops(batch: torch.Tensor, cfg: PretrainConfig, g: torch.Generator) -> list[torch.Tensor]:
    """make_crops' views made for the whole batch at once on its device (pretrain.crops: batched; see
    pipeline/backbone/crops.py for the departures from torchvision), random draws from `g`:
    (B, 3, H, W) float [0, 1] -> [2 global (B, 3, g, g)] + [local_crops local (B, 3, l, l)] crops."""
    glob = batched_crops(batch, cfg.global_crop_size, (cfg.global_scale_min, 1.0), g, copies=2, blur_p=0.3)
    crops = list(glob.chunk(2))
    if cfg.local_crops:
        local = batched_crops(batch, cfg.local_crop_size, (0.05, cfg.local_scale_max), g, copies=cfg.local_crops)
        crops += list(local.chunk(cfg.local_crops))
    return crops


class DINOModel(nn.Module):
    """Backbone + head; runs crops of equal size together (multi-crop wrapper)."""

    def __init__(self, backbone: nn.Module, head: DINOHead) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, crops: list[torch.Tensor]) -> list[torch.Tensor]:
        """list of (B, 3, s, s) crops -> list of (B, out_dim) logits, same order."""
        out: list[torch.Tensor] = []
        i = 0
        while i < len(crops):
            j = i
            while j < len(crops) and crops[j].shape[-1] == crops[i].shape[-1]:
                j += 1
            x = torch.cat(crops[i:j])
            feats = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
            out += list(self.head(feats).chunk(j - i))
            i = j
        return out


def build(backbone: nn.Module, cfg: PretrainConfig) -> tuple[DINOModel, DINOModel, DINOLoss]:
    """A student, its EMA teacher (no grad) and the loss for `backbone`."""
    dim = backbone.num_features
    student = DINOModel(backbone, DINOHead(dim, cfg.out_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.head_bn))
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return student, teacher, DINOLoss(cfg.out_dim, cfg.student_temp, cfg.center_momentum)


def train_step(student: DINOModel, teacher: DINOModel, loss_fn: DINOLoss, opt: torch.optim.Optimizer,
               crops: list[torch.Tensor], teacher_temp: float, momentum: float, clip_grad: float,
               freeze_last: bool) -> float:
    """One DINO step on multi-crop views: student update, EMA teacher update -> loss value."""
    teacher.train()  # BatchNorm in the head normalises with the batch's statistics, as the student's does
    with torch.no_grad():
        t_out = teacher(crops[:2])
    s_out = student(crops)
    loss = loss_fn(s_out, t_out, teacher_temp)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip_grad > 0:
        torch.nn.utils.clip_grad_norm_(student.parameters(), clip_grad)
    if freeze_last:
        student.head.prototypes.grad = None
    opt.step()
    with torch.no_grad():
        for ps, pt in zip(student.parameters(), teacher.parameters()):
            pt.mul_(momentum).add_(ps.detach(), alpha=1 - momentum)
        for bs, bt in zip(student.buffers(), teacher.buffers()):
            bt.copy_(bs)
    return float(loss.detach())


def decay_groups(module: nn.Module) -> list[dict]:
    """AdamW parameter groups of a module: weights decay (group 0), biases, norms, position embeddings and
    tokens do not (group 1, weight_decay 0)."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        (decay if p.ndim > 1 and "pos_embed" not in name and "token" not in name else no_decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def train_dino(backbone: nn.Module, images: np.ndarray, cfg: PretrainConfig, seed: int,
               log: Callable[[dict], None] | None = None,
               device: torch.device = torch.device("cpu")) -> tuple[nn.Module, list[dict]]:
    """Self-distil `backbone` on images (N, H, W, 3) uint8 -> (the EMA teacher's backbone on the CPU, per-epoch
    history).

    The teacher's backbone is returned, as in the paper (it is the better of the two). On `device` live the
    images, the crops (made there) and both networks.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    student, teacher, loss_fn = build(backbone, cfg)
    student, teacher, loss_fn = student.to(device), teacher.to(device), loss_fn.to(device)
    data = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
    n = len(data)
    bs = min(cfg.batch_size, n)
    steps_per_epoch = max(n // bs, 1)
    total = cfg.epochs * steps_per_epoch
    lr = cfg.lr * bs / 256.0
    lrs = cosine_schedule(lr, cfg.min_lr, total, cfg.warmup_epochs * steps_per_epoch)
    wds = cosine_schedule(cfg.weight_decay, cfg.weight_decay_end, total)
    moms = cosine_schedule(cfg.momentum_teacher, 1.0, total)
    temps = teacher_temp_schedule(cfg, cfg.epochs)
    opt = torch.optim.AdamW(decay_groups(student), lr=lr)
    glob, local = multicrop_transforms(cfg)
    gen = torch.Generator(device=device).manual_seed(seed)  # the batched crops' draws (per_image: torch's global RNG)
    history: list[dict] = []
    start = time.time()
    step = 0
    out_of_time = False
    for epoch in range(cfg.epochs):
        student.train()
        order = rng.permutation(n)
        losses = []
        for b in range(steps_per_epoch):
            idx = torch.from_numpy(order[b * bs:(b + 1) * bs]).to(device)
            batch = data[idx].float() / 255.0
            crops = (make_batched_crops(batch, cfg, gen) if cfg.crops == "batched"
                     else make_crops(batch, glob, local, cfg.local_crops))
            opt.param_groups[0]["lr"] = opt.param_groups[1]["lr"] = float(lrs[step])
            opt.param_groups[0]["weight_decay"] = float(wds[step])
            losses.append(train_step(student, teacher, loss_fn, opt, crops, float(temps[epoch]), float(moms[step]),
                                     cfg.clip_grad, epoch < cfg.freeze_last_layer_epochs))
            step += 1
            if cfg.max_minutes and time.time() - start >= cfg.max_minutes * 60:
                out_of_time = True  # checked after every step, so a wall-time budget holds
                break
        rec = {"epoch": epoch, "loss": float(np.mean(losses)), "lr": float(lrs[step - 1]), "steps": step,
               "teacher_temp": float(temps[epoch]), "minutes": (time.time() - start) / 60}
        history.append(rec)
        if log:
            log(rec)
        if cfg.stop_after_epochs and epoch + 1 >= cfg.stop_after_epochs:
            break
        if out_of_time:
            break
    return teacher.backbone.cpu(), history
