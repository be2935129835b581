"""The bundle's model card, README.md (Hugging Face's model card: YAML front matter, then Markdown): what the network
was fitted on, the held-out metrics the evaluate stage measured on it (split and matching), its classes by name
with a gallery image each (classes/<id>.png: the training images holding most of the class in the merged
pseudo-labels it learnt from, the class drawn on them), and how to load it."""
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


def held_out_text(metrics: dict, match: str, n_eval: int) -> str:
    """evaluate's metrics.json ({split: {label map: {miou, pixel_acc, ...}}}), evaluate.match and the number of
    held-out images with ground truth -> the card's Markdown of the held-out split's network rows (network, its
    rounds, network + CRF)."""
    rows = {k: v for k, v in metrics.get("eval", {}).items() if k.startswith("network")}
    if not rows:
        why = metrics.get("note", "the run has no held-out split with ground truth")
        return f"No held-out metrics: {why} (data/11_evaluate/metrics.json)."
    table = "\n".join(f"| {k} | {v['miou']:.3f} | {v['pixel_acc']:.3f} |" for k, v in rows.items())
    images = f"{n_eval} image{'s' * (n_eval != 1)}"
    return f"""Scored by the evaluate stage of the same run on its held-out split (`eval` in
data/11_evaluate/metrics.json: {images} with ground truth, none of them trained on). Each predicted id is
Hungarian-matched by {match} to one ground-truth class over the whole split; scores at the images' original size.

| label map | mIoU | pixel acc |
|---|---|---|
{table}"""


def card_text(cfg: BundleConfig, names: dict[int, str], data: DataConfig, n_images: int, shown: set[int],
              held_out: str) -> str:
    """The model card's Markdown; held_out: `held_out_text`."""
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

{held_out}

## Classes

Each class's gallery: the training images holding most of it in the pseudo-labels, the class drawn on them. Name
a class by its id in the project's `names.yaml` (`1: horse`, one `id: name` a line) and run `dvc repro`: the
bundle stage writes the names into `classes.json` and this card. `unseg predict --names names.yaml` names them for
one run.

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


def write_bundle(folder: str | Path, model: nn.Module, cfg: BundleConfig, names: dict[int, str], data: DataConfig,
                 images: Sequence[np.ndarray], labels: Sequence[np.ndarray], held_out: str) -> None:
    """The bundle (`bundle.write`, with `names`) and its model card: README.md and classes/<id>.png from the
    training images and the pseudo-labels the network was fitted on; held_out: `held_out_text`."""
    folder = Path(folder)
    bundle.write(folder, model, cfg, names)
    shares = class_shares(labels, cfg.num_classes)
    shown = set()
    for c in range(cfg.num_classes):
        tile = class_gallery(images, labels, shares, c)
        if tile is not None:
            io.write_image(folder / "classes" / f"{c}.png", tile)
            shown.add(c)
    text = card_text(cfg, names, data, len(images), shown, held_out)
    io.write_bytes(folder / "README.md", text.encode())
