"""A bundle's network as one file for other runtimes: TorchScript (`torch.jit.trace`) or ONNX (`torch.onnx.export`,
opset 17, the TorchScript-based exporter: it needs no onnxscript).

The exported graph takes RGB images in [0, 1], (B, 3, H, W) float32, at the network's input size (the prepared
size: `Segmenter.network_input`), normalises them and returns logits (B, num_classes, H, W); the argmax over
classes is the class map at that size, which the caller upsamples to the image's own size.

A ViT's position embeddings are resampled to the token grid of each input size (bicubic with antialiasing, which
ONNX has no operator for), so a ViT network is exported for ONE input size (height x width, default the bundle's
image_size square): its position embeddings are resampled once, here, exactly as the eager network resamples them
at that size. Feed it images resized to that size (docs/using.md shows the wrapper). CNN encoders (train.model
timm or deeplabv3) export with dynamic height and width.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from pipeline.backbone import factory as bb

Format = Literal["onnx", "torchscript"]
OPSET = 17


class Exportable(nn.Module):
    """RGB in [0, 1] (B, 3, H, W) -> normalised (MEAN/STD) -> the network -> logits (B, C, H, W)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(bb.normalize(images))


def fixed_size(model: nn.Module) -> bool:
    """True when the network's encoder is a ViT (position embeddings of a grid: exported for one input size)."""
    backbone = getattr(model, "backbone", None)
    return backbone is not None and bb.is_vit(backbone)


def for_size(model: nn.Module, height: int, width: int) -> nn.Module:
    """A copy of the network in eval mode on the CPU; a ViT encoder's position embeddings resampled to the token
    grid of height x width (timm's set_input_size), which the eager network resamples the same way per call."""
    net = copy.deepcopy(model).cpu().eval()
    if fixed_size(net):
        net.backbone.set_input_size(img_size=(height, width))
    return net


def export(model: nn.Module, fmt: Format, path: str | Path, height: int, width: int) -> Path:
    """The network -> `path` as TorchScript or ONNX for (B, 3, height, width) RGB inputs in [0, 1] (heights and
    widths other than these too where `fixed_size` is False); sides must be multiples of the patch size."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = Exportable(for_size(model, height, width)).eval()
    example = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        if fmt == "torchscript":
            torch.jit.trace(net, example).save(str(path))
            return path
        axes = {0: "batch"} if fixed_size(model) else {0: "batch", 2: "height", 3: "width"}
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (example,), str(path), opset_version=OPSET, dynamo=False, input_names=["images"],
                          output_names=["logits"], dynamic_axes={"images": axes, "logits": axes})
    return path
