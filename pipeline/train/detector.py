"""MaskDistill's class-agnostic detector: a torchvision Mask R-CNN with one class, "object", trained on the
proposals (every proposal mask an instance, its box the mask's extent), then run on every image.

Backbones (`distill.backbone`):
- stage_vit: the pretrain stage's ViT under a ViTDet simple feature pyramid (Li et al. 2022): the patch tokens as a
  (D, H/p, W/p) map; a 2x2 transposed conv (stride p/2), the map itself (p), a 2x2 max-pool (2p), each then a 1x1
  and a 3x3 conv with LayerNorm to OUT_CHANNELS, and a stride-2 subsample of the last (4p), as ViTDet's top level.
- resnet18_fpn, resnet50_fpn: torchvision's ResNet + FPN (`resnet_fpn_backbone`), ImageNet weights when
  `distill.pretrained` (BatchNorm frozen, 3 trainable stages, torchvision's rule) or random (BatchNorm trained,
  every stage trainable).

Where this departs from MaskDistill's detectron2 Mask R-CNN (R50-FPN, 800 px, SGD for tens of thousands of
iterations on 8 GPUs), and why: images stay at their prepared size (`min_size`/`max_size`, no upscaling to 800);
anchors of 4x each level's stride (16..128 px at 128 px images instead of 32..512); lighter heads (a 256-d box
MLP, two 64-channel 3x3 convs in the mask head, 64 sampled RoIs per image, fewer RPN proposals) and AdamW with a
linear warm-up and cosine decay over `distill.iterations`, so that a useful detector trains in minutes on a CPU
(on the default, 100 steps of 4 images: AP50 of the masks 0.58 -> 0.67, docs/stages.md).
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from timm.layers import LayerNorm2d
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from pipeline import io
from pipeline.backbone import factory as bb
from pipeline.config import DistillConfig
from pipeline.method.distill import boxes, select

OUT_CHANNELS = 128  # channels of every pyramid level (stage_vit; torchvision's FPN has 256)
ANCHOR_SCALE = 4  # anchor side = this x the level's stride, aspect ratios ASPECT_RATIOS
ASPECT_RATIOS = (0.5, 1.0, 2.0)
BOX_HEAD_DIM = 256  # width of the box head's two fc layers (torchvision: 1024)
MASK_HEAD_LAYERS = (64, 64)  # 3x3 convs of the mask head (torchvision: 4 x 256)
ROIS_PER_IMAGE = 64  # RoIs sampled per training image for the box and mask heads (torchvision: 512)
RPN_TOP_N = {"rpn_pre_nms_top_n_train": 1000, "rpn_post_nms_top_n_train": 500,
             "rpn_pre_nms_top_n_test": 500, "rpn_post_nms_top_n_test": 200}  # torchvision: 2000 / 1000
CANDIDATES = 4  # the detector returns this x distill.max_per_image detections (after NMS) for the selection
WARMUP = 0.1  # share of the iterations with a linearly rising lr


class ViTPyramid(nn.Module):
    """A timm ViT (patch p, width D) -> ViTDet's simple feature pyramid: normalised images (B, 3, H, W), H and W
    multiples of 4p -> OrderedDict '0'..'3' of (B, OUT_CHANNELS, H / s, W / s) at strides s = p/2, p, 2p, 4p."""

    def __init__(self, vit: nn.Module, out_channels: int = OUT_CHANNELS) -> None:
        super().__init__()
        self.vit, self.out_channels = vit, out_channels
        d = bb.dense_dim(vit)
        self.patch = bb.patch_size(vit)
        scales = [nn.ConvTranspose2d(d, d // 2, 2, stride=2), nn.Identity(), nn.MaxPool2d(2)]
        dims = [d // 2, d, d]
        self.levels = nn.ModuleList(
            nn.Sequential(scale, nn.Conv2d(dim, out_channels, 1, bias=False), LayerNorm2d(out_channels),
                          nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), LayerNorm2d(out_channels))
            for scale, dim in zip(scales, dims))

    @property
    def strides(self) -> tuple[int, ...]:
        p = self.patch
        return (max(p // 2, 1), p, 2 * p, 4 * p)

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        fmap = bb.dense_map(self.vit, x)
        feats = [level(fmap) for level in self.levels]
        feats.append(nn.functional.max_pool2d(feats[-1], 1, stride=2))
        return OrderedDict((str(i), f) for i, f in enumerate(feats))


def resnet_fpn(arch: str, pretrained: bool) -> nn.Module:
    """torchvision's ResNet (`resnet18` | `resnet50`) + FPN: levels '0'..'3' and 'pool' at strides 4..64."""
    from torchvision.models import ResNet18_Weights, ResNet50_Weights
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops import misc

    weights = {"resnet18": ResNet18_Weights, "resnet50": ResNet50_Weights}[arch].IMAGENET1K_V1 if pretrained else None
    try:
        return resnet_fpn_backbone(backbone_name=arch, weights=weights,
                                   norm_layer=misc.FrozenBatchNorm2d if pretrained else nn.BatchNorm2d,
                                   trainable_layers=3 if pretrained else 5)
    except Exception as e:  # offline: URLError, OSError, ...
        raise bb.BackboneError(f"distill.pretrained: could not fetch the ImageNet weights of {arch} "
                               f"({type(e).__name__}: {e}); offline, use distill.pretrained false (random init) or "
                               "distill.backbone stage_vit") from e


def build(cfg: DistillConfig, stage_vit: Callable[[], nn.Module], min_size: int, max_size: int) -> MaskRCNN:
    """The class-agnostic Mask R-CNN (2 classes: background, object) for images whose short side is `min_size` and
    long side at most `max_size` (they are not resized). stage_vit() gives the pretrain stage's ViT (only called for
    distill.backbone stage_vit)."""
    if cfg.backbone == "stage_vit":
        backbone = ViTPyramid(stage_vit())
        strides, divisible = backbone.strides, 4 * backbone.patch
    else:
        backbone = resnet_fpn(cfg.backbone.removesuffix("_fpn"), cfg.pretrained)
        strides, divisible = (4, 8, 16, 32, 64), 32
    names = [str(i) for i in range(4)]
    anchors = AnchorGenerator(tuple((ANCHOR_SCALE * s,) for s in strides), (ASPECT_RATIOS,) * len(strides))
    c = backbone.out_channels
    return MaskRCNN(
        backbone, num_classes=None, min_size=min_size, max_size=max_size, image_mean=list(bb.MEAN),
        image_std=list(bb.STD), size_divisible=divisible, rpn_anchor_generator=anchors, **RPN_TOP_N,
        box_roi_pool=MultiScaleRoIAlign(names, 7, 2), box_head=TwoMLPHead(c * 7 * 7, BOX_HEAD_DIM),
        box_predictor=FastRCNNPredictor(BOX_HEAD_DIM, 2), box_batch_size_per_image=ROIS_PER_IMAGE,
        box_score_thresh=0.0, box_detections_per_img=CANDIDATES * cfg.max_per_image,
        mask_roi_pool=MultiScaleRoIAlign(names, 14, 2), mask_head=MaskRCNNHeads(c, MASK_HEAD_LAYERS, 1),
        mask_predictor=MaskRCNNPredictor(MASK_HEAD_LAYERS[-1], MASK_HEAD_LAYERS[-1], 2))


def backbone_parameters(model: MaskRCNN) -> list[nn.Parameter]:
    """The trunk's parameters (the ViT, or the ResNet body), which train at distill.backbone_lr."""
    trunk = model.backbone.vit if isinstance(model.backbone, ViTPyramid) else model.backbone.body
    return list(trunk.parameters())


def optimizer(model: MaskRCNN, cfg: DistillConfig) -> torch.optim.Optimizer:
    """AdamW: the trunk at backbone_lr (frozen when 0), everything else at lr."""
    trunk = {id(q) for q in backbone_parameters(model)}
    if cfg.backbone_lr == 0:
        for q in backbone_parameters(model):
            q.requires_grad_(False)
    heads = [q for q in model.parameters() if id(q) not in trunk and q.requires_grad]
    groups = [{"params": heads, "lr": cfg.lr}]
    if cfg.backbone_lr > 0:
        groups.append({"params": [q for q in backbone_parameters(model) if q.requires_grad], "lr": cfg.backbone_lr})
    return torch.optim.AdamW(groups, weight_decay=1e-4)


def lr_factor(step: int, total: int) -> float:
    """The lr multiplier at `step` (0-based) of `total`: linear warm-up over WARMUP x total steps, cosine to 0."""
    warm = max(int(WARMUP * total), 1)
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))


def to_target(masks: np.ndarray, flip: bool, device: torch.device) -> dict[str, torch.Tensor]:
    """(M, H, W) bool instance masks (each non-empty) -> torchvision's target dict (boxes, labels 1, masks),
    mirrored left-right when `flip`."""
    m = masks[:, :, ::-1] if flip else masks
    return {"boxes": torch.from_numpy(boxes(m)).to(device),
            "labels": torch.ones(len(m), dtype=torch.int64, device=device),
            "masks": torch.from_numpy(np.ascontiguousarray(m, np.uint8)).to(device)}


def to_image(image: np.ndarray, flip: bool, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [0, 1] (the detector normalises), mirrored when `flip`."""
    x = bb.to_tensor(image[None, :, ::-1] if flip else image[None])[0]
    return x.to(device)


def train(model: MaskRCNN, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], cfg: DistillConfig, seed: int,
          device: torch.device, on_step: Callable[[dict], None] | None = None) -> list[dict]:
    """cfg.iterations AdamW steps on batches of cfg.batch_size images drawn at random (seeded; without repeats
    within a batch when there are enough), each mirrored left-right with probability 1/2. images: (H_i, W_i, 3)
    uint8; masks: (M_i, H_i, W_i) bool, M_i >= 1. -> per step {step, loss, loss_<part>..., lr, seconds}."""
    if not len(images):
        raise ValueError("the detector has nothing to learn from: no training image has a proposal")
    rng = np.random.default_rng(seed)
    model.to(device).train()
    opt = optimizer(model, cfg)
    base = [g["lr"] for g in opt.param_groups]
    history, start = [], time.perf_counter()
    for step in range(cfg.iterations):
        for g, lr in zip(opt.param_groups, base):
            g["lr"] = lr * lr_factor(step, cfg.iterations)
        idx = rng.choice(len(images), size=cfg.batch_size, replace=cfg.batch_size > len(images))
        flips = rng.random(len(idx)) < 0.5
        xs = [to_image(images[i], f, device) for i, f in zip(idx, flips)]
        ts = [to_target(masks[i], f, device) for i, f in zip(idx, flips)]
        parts = model(xs, ts)
        loss = sum(parts.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec = {"step": step, "loss": float(loss.detach()), **{k: float(v.detach()) for k, v in parts.items()},
               "lr": opt.param_groups[0]["lr"], "seconds": round(time.perf_counter() - start, 2)}
        history.append(rec)
        if on_step is not None:
            on_step(rec)
    return history


@torch.no_grad()
def predict(model: MaskRCNN, images: Sequence[np.ndarray], batch_size: int,
            device: torch.device) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Every image, batch by batch -> (index, scores (N,) float32 best first, mask probabilities (N, H, W) float32
    at the image's size); at most box_detections_per_img (distill.max_per_image) detections per image."""
    model.to(device).eval()
    for start in range(0, len(images), max(batch_size, 1)):
        batch = images[start:start + batch_size]
        outs = model([to_image(im, False, device) for im in batch])
        for k, o in enumerate(outs):
            yield start + k, o["scores"].float().cpu().numpy(), o["masks"][:, 0].float().cpu().numpy()


def fit_proposals(cfg: DistillConfig, stage_vit: Callable[[], nn.Module], images: Sequence[np.ndarray],
                  targets: Sequence[np.ndarray], seed: int, device: torch.device,
                  on_step: Callable[[dict], None] | None = None) -> tuple[MaskRCNN, list[dict], list[int]]:
    """The detector (`build`, seeded) trained (`train`) on the images holding a proposal. images: (H_i, W_i, 3)
    uint8; targets: (M_i, H_i, W_i) bool per image, M_i >= 0 -> (model, history, indices trained on). No image
    holding a proposal: io.InputError, before stage_vit() is called."""
    fit = [i for i, t in enumerate(targets) if len(t)]  # detectron2 leaves images without annotations out
    if not fit:
        raise io.InputError("distill.method maskrcnn: no training image has a proposal to learn from (see the "
                            "proposals stage's overlays); use distill.method none, or get proposals first")
    sides = [s for im in images for s in im.shape[:2]]
    torch.manual_seed(seed)
    model = build(cfg, stage_vit, min(sides), max(sides))
    return model, train(model, [images[i] for i in fit], [targets[i] for i in fit], cfg, seed, device, on_step), fit


def kept_masks(model: MaskRCNN, images: Sequence[np.ndarray], cfg: DistillConfig,
               device: torch.device) -> Iterator[tuple[int, np.ndarray, list[dict]]]:
    """Every image's detections (`predict`) -> (index, mask map (H_i, W_i) uint8 of the kept ones (`select`: >=
    distill.score and always the top one, best first; 0 none, k = the k-th), their records {'id', 'source',
    'score', 'detector_score' (both the detector's confidence), 'pixels'})."""
    for i, scores, probs in predict(model, images, cfg.batch_size, device):
        mask_map, taken = select(scores, probs, cfg.score, cfg.max_per_image)
        yield i, mask_map, [{"id": k + 1, "source": "maskrcnn", "score": round(float(scores[j]), 4),
                             "detector_score": round(float(scores[j]), 4), "pixels": int((mask_map == k + 1).sum())}
                            for k, j in enumerate(taken)]
