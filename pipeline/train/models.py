"""The segmentation networks: a dense encoder (the pretrain stage's ViT, any timm model, or torchvision DeepLabv3)
with a light convolutional decoder, logits at the input size. `build_model` makes the one train.model names."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.backbone import factory as bb
from pipeline.config import TrainConfig


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

    def __init__(self, in_dim: int, num_classes: int, decoder_dim: int, stem_dim: int, stem_stride: int) -> None:
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

    def __init__(self, backbone: nn.Module, num_classes: int, decoder_dim: int, decoder: str, stem_dim: int,
                 stem_stride: int) -> None:
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


def build_network(model: str, model_name: str, pretrained: bool, num_classes: int, img_size: int, decoder: str,
                  decoder_dim: int, stem_dim: int, stem_stride: int,
                  stage_backbone: Callable[[], nn.Module]) -> nn.Module:
    """The network `model` names: stage (`stage_backbone()`, the pretrain stage's ViT), timm (`model_name`) or
    deeplabv3 (`model_name` its torchvision backbone); the first two with the `decoder` head (simple or fused)."""
    if model == "deeplabv3":
        return TorchvisionSeg(model_name, num_classes, pretrained)
    enc = stage_backbone() if model == "stage" else bb.create_dense(model_name, img_size, pretrained)
    return SegNet(enc, num_classes, decoder_dim, decoder, stem_dim, stem_stride)


def build_model(cfg: TrainConfig, num_classes: int, img_size: int,
                stage_backbone: Callable[[], nn.Module]) -> nn.Module:
    """The network train.model names (`build_network` with the train section's settings)."""
    return build_network(cfg.model, cfg.model_name, cfg.pretrained, num_classes, img_size, cfg.decoder,
                         cfg.decoder_dim, cfg.stem_dim, cfg.stem_stride, stage_backbone)
