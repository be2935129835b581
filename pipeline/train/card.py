"""The bundle's model card, README.md (Hugging Face's model card: YAML front matter, then Markdown): what the network
was fitted on, its classes with a gallery image each (classes/<id>.png: the training images holding most of the
class in the merged pseudo-labels it learnt from, the class drawn on them), and how to load it."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from torch import nn

from pipeline import io
from pipeline.config import DataConfig
from pipeline.train import bundle
from pipeline.train.bundle import BundleConfig

GALLERY_IMAGES, TILE = 4, 96  # a class's gallery: this many training images, each this many pixels high


def class_shares(labels: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """Label maps ((h, w) uint8 each, read once) -> (N, num_classes) float: each class's share of each map's
    pixels (ignore 255 counted in no class)."""
    shares = np.zeros((len(labels), num_classes))
    for i, lab in enumerate(labels):
        counts = np.bincount(lab.ravel(), minlength=256)[:num_classes]
        shares[i] = counts / max(lab.size, 1)
    return shares


def class_gallery(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], shares: np.ndarray,
                  c: int) -> np.ndarray | None:
    """The GALLERY_IMAGES images with the largest share of class c, each with c's pixels drawn in its palette
    colour, TILE pixels high, side by side -> (TILE, W, 3) uint8; None when no image holds the class."""
    order = [i for i in np.argsort(-shares[:, c], kind="stable")[:GALLERY_IMAGES] if shares[i, c] > 0]
    if not order:
        return None
    tiles = []
    for i in order:
        img, lab = images[i], labels[i]
        drawn = io.overlay(img, np.where(lab == c, c, 0).astype(np.uint8))
        tiles.append(cv2.resize(drawn, (max(1, round(TILE * img.shape[1] / img.shape[0])), TILE),
                                interpolation=cv2.INTER_AREA))
    return np.concatenate(tiles, axis=1)


def card_text(cfg: BundleConfig, names: dict[int, str], data: DataConfig, n_images: int, shown: set[int]) -> str:
    """The model card's Markdown."""
    rows = "\n".join(f"| {i} | {names[i]} | " + (f"![class {i}](classes/{i}.png)" if i in shown else "(no pixels)")
                     + " |" for i in range(cfg.num_classes))
    source = data.name + (f" ({data.root})" if data.root and data.name not in ("synthetic", "synthetic_video") else "")
    return f"""---
library_name: unseg
pipeline_tag: image-segmentation
tags: [semantic-segmentation, unsupervised]
---

# unseg segmentation network

A semantic segmentation network trained by unseg without human labels: {cfg.num_classes}
classes (background and {cfg.num_classes - 1} discovered ones) learnt from the merged pseudo-labels of
{n_images} training images of the `{source}` dataset (`data.name`), prepared with their short side at
{cfg.image_size} px. Network: `{cfg.model}` {cfg.backbone_name if cfg.model == "stage" else cfg.model_name} with the
`{cfg.decoder}` decoder; unseg {cfg.unseg_version}, params hash `{cfg.params_hash[:12]}`.

## Held-out metrics

The evaluate stage scores this network on the held-out split after the train stage wrote this folder:
`data/11_evaluate/metrics.json` and `table.md` of the same run (the `network` and `network + CRF` rows,
Hungarian-matched mIoU at the original size).

## Classes

Each class's gallery: the training images holding most of it in the pseudo-labels, the class drawn on them. Name
them in `classes.json` (or pass a `names.yaml` of `id: name` lines to `unseg predict --names`).

| id | name | gallery |
|---|---|---|
{rows}

## Use

```python
from pipeline import Segmenter

seg = Segmenter.load("path/to/this/folder")
labels = seg.predict("photo.jpg")   # (H, W) uint8 class ids at the photo's own size
```

```bash
unseg predict path/to/this/folder photos/ out/
unseg export path/to/this/folder --format onnx model.onnx
```

Images are resized by the rule in `config.json` (`resize`: short side `image_size`, sides multiples of
`patch_size`) and normalised with its `mean` / `std`; the logits are upsampled to each image's size.
"""


def write_bundle(folder: str | Path, model: nn.Module, cfg: BundleConfig, data: DataConfig,
                 images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> None:
    """The bundle (`bundle.write`) with its model card: README.md and classes/<id>.png from the training images and
    the pseudo-labels the network was fitted on."""
    folder = Path(folder)
    bundle.write(folder, model, cfg)
    shares = class_shares(labels, cfg.num_classes)
    shown = set()
    for c in range(cfg.num_classes):
        tile = class_gallery(images, labels, shares, c)
        if tile is not None:
            io.write_image(folder / "classes" / f"{c}.png", tile)
            shown.add(c)
    text = card_text(cfg, bundle.default_names(cfg.num_classes), data, len(images), shown)
    io.write_bytes(folder / "README.md", text.encode())
