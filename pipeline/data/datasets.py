"""Datasets the prepare stage materialises: the synthetic default, any image folder, PASCAL VOC 2012, COCO 2017,
each as two splits: `load` gives the training split (every stage fits on it), `load_eval` the held-out evaluation
split (only the network's predictions and the baselines are scored there; empty when a dataset has none).

Each yields Sample(name, image, label, size): the image resized by `resize_image` (short side data.image_size, aspect
kept, sides multiples of the patch size), the label (H, W) uint8 at the image's ORIGINAL size or None, and that
original (H, W). A bad label never removes its image: the image is yielded with label None and the reason recorded.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import cv2
import numpy as np

from pipeline import io
from pipeline.config import DataConfig
from pipeline.data import coco, synth, voc


class Sample(NamedTuple):
    name: str
    image: np.ndarray  # (h, w, 3) uint8, prepared size (see resize_image)
    label: np.ndarray | None  # (H, W) uint8 class indices at the ORIGINAL size, 255 ignore; None: no usable label
    size: tuple[int, int]  # the original (H, W)


def prepared_size(height: int, width: int, size: int, patch: int = 1) -> tuple[int, int]:
    """The (h, w) an image of `height` x `width` is prepared at: see resize_image."""
    short = min(height, width)

    def side(n: int) -> int:  # n * size / short rounded to the nearest multiple of patch (half up), >= 1 patch
        return max(1, (2 * n * size + short * patch) // (2 * short * patch)) * patch

    return side(height), side(width)


def resize_image(image: np.ndarray, size: int, patch: int = 1) -> np.ndarray:
    """(H, W, 3) -> the prepared image: the SHORT side becomes `size`, the aspect ratio is kept, then each side is
    rounded to the NEAREST multiple of the backbone's `patch` size (at least one patch). Area interpolation when
    shrinking (short side > size), else bilinear. 230x170 (W x H) at 128 with patch 8 -> 176x128; a square
    image -> size x size exactly as the old square resize made it.

    Why the short side: every prepared image then holds a size x size crop for the training stages' square
    crops, and object scale follows the short-side resize of MaskDistill and COMUS (the long side grows with the
    aspect ratio, so a wide photo is not shrunk into a thin strip). Why rounding and not padding: a padded band
    would be patches of invented content that the normalized cut and the clustering must learn to ignore, and a
    label map at the prepared size maps back to the photo with one resize (evaluate and the network's predictions
    go back to the original size that way). The stretch this adds is at most half a patch per side. Ground truth
    is never resized here: it stays at the original size, where it is scored.
    """
    h, w = prepared_size(*image.shape[:2], size, patch)
    interp = cv2.INTER_AREA if min(image.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def eval_share(name: str) -> float:
    """A number in [0, 1) fixed by `name` alone: the first 4 bytes of sha1(name) / 2^32."""
    return int.from_bytes(hashlib.sha1(name.encode("utf-8")).digest()[:4], "big") / 2 ** 32


def in_eval_split(name: str, fraction: float) -> bool:
    """data.eval_fraction's rule: `name` is held out when eval_share(name) < fraction. It depends on the name only,
    so adding or removing other images never moves an image to the other split."""
    return eval_share(name) < fraction


def label_or_none(read: Callable[[], np.ndarray], image_shape: tuple[int, ...], num_classes: int, label_path: Path,
                  image_path: Path, skipped: list[tuple[str, str]]) -> np.ndarray | None:
    """`read()` checked against its image (check_label) -> the label, or None with (label file, reason) appended to
    `skipped` when it is missing, unreadable, mis-sized or out of range: the image is used all the same, only
    evaluation leaves it out (label isolation)."""
    try:
        label = read()
        check_label(label, image_shape, num_classes, label_path, image_path)
        return label
    except io.InputError as e:
        skipped.append((str(label_path), f"label left out of evaluation (its image is used): {e}"))
        return None


def synthetic(cfg: DataConfig, seed: int, part: str = "train") -> Iterator[Sample]:
    """The embedded default: data.synth_images training scenes from `seed` (names synth_*), or (part 'eval')
    data.synth_eval_images evaluation scenes from synth.eval_stream(seed) (names synth_eval_*)."""
    source, count, prefix = (seed, cfg.synth_images, "synth") if part == "train" else \
        (synth.eval_stream(seed), cfg.synth_eval_images, "synth_eval")
    if not count:
        return
    for name, img, lab in synth.iter_dataset(source, count, cfg.image_size, cfg.synth_max_objects, prefix):
        yield Sample(name, img, lab, (cfg.image_size, cfg.image_size))


def folder_name(rel: Path) -> str:
    """images/a/b.jpg relative path -> a unique flat name 'a__b' (nested folders kept apart)."""
    return "__".join(rel.with_suffix("").parts)


def scan_folder(images_dir: Path, key: str = "data.root") -> tuple[list[Path], list[tuple[str, str]]]:
    """Files under `images_dir` (nested too) -> (image files sorted by relative path, [(file, reason)] of
    the files that are not images: other extensions and hidden files such as .DS_Store or ._x.jpg)."""
    if not images_dir.is_dir():
        raise io.InputError(f"{images_dir}: folder not found ({key} must hold an images/ folder)")
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


def folder(cfg: DataConfig, skipped: list[tuple[str, str]] | None = None, *, patch: int = 1,
           part: str = "train") -> Iterator[Sample]:
    """`root`/images/** with optional `root`/labels/<same relative path>.png, one split of it.

    part 'train': data.root, less the images data.eval_fraction holds out; part 'eval': data.eval_root, or the
    held-out images of data.root (in_eval_split on the flat name), or nothing when neither is set. The first
    data.max_images (train) / data.max_eval_images (eval) good images, in relative-path order.

    A bad image (unreadable, shorter side below data.min_image_side, a name another image already has) raises
    InputError when cfg.on_bad_image is 'error'; with 'skip' it is appended to `skipped` as (file, reason) and
    left out. A bad label (missing, unreadable, mis-sized, class >= data.num_classes) never removes its image: the
    image is yielded with label None and the label recorded in `skipped`. Non-image and hidden files are always
    left out and recorded. Input files are only ever read.
    """
    skipped = [] if skipped is None else skipped
    if part == "eval" and not cfg.eval_root and not cfg.eval_fraction:
        return
    root = Path(cfg.eval_root if part == "eval" and cfg.eval_root else cfg.root)
    split_by_name = bool(cfg.eval_fraction)
    # The eval part of a split data.root scans the folder the train part scanned: its notes are recorded once.
    notes = [] if part == "eval" and split_by_name else skipped
    images_dir, labels_dir = root / "images", root / "labels"
    paths, ignored = scan_folder(images_dir, "data.eval_root" if part == "eval" and cfg.eval_root else "data.root")
    notes += ignored
    if not paths:
        raise io.InputError(f"{images_dir}: no images found (expected {'/'.join(e[1:] for e in io.IMAGE_EXTS)} files"
                            + (f"; {len(ignored)} other files ignored, e.g. {ignored[0][0]})" if ignored else ")"))

    def bad(file: Path, reason: str, to: list) -> None:
        if cfg.on_bad_image == "error":
            raise io.InputError(f"{reason} (set data.on_bad_image: skip to record such files in skipped.csv and go on)")
        to.append((str(file), reason))

    seen: dict[str, Path] = {}
    unique = []
    for path in paths:
        name = folder_name(path.relative_to(images_dir))
        if name in seen:
            bad(path, f"{path}: flattens to the name {name!r} that {seen[name]} already has "
                      "(rename one; nested folders are joined with '__')", notes)
            continue
        seen[name] = path
        if not split_by_name or in_eval_split(name, cfg.eval_fraction) == (part == "eval"):
            unique.append(path)
    cap = cfg.max_images if part == "train" else cfg.max_eval_images
    used = 0
    for path in unique:
        if cap and used == cap:  # the first max_images good images
            break
        rel = path.relative_to(images_dir)
        try:
            image = io.read_image(path)
            if min(image.shape[:2]) < cfg.min_image_side:
                raise io.InputError(f"{path}: image is {image.shape[1]}x{image.shape[0]} pixels, smaller than "
                                    f"data.min_image_side ({cfg.min_image_side})")
        except io.InputError as e:
            bad(path, str(e), skipped)
            continue
        label = None
        if labels_dir.is_dir():
            label_path = labels_dir / rel.with_suffix(".png")

            def read(label_path=label_path, path=path) -> np.ndarray:
                if not label_path.is_file():
                    raise io.InputError(f"{label_path}: label file missing for image {path}")
                return io.read_label(label_path)

            label = label_or_none(read, image.shape, cfg.num_classes, label_path, path, skipped)
        used += 1
        yield Sample(folder_name(rel), resize_image(image, cfg.image_size, patch), label, image.shape[:2])


def voc2012(cfg: DataConfig, split: str, max_images: int, skipped: list[tuple[str, str]] | None = None, *,
            patch: int = 1) -> Iterator[Sample]:
    """The `split` images of the VOCdevkit at `cfg.root` (the first `max_images`; 0 = all), palette ground truth
    as class indices (255 ignore) at the original size; a bad label is left out and recorded in `skipped`."""
    skipped = [] if skipped is None else skipped
    files = voc.split_files(cfg.root, split, cfg.download)
    if max_images:
        files = files[:max_images]
    for name, image_path, label_path in files:
        image = io.read_image(image_path)
        label = label_or_none(lambda: voc.read_label(label_path), image.shape, cfg.num_classes, label_path,
                              image_path, skipped)
        yield Sample(name, resize_image(image, cfg.image_size, patch), label, image.shape[:2])


@functools.lru_cache(maxsize=2)
def coco_index(root: str, split: str) -> coco.COCO:
    """The pycocotools index of `root`'s instances_<split>2017.json, read once per process."""
    return coco.load_index(root, split)


def coco_ids(cfg: DataConfig, split: str | None = None, max_images: int | None = None) -> list[int]:
    """The COCO image ids the prepare stage uses from `split` (default data.split): sorted, the first
    `max_images` (default data.max_images; 0 = all)."""
    split = cfg.split if split is None else split
    return coco.image_ids(coco_index(cfg.root, split), cfg.max_images if max_images is None else max_images)


def coco2017(cfg: DataConfig, split: str, max_images: int, skipped: list[tuple[str, str]] | None = None, *,
             patch: int = 1) -> Iterator[Sample]:
    """COCO `split`2017 images (the first `max_images` ids) with semantic maps at the original size: 0 background,
    1..80 things, 255 crowd; a map that does not fit its image is left out and recorded in `skipped`."""
    skipped = [] if skipped is None else skipped
    index = coco_index(cfg.root, split)
    cat_map = coco.category_ids(index)
    for img_id in coco_ids(cfg, split, max_images):
        path = coco.image_path(cfg.root, split, index, img_id)
        image = io.read_image(path)
        label = label_or_none(lambda: coco.semantic_map(index, img_id, cat_map), image.shape, cfg.num_classes,
                              coco.annotation_file(cfg.root, split), path, skipped)
        yield Sample(coco.sample_name(index, img_id), resize_image(image, cfg.image_size, patch), label,
                     image.shape[:2])


def coco_instances(cfg: DataConfig) -> dict:
    """The instance ground truth of the prepared TRAINING images (data.split, the proposals' images), COCO format
    at the ORIGINAL image size, for the proposals' mask AP50."""
    index = coco_index(cfg.root, cfg.split)
    ids = coco_ids(cfg)
    return coco.instances(index, ids, [coco.sample_name(index, i) for i in ids])


def load(cfg: DataConfig, seed: int, skipped: list[tuple[str, str]] | None = None, *,
         patch: int = 1) -> Iterator[Sample]:
    """The TRAINING split of the dataset named by `cfg.name`: synthetic (data.synth_images from `seed`), folder
    (data.root less what eval_fraction holds out), voc2012 / coco (data.split). `patch`: the backbone's patch size.
    Files left out and labels left out of evaluation are appended to `skipped` as (file, reason)."""
    if cfg.name == "synthetic":
        return synthetic(cfg, seed)
    if cfg.name == "folder":
        return folder(cfg, skipped, patch=patch)
    return {"voc2012": voc2012, "coco": coco2017}[cfg.name](cfg, cfg.split, cfg.max_images, skipped, patch=patch)


def load_eval(cfg: DataConfig, seed: int, split: str, skipped: list[tuple[str, str]] | None = None, *,
              patch: int = 1) -> Iterator[Sample]:
    """The EVALUATION split, held out from `load`'s: synthetic (data.synth_eval_images from a second stream of
    `seed`), folder (data.eval_root, or the share data.eval_fraction of data.root), voc2012 / coco (`split`, which is
    evaluate.split, the first data.max_eval_images). Empty when the dataset has none ('' / 0)."""
    if cfg.name == "synthetic":
        return synthetic(cfg, seed, "eval")
    if cfg.name == "folder":
        return folder(cfg, skipped, patch=patch, part="eval")
    if not split:
        return iter(())
    return {"voc2012": voc2012, "coco": coco2017}[cfg.name](cfg, split, cfg.max_eval_images, skipped, patch=patch)


def class_names(cfg: DataConfig) -> list[str]:
    """Ground-truth class names (synthetic, voc2012, coco) or class_0..class_{C-1} (folder)."""
    if cfg.name == "synthetic":
        return list(synth.CLASS_NAMES)
    if cfg.name == "voc2012":
        return list(voc.CLASS_NAMES)
    if cfg.name == "coco":
        return coco.class_names(coco_index(cfg.root, cfg.split))
    return [f"class_{i}" for i in range(cfg.num_classes)]
