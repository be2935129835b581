"""The pretrain stage's work: the self-supervised objective `pretrain.method` (DINO or a pretext task) run on the
prepared images, and the record of the weights it leaves (info.json)."""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

from pipeline.backbone import dino, pretext
from pipeline.config import BackboneConfig, MotionConfig, PretrainConfig


def square_crops(images: list[np.ndarray]) -> np.ndarray:
    """Images (H_i, W_i, 3) uint8 -> (N, S, S, 3) uint8, each centre-cropped to the square of the shortest side S
    of all of them (the objectives take one stacked array; square images of one size stay as they are)."""
    side = min(min(im.shape[:2]) for im in images)
    return np.stack([im[(im.shape[0] - side) // 2:(im.shape[0] - side) // 2 + side,
                        (im.shape[1] - side) // 2:(im.shape[1] - side) // 2 + side] for im in images])


def fit(model: nn.Module, images: np.ndarray, cfg: PretrainConfig, seed: int, videos: list[np.ndarray] | None,
        motion: MotionConfig, device: torch.device) -> tuple[nn.Module, list[dict]]:
    """Train `model` with objective cfg.method on images (N, S, S, 3) uint8 on `device`, a line printed per epoch
    -> (the trained backbone on the CPU, per-epoch history). videos: each video's frame indices in time order, which
    the video objectives need (None on still images); motion: their optical flow settings."""
    def log(r: dict) -> None:
        print(f"pretrain {cfg.method} epoch {r['epoch']}: loss {r['loss']:.4f} ({r['minutes']:.1f} min)", flush=True)

    print(f"pretrain {cfg.method} on {device}", flush=True)
    if cfg.method == "dino":
        return dino.train_dino(model, images, cfg, seed, log, device)
    return pretext.train(model, images, cfg, seed, log=log, videos=videos, motion=motion, device=device)


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict, detached, on the CPU (what backbone.pth holds)."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def info(cfg: BackboneConfig, method: str, state: dict[str, torch.Tensor], weights: bytes,
         history: list[dict]) -> dict:
    """info.json: where the weights came from (`method` counts only when cfg.source is pretrain), their number of
    parameters, the sha256 of backbone.pth's bytes `weights`, the final loss and epochs of a training here. No wall
    time: info.json stays identical between runs, so dvc.lock does too."""
    return {"source": cfg.source, "method": method if cfg.source == "pretrain" else None,
            "name": cfg.name, "overrides": cfg.overrides,
            "weights": cfg.weights, "params": sum(v.numel() for v in state.values()),
            "sha256": hashlib.sha256(weights).hexdigest(),
            "final_loss": history[-1]["loss"] if history else None,
            "epochs_run": len(history)}
