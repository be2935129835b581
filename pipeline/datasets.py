"""Datasets the prepare stage materialises: the synthetic default, any image folder, PASCAL VOC 2012, COCO 2017.

Each yields (name, image (S, S, 3) uint8, label (S, S) uint8 or None) at the configured size.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from pipeline import coco, io, synth, voc
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


def _check_shape(label: np.ndarray, image: np.ndarray, label_path: Path, image_path: Path) -> None:
    if label.shape != image.shape[:2]:
        raise io.InputError(f"{label_path}: label is {label.shape[1]}x{label.shape[0]}, "
                            f"its image {image_path} is {image.shape[1]}x{image.shape[0]}")


def voc2012(cfg: DataConfig) -> Iterator[Sample]:
    """The `cfg.split` images of the VOCdevkit at `cfg.root`, palette ground truth as class indices (255 ignore)."""
    files = voc.split_files(cfg.root, cfg.split, cfg.download)
    if cfg.max_images:
        files = files[:cfg.max_images]
    for name, image_path, label_path in files:
        image, label = io.read_image(image_path), voc.read_label(label_path)
        _check_shape(label, image, label_path, image_path)
        image, label = resize_pair(image, label, cfg.image_size)
        yield name, image, label


@functools.lru_cache(maxsize=2)
def coco_index(root: str, split: str) -> coco.COCO:
    """The pycocotools index of `root`'s instances_<split>2017.json, read once per process."""
    return coco.load_index(root, split)


def coco_ids(cfg: DataConfig) -> list[int]:
    """The COCO image ids the prepare stage uses (sorted, the first data.max_images)."""
    return coco.image_ids(coco_index(cfg.root, cfg.split), cfg.max_images)


def coco2017(cfg: DataConfig) -> Iterator[Sample]:
    """COCO `cfg.split`2017 images with semantic maps: 0 background, 1..80 things, 255 crowd."""
    index = coco_index(cfg.root, cfg.split)
    cat_map = coco.category_ids(index)
    for img_id in coco_ids(cfg):
        path = coco.image_path(cfg.root, cfg.split, index, img_id)
        image, label = io.read_image(path), coco.semantic_map(index, img_id, cat_map)
        _check_shape(label, image, coco.annotation_file(cfg.root, cfg.split), path)
        image, label = resize_pair(image, label, cfg.image_size)
        yield coco.sample_name(index, img_id), image, label


def coco_instances(cfg: DataConfig) -> dict:
    """The instance ground truth of the prepared COCO images (COCO format, at data.image_size) for mask AP."""
    index = coco_index(cfg.root, cfg.split)
    ids = coco_ids(cfg)
    return coco.resized_instances(index, ids, [coco.sample_name(index, i) for i in ids], cfg.image_size)


def load(cfg: DataConfig, seed: int) -> Iterator[Sample]:
    """The dataset named by `cfg.name`."""
    if cfg.name == "synthetic":
        return synthetic(cfg, seed)
    return {"folder": folder, "voc2012": voc2012, "coco": coco2017}[cfg.name](cfg)


def class_names(cfg: DataConfig) -> list[str]:
    """Ground-truth class names (synthetic, voc2012, coco) or class_0..class_{C-1} (folder)."""
    if cfg.name == "synthetic":
        return list(synth.CLASS_NAMES)
    if cfg.name == "voc2012":
        return list(voc.CLASS_NAMES)
    if cfg.name == "coco":
        return coco.class_names(coco_index(cfg.root, cfg.split))
    return [f"class_{i}" for i in range(cfg.num_classes)]
