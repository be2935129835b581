"""The trained network as a self-describing folder: the train stage's data/10_train/model/, and the bundle stage's
data/11_bundle/ (the same network with its named classes and model card):

- model.safetensors: the whole network's state dict (backbone included);
- config.json: everything needed to rebuild and feed it (`BundleConfig`): the network's kind and settings, the
  prepare stage's resize rule and size, the normalisation, the classes and their palette, the dense CRF's settings,
  unseg's version and the hash of the params that trained it;
- classes.json: class id -> name (`background`, `class_1`, ... until a person names them in names.yaml,
  `io.class_names`);
- README.md and classes/<id>.png: the model card (pipeline/train/card.py), in the bundle stage's folder.

config.json + model.safetensors + README.md is a valid Hugging Face model repository: `huggingface-cli upload`
publishes the folder as it is. Loading reads only this folder: no params.yaml, no data/, no network.
"""
from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from pipeline import io
from pipeline.backbone import factory as bb
from pipeline.backbone import vit_name
from pipeline.config import BackboneConfig, CRFConfig, Params
from pipeline.config.errors import config_error
from pipeline.train.models import build_network

FORMAT = "unseg-segmenter/1"  # config.json's "format": this layout and these keys


class BundleError(ValueError):
    """A bundle folder that cannot be loaded; the message names the file and the key."""


class BundleConfig(BaseModel):
    """config.json: a network and how to feed it. Every key required, none unknown (the run's values, written
    once by the train stage; see params.yaml's train, backbone, data and crf sections for their meaning)."""
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    format: Literal["unseg-segmenter/1"]
    model: Literal["stage", "timm", "deeplabv3"]  # train.model
    model_name: str  # train.model_name (timm, deeplabv3)
    backbone_name: str  # backbone.name (stage): a timm ViT
    backbone_kwargs: dict[str, Any]  # backbone.overrides: timm create_model kwargs of the stage's ViT
    decoder: Literal["simple", "fused"]
    decoder_dim: int = Field(ge=1)
    stem_dim: int = Field(ge=1)
    stem_stride: Literal[2, 4]
    resize: Literal["short_side"]  # the prepare stage's rule: short side image_size, sides multiples of patch_size
    image_size: int = Field(ge=1)
    patch_size: int = Field(ge=1)
    mean: list[float] = Field(min_length=3, max_length=3)  # normalisation of RGB in [0, 1]
    std: list[float] = Field(min_length=3, max_length=3)
    num_classes: int = Field(ge=2, le=255)
    palette: list[list[int]]  # RGB per class id, the class maps' PNG palette
    amp: bool  # bf16 autocast on CUDA
    batch_size: int = Field(ge=1)  # the train stage's prediction batch size
    crf: CRFConfig  # the dense CRF of `crf=True`
    unseg_version: str
    params_hash: str  # sha256 of the validated params that trained it


def params_hash(p: Params) -> str:
    """The validated params -> sha256 hex digest of their JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(p.model_dump(), sort_keys=True, default=str).encode()).hexdigest()


def unseg_version() -> str:
    """The installed unseg package's version, 'unknown' when it is not installed."""
    try:
        return metadata.version("unseg")
    except metadata.PackageNotFoundError:
        return "unknown"


def run_config(p: Params, num_classes: int, image_size: int) -> BundleConfig:
    """The train stage's params, its class count and the prepared image size -> the bundle's config."""
    t = p.train
    return BundleConfig(
        format=FORMAT, model=t.model, model_name=t.model_name, backbone_name=p.backbone.name,
        backbone_kwargs=dict(p.backbone.overrides), decoder=t.decoder, decoder_dim=t.decoder_dim,
        stem_dim=t.stem_dim, stem_stride=t.stem_stride, resize="short_side", image_size=image_size,
        patch_size=vit_name.patch_size(p.backbone.name, p.backbone.overrides) or 1,  # the prepare stage's patch
        mean=list(bb.MEAN), std=list(bb.STD), num_classes=num_classes,
        palette=io.palette()[:num_classes].tolist(), amp=t.amp, batch_size=t.batch_size, crf=p.crf,
        unseg_version=unseg_version(), params_hash=params_hash(p))


def build(cfg: BundleConfig) -> nn.Module:
    """The config -> its network with fresh weights (no download: pretrained weights are the bundle's)."""
    def stage_backbone() -> nn.Module:
        backbone = BackboneConfig(name=cfg.backbone_name, overrides=cfg.backbone_kwargs, source="random", weights="",
                                  hf_cache="")
        return bb.create_backbone(backbone, cfg.image_size)

    return build_network(cfg.model, cfg.model_name, False, cfg.num_classes, cfg.image_size, cfg.decoder,
                         cfg.decoder_dim, cfg.stem_dim, cfg.stem_stride, stage_backbone)


def write(folder: str | Path, model: nn.Module, cfg: BundleConfig, names: dict[int, str] | None = None) -> None:
    """The network, its config and class names (default: `io.default_names`) -> folder/model.safetensors,
    config.json, classes.json, each written atomically."""
    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    io.write_bytes(folder / "model.safetensors", save_safetensors(state, metadata={"format": "pt"}))
    io.write_json(folder / "config.json", cfg.model_dump(mode="json"))
    names = names or io.default_names(cfg.num_classes)
    io.write_json(folder / "classes.json", {str(i): names[i] for i in range(cfg.num_classes)})


def read_config(folder: str | Path) -> BundleConfig:
    """folder/config.json -> the validated config; BundleError naming the file and each bad, missing or unknown
    key."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise BundleError(f"{path}: not found; a model bundle is a folder with config.json, model.safetensors and "
                          "classes.json (dvc repro writes data/11_bundle/)")
    try:
        return BundleConfig.model_validate_json(path.read_bytes())
    except ValidationError as e:
        lines = [ln.removeprefix("params: ").replace("known section; allowed sections", "known key; allowed keys")
                 for ln in str(config_error(e, BundleConfig, "")).splitlines()]  # its wording is params.yaml's
        raise BundleError(f"{path}: " + "; ".join(lines)) from None


def read_classes(folder: str | Path, num_classes: int) -> dict[int, str]:
    """folder/classes.json ({"id": name}) -> {id: name} for ids 0..num_classes-1; BundleError when ids differ."""
    path = Path(folder) / "classes.json"
    raw = io.read_json(path)
    if sorted(raw, key=str) != sorted(map(str, range(num_classes)), key=str):
        raise BundleError(f"{path}: must name the class ids 0..{num_classes - 1} (config.json's num_classes), "
                          f"got {sorted(raw)}")
    return {int(k): str(v) for k, v in raw.items()}


def load(folder: str | Path) -> tuple[nn.Module, BundleConfig, dict[int, str]]:
    """A bundle folder -> (network with its weights, in eval mode on the CPU, config, class names)."""
    folder = Path(folder)
    cfg = read_config(folder)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise BundleError(f"{weights}: not found (the bundle's weights)")
    model = build(cfg)
    try:
        model.load_state_dict(load_safetensors(weights.read_bytes()), strict=True)
    except (RuntimeError, ValueError) as e:
        raise BundleError(f"{weights}: does not fit the network config.json describes ({e})") from e
    return model.eval(), cfg, read_classes(folder, cfg.num_classes)

