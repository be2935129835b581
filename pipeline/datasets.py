"""Datasets the prepare stage materialises: the synthetic default and any image folder.

Each yields (name, image (S, S, 3) uint8, label (S, S) uint8 or None) at the configured size.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from pipeline import io, synth
from pipeline.config import DataConfig

Sample = tuple[str, np.ndarray, "np.ndarray | None"]


def resize_pair(image: np.ndarray, label: np.ndarray | None, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W, 3) image and optional (H, W) label -> square `size` (area/linear for images, nearest for labels)."""
    interp = cv2.INTER_AREA if min(image.shape[:2]) > size else cv2.INTER_LINEAR
    img = cv2.resize(image, (size, size), interpolation=interp)
    lab = None if label is None else cv2.resize(label, (size, size), interpolation=cv2.INTER_NEAREST)
    return img, lab


def synthetic(cfg: DataConfig, seed: int) -> Iterator[Sample]:
    """The embedded default, generated from `seed`."""
    for name, img, lab in synth.generate_dataset(seed, cfg.synth_images, cfg.image_size, cfg.synth_max_objects):
        yield name, img, lab


def folder_name(rel: Path) -> str:
    """images/a/b.jpg relative path -> a unique flat name 'a__b' (nested folders kept apart)."""
    return "__".join(rel.with_suffix("").parts)


def folder(cfg: DataConfig) -> Iterator[Sample]:
    """`cfg.root`/images/** with optional `cfg.root`/labels/<same relative path>.png."""
    root = Path(cfg.root)
    paths = io.list_images(root / "images")
    if not paths:
        raise io.InputError(f"{root / 'images'}: no images found (expected jpg/png/... files)")
    if cfg.max_images:
        paths = paths[:cfg.max_images]
    labels_dir = root / "labels"
    for path in paths:
        rel = path.relative_to(root / "images")
        image = io.read_image(path)
        label = None
        if labels_dir.is_dir():
            label = io.read_label(labels_dir / rel.with_suffix(".png"))
            if label.shape != image.shape[:2]:
                raise io.InputError(f"{labels_dir / rel.with_suffix('.png')}: label is {label.shape[1]}x{label.shape[0]}, "
                                    f"its image {path} is {image.shape[1]}x{image.shape[0]}")
            bad = (label != io.IGNORE) & (label >= cfg.num_classes)
            if bad.any():
                raise io.InputError(f"{labels_dir / rel.with_suffix('.png')}: holds class {int(label[bad].max())} but "
                                    f"data.num_classes is {cfg.num_classes}")
        image, label = resize_pair(image, label, cfg.image_size)
        yield folder_name(rel), image, label


def load(cfg: DataConfig, seed: int) -> Iterator[Sample]:
    """The dataset named by `cfg.name`."""
    return synthetic(cfg, seed) if cfg.name == "synthetic" else folder(cfg)


def class_names(cfg: DataConfig) -> list[str]:
    """Ground-truth class names (synthetic) or class_0..class_{C-1} (folder)."""
    if cfg.name == "synthetic":
        return list(synth.CLASS_NAMES)
    return [f"class_{i}" for i in range(cfg.num_classes)]
