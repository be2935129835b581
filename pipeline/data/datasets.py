"""Datasets the prepare stage materialises: the synthetic default, any image folder, PASCAL VOC 2012, COCO 2017.

Each yields (name, image (S, S, 3) uint8, label (S, S) uint8 or None) at the configured size.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from pipeline import io
from pipeline.config import DataConfig
from pipeline.data import coco, synth, voc

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


def scan_folder(images_dir: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files under `images_dir` (nested too) -> (image files sorted by relative path, [(file, reason)] of
    the files that are not images: other extensions and hidden files such as .DS_Store or ._x.jpg)."""
    if not images_dir.is_dir():
        raise io.InputError(f"{images_dir}: folder not found (data.root must hold an images/ folder)")
    images, ignored = [], []
    for p in sorted(images_dir.rglob("*")):
        if not p.is_file():
            continue
        if any(part.startswith(".") for part in p.relative_to(images_dir).parts):
            ignored.append((str(p), "hidden file, ignored"))
        elif p.suffix.lower() not in io.IMAGE_EXTS:
            ignored.append((str(p), f"not an image file extension ({p.suffix or 'none'}), ignored; "
                                    f"images are {' '.join(io.IMAGE_EXTS)}"))
        else:
            images.append(p)
    return images, ignored


def check_label(label: np.ndarray, image_shape: tuple[int, ...], num_classes: int, label_path: Path, image_path: Path) -> None:
    """Raise InputError when a (H, W) label does not fit its image or holds classes >= num_classes (255 = ignore)."""
    if label.shape != tuple(image_shape[:2]):
        raise io.InputError(f"{label_path}: label is {label.shape[1]}x{label.shape[0]}, "
                            f"its image {image_path} is {image_shape[1]}x{image_shape[0]}")
    bad = (label != io.IGNORE) & (label >= num_classes)
    if bad.any():
        raise io.InputError(f"{label_path}: holds class {int(label[bad].max())} but data.num_classes is {num_classes} "
                            f"(classes 0..{num_classes - 1}, 255 = ignore)")


def folder(cfg: DataConfig, skipped: list[tuple[str, str]] | None = None) -> Iterator[Sample]:
    """`cfg.root`/images/** with optional `cfg.root`/labels/<same relative path>.png.

    A bad file (unreadable image, image smaller than data.min_image_side, missing / mis-sized label,
    label class >= data.num_classes, a name another image already has) raises InputError when
    cfg.on_bad_image is 'error'; with 'skip' it is appended to `skipped` as (file, reason) and left out.
    Non-image and hidden files are always left out and recorded. Input files are only ever read.
    """
    skipped = [] if skipped is None else skipped
    root = Path(cfg.root)
    images_dir, labels_dir = root / "images", root / "labels"
    paths, ignored = scan_folder(images_dir)
    skipped += ignored
    if not paths:
        raise io.InputError(f"{images_dir}: no images found (expected {'/'.join(e[1:] for e in io.IMAGE_EXTS)} files"
                            + (f"; {len(ignored)} other files ignored, e.g. {ignored[0][0]})" if ignored else ")"))

    def bad(file: Path, reason: str) -> None:
        if cfg.on_bad_image == "error":
            raise io.InputError(f"{reason} (set data.on_bad_image: skip to record such files in skipped.csv and go on)")
        skipped.append((str(file), reason))

    seen: dict[str, Path] = {}
    unique = []
    for path in paths:
        name = folder_name(path.relative_to(images_dir))
        if name in seen:
            bad(path, f"{path}: flattens to the name {name!r} that {seen[name]} already has "
                      "(rename one; nested folders are joined with '__')")
            continue
        seen[name] = path
        unique.append(path)
    used = 0
    for path in unique:
        if cfg.max_images and used == cfg.max_images:  # the first max_images good images
            break
        rel = path.relative_to(images_dir)
        label_path = labels_dir / rel.with_suffix(".png")
        try:
            image = io.read_image(path)
            if min(image.shape[:2]) < cfg.min_image_side:
                raise io.InputError(f"{path}: image is {image.shape[1]}x{image.shape[0]} pixels, smaller than "
                                    f"data.min_image_side ({cfg.min_image_side})")
            label = None
            if labels_dir.is_dir():
                if not label_path.is_file():
                    raise io.InputError(f"{label_path}: label file missing for image {path}")
                label = io.read_label(label_path)
                check_label(label, image.shape, cfg.num_classes, label_path, path)
        except io.InputError as e:
            bad(path, str(e))
            continue
        image, label = resize_pair(image, label, cfg.image_size)
        used += 1
        yield folder_name(rel), image, label


def voc2012(cfg: DataConfig) -> Iterator[Sample]:
    """The `cfg.split` images of the VOCdevkit at `cfg.root`, palette ground truth as class indices (255 ignore)."""
    files = voc.split_files(cfg.root, cfg.split, cfg.download)
    if cfg.max_images:
        files = files[:cfg.max_images]
    for name, image_path, label_path in files:
        image, label = io.read_image(image_path), voc.read_label(label_path)
        check_label(label, image.shape, cfg.num_classes, label_path, image_path)
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
        check_label(label, image.shape, cfg.num_classes, coco.annotation_file(cfg.root, cfg.split), path)
        image, label = resize_pair(image, label, cfg.image_size)
        yield coco.sample_name(index, img_id), image, label


def coco_instances(cfg: DataConfig) -> dict:
    """The instance ground truth of the prepared COCO images (COCO format, at data.image_size) for mask AP."""
    index = coco_index(cfg.root, cfg.split)
    ids = coco_ids(cfg)
    return coco.resized_instances(index, ids, [coco.sample_name(index, i) for i in ids], cfg.image_size)


def load(cfg: DataConfig, seed: int, skipped: list[tuple[str, str]] | None = None) -> Iterator[Sample]:
    """The dataset named by `cfg.name`; files left out (folder) are appended to `skipped` as (file, reason)."""
    if cfg.name == "synthetic":
        return synthetic(cfg, seed)
    if cfg.name == "folder":
        return folder(cfg, skipped)
    return {"voc2012": voc2012, "coco": coco2017}[cfg.name](cfg)


def class_names(cfg: DataConfig) -> list[str]:
    """Ground-truth class names (synthetic, voc2012, coco) or class_0..class_{C-1} (folder)."""
    if cfg.name == "synthetic":
        return list(synth.CLASS_NAMES)
    if cfg.name == "voc2012":
        return list(voc.CLASS_NAMES)
    if cfg.name == "coco":
        return coco.class_names(coco_index(cfg.root, cfg.split))
    return [f"class_{i}" for i in range(cfg.num_classes)]
