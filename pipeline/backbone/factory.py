"""The timm ViT backbone: one factory for hub weights, a local file, or fresh weights; dense features.

`create_backbone` builds `timm.create_model(name, **overrides)` with `num_classes=0` and dynamic
image size, so any input size that is a multiple of the patch size works.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import timm
import torch
from torch import nn

from pipeline.backbone import vit_name
from pipeline.config import BackboneConfig, replace

# Normalisation applied to images in [0, 1] before the backbone (ImageNet statistics, as timm's ViTs).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class BackboneError(RuntimeError):
    """The backbone cannot be built as configured; the message says what to do instead."""


def create_backbone(cfg: BackboneConfig, img_size: int, source: str | None = None) -> nn.Module:
    """A timm ViT for `img_size` inputs, weights per `cfg.source` (or `source` to override it).

    hub: timm `pretrained=True` (needs internet, or a filled `hf_cache` with HF_HUB_OFFLINE=1);
    file: the state dict at `cfg.weights`, loaded through timm's pretrained path;
    pretrain / random: freshly initialised weights (the pretrain stage trains them).
    """
    source = source or cfg.source
    kwargs = dict(cfg.overrides)
    kwargs.update(num_classes=0, dynamic_img_size=True, img_size=img_size)
    problem = vit_name.problem(cfg.name)
    if problem:
        raise BackboneError(f"backbone.name {cfg.name!r} is {problem}; e.g. vit_tiny_patch16_224, "
                            "vit_small_patch16_224.dino (only timm ViTs give the patch tokens and keys the pipeline uses)")
    if source == "hub":
        try:
            return timm.create_model(cfg.name, pretrained=True, cache_dir=hub_cache_dir(cfg.hf_cache), **kwargs)
        except Exception as e:  # huggingface_hub raises several types when offline
            raise BackboneError(
                f"could not fetch pretrained weights for {cfg.name!r} from the hub ({type(e).__name__}: {e}). "
                "Offline, use one of: backbone.source=file with backbone.weights=PATH (a state dict of this "
                "architecture), backbone.source=pretrain (self-supervised DINO on your images), or fill "
                "backbone.hf_cache while online and set HF_HUB_OFFLINE=1.") from e
    if source == "file":
        path = Path(cfg.weights)
        if not path.is_file():
            raise BackboneError(f"backbone.weights: {path} not found; rebuild it (see docs/backbone.md, 'The shipped backbone') "
                                "or use backbone.source=pretrain / hub")
        # timm's checkpoint loader with the model's own filter (it resamples position embeddings to img_size);
        # pretrained_cfg_overlay=dict(file=...) did the same, but timm 1.0.29 refuses plain .pth files there.
        model = timm.create_model(cfg.name, pretrained=False, **kwargs)
        filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
        try:
            timm.models.load_checkpoint(model, str(path), strict=True, filter_fn=filter_fn)
            return model
        except RuntimeError as e:
            raise BackboneError(f"backbone.weights: {path} does not fit {cfg.name} with overrides {cfg.overrides}: {e}") from e
    return timm.create_model(cfg.name, pretrained=False, **kwargs)


def hub_cache_dir(hf_cache: str) -> str | None:
    """backbone.hf_cache -> the folder huggingface_hub keeps models--<org>--<name>/ in (its `cache_dir`): the
    folder's hub/ when it has one (an HF_HOME, e.g. ~/.cache/huggingface), else the folder itself (a hub cache, e.g.
    ~/.cache/huggingface/hub, or an empty folder to fill while online); None ('') = huggingface_hub's default
    (HF_HOME / HF_HUB_CACHE, read when it is imported)."""
    if not hf_cache:
        return None
    return str(Path(hf_cache) / "hub") if (Path(hf_cache) / "hub").is_dir() else hf_cache


def from_stage(cfg: BackboneConfig, weights: str | Path, img_size: int) -> nn.Module:
    """The backbone the pretrain stage wrote to `weights` (whatever cfg.source it came from)."""
    return create_backbone(replace(cfg, source="file", weights=str(weights)), img_size)


def patch_size(model: nn.Module) -> int:
    """The ViT's patch size in pixels."""
    ps = model.patch_embed.patch_size
    return int(ps[0] if isinstance(ps, (tuple, list)) else ps)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float in [0, 1] -> normalised with MEAN/STD."""
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def size_batches(shapes: list[tuple[int, ...]], batch_size: int) -> list[list[int]]:
    """Image shapes (one per image) -> batches of image indices, each of images of one (H, W) and at most
    batch_size long: images grouped by size (sizes in order of first appearance, indices ascending within a
    size), each group cut into consecutive batches. Images of one size give range(n) cut every batch_size."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(shapes):
        groups.setdefault(tuple(s[:2]), []).append(i)
    bs = max(batch_size, 1)
    return [g[k:k + bs] for g in groups.values() for k in range(0, len(g), bs)]


def patch_tokens(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Normalised images (B, 3, H, W) -> final patch tokens (B, H/p, W/p, D)."""
    tokens = model.forward_features(x)[:, model.num_prefix_tokens:]
    p = patch_size(model)
    return tokens.reshape(x.shape[0], x.shape[2] // p, x.shape[3] // p, -1)


def is_vit(model: nn.Module) -> bool:
    """True for a timm ViT (patch tokens), False for a timm `features_only` CNN (feature maps)."""
    return hasattr(model, "patch_embed") and hasattr(model, "forward_features")


def create_dense(name: str, img_size: int, pretrained: bool = False) -> nn.Module:
    """Any timm model as a dense encoder for `img_size` inputs (see `dense_map`): a ViT (any patch size)
    without its head and with dynamic image size, else `features_only` with the last (deepest) stage.

    pretrained: timm ImageNet weights from the hub (needs internet); False = random init, offline.
    """
    if name.split(".")[0] not in timm.list_models():
        raise BackboneError(f"train.model_name {name!r} is not a timm model; e.g. resnet18, convnext_atto, "
                            "vit_small_patch16_224")
    if "vit" in name:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, dynamic_img_size=True, img_size=img_size)
    return timm.create_model(name, pretrained=pretrained, features_only=True, out_indices=(-1,))


def dense_dim(model: nn.Module) -> int:
    """Channels of `dense_map`'s output."""
    return int(model.num_features) if is_vit(model) else int(model.feature_info.channels()[-1])


def dense_map(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Normalised images (B, 3, H, W) -> (B, D, h, w): a ViT's patch tokens or a CNN's deepest feature map."""
    if is_vit(model):
        return patch_tokens(model, x).permute(0, 3, 1, 2)
    return model(x)[-1]


@torch.no_grad()
def dense_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images (B, 3, H, W) -> (tokens, keys), each (B, H/p, W/p, D).

    tokens: the final normed patch tokens; keys: the last block's attention keys (TokenCut's affinity).
    """
    captured: dict[str, torch.Tensor] = {}
    attn = model.blocks[-1].attn
    hook = attn.qkv.register_forward_hook(lambda m, i, o: captured.__setitem__("qkv", o))
    try:
        tokens = patch_tokens(model, x)
    finally:
        hook.remove()
    d = captured["qkv"].shape[-1] // 3
    keys = captured["qkv"][:, model.num_prefix_tokens:, d:2 * d]
    return tokens, keys.reshape(tokens.shape[:3] + (d,))


def pick_device(name: str) -> torch.device:
    """'auto' | 'cpu' | 'cuda' -> a torch device ('auto' takes CUDA when present)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise BackboneError("device 'cuda' was asked for but no CUDA GPU is visible; use 'auto' or 'cpu'")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
