"""Self-supervised pretext objectives that train the pipeline's ViT backbone (see `pretrain.method`).

`build(method, backbone, cfg, ...)` is the one factory in front of the objectives; `train` builds one and
runs the shared training loop. DINO (`pipeline.dino`) has its own loop (teacher, multi-crop). The video
objectives (temporal_order, tracking) also need `videos`: one int64 array per video of its frames' dataset
indices in time order (`pipeline.data.video.frame_indices`), and the `motion` config for their optical flow.
"""
from __future__ import annotations

import typing
from typing import Callable

import numpy as np
import torch
from torch import nn

from pipeline.backbone.pretext.colorization import ColorizationNet
from pipeline.backbone.pretext.common import Objective, train_objective
from pipeline.backbone.pretext.context import ContextNet
from pipeline.backbone.pretext.deepcluster import DeepClusterNet
from pipeline.backbone.pretext.inpainting import ContextEncoder
from pipeline.backbone.pretext.jigsaw import JigsawNet
from pipeline.backbone.pretext.multitask import MultiTask
from pipeline.backbone.pretext.temporal_order import TemporalOrderNet
from pipeline.backbone.pretext.tracking import TrackingNet
from pipeline.config import MotionConfig, PretrainConfig, PretrainMethod

METHODS = tuple(m for m in typing.get_args(PretrainMethod) if m != "dino")  # DINO: its own loop (dino.py)
VIDEO_METHODS = ("temporal_order", "tracking")


def build(method: str, backbone: nn.Module, cfg: PretrainConfig, image_size: int, num_images: int,
          seed: int, videos: list[np.ndarray] | None = None, motion: MotionConfig | None = None) -> Objective:
    """The objective `method` around `backbone`, configured by its section of `cfg`; a video objective
    without `videos` raises ConfigError naming the data.name that provides them, and needs `motion` (params.motion)."""
    if method in VIDEO_METHODS and motion is None:
        raise TypeError(f"pretext.build: the video objective {method} needs motion, the params' motion section")
    if method == "deepcluster":
        return DeepClusterNet(backbone, cfg.deepcluster, image_size, num_images)
    if method == "context":
        return ContextNet(backbone, cfg.context, image_size)
    if method == "jigsaw":
        return JigsawNet(backbone, cfg.jigsaw, image_size, seed)
    if method == "colorization":
        return ColorizationNet(backbone, cfg.colorization)
    if method == "inpainting":
        return ContextEncoder(backbone, cfg.inpainting)
    if method == "temporal_order":
        return TemporalOrderNet(backbone, cfg.temporal_order, image_size, videos, motion)
    if method == "tracking":
        return TrackingNet(backbone, cfg.tracking, image_size, videos, motion, seed)
    if method == "multitask":
        weights = {k: float(v) for k, v in cfg.multitask.tasks.items() if v > 0}
        tasks = {k: build(k, backbone, cfg, image_size, num_images, seed, videos, motion) for k in weights}
        return MultiTask(backbone, tasks, weights)
    raise ValueError(f"params: 'pretrain.method' is {method!r}; pretext methods: {', '.join(METHODS)}")


def train(backbone: nn.Module, images: np.ndarray, cfg: PretrainConfig, seed: int,
          log: Callable[[dict], None] | None = None, videos: list[np.ndarray] | None = None,
          motion: MotionConfig | None = None,
          device: torch.device = torch.device("cpu")) -> tuple[nn.Module, list[dict]]:
    """Train `backbone` with objective `cfg.method` on images (N, H, W, 3) uint8 on `device` -> (backbone on the
    CPU, per-epoch history). videos: time-ordered dataset indices per video (the video objectives need them),
    motion: their flow settings."""
    objective = build(cfg.method, backbone, cfg, images.shape[1], len(images), seed, videos, motion)
    return train_objective(objective, images, cfg, seed, log, device)
