"""COCO 2017 instances through pycocotools: semantic maps (80 things + background, crowd ignored) and the
instance ground truth of the prepared images (scored by pipeline/evaluate/mask_ap.py).

Layout: <root>/annotations/instances_<split>2017.json and <root>/<split>2017/<file_name>.
"""
from __future__ import annotations

import contextlib
import io as _stdio
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from pipeline import io

NUM_CLASSES = 81  # background 0 + 80 thing categories


def annotation_file(root: str | Path, split: str) -> Path:
    return Path(root) / "annotations" / f"instances_{split}2017.json"


def load_index(root: str | Path, split: str) -> COCO:
    """The split's instances file -> pycocotools COCO index. Missing file = InputError saying where it goes."""
    path = annotation_file(root, split)
    if not path.is_file():
        raise io.InputError(f"{path}: not found. Put COCO 2017 under data.root as annotations/instances_{split}2017.json "
                            f"and {split}2017/*.jpg (annotations_trainval2017.zip and {split}2017.zip from cocodataset.org)")
    with contextlib.redirect_stdout(_stdio.StringIO()):  # pycocotools prints timing lines
        return COCO(str(path))


def category_ids(coco: COCO) -> dict[int, int]:
    """COCO category id -> contiguous class 1..80 (sorted by COCO id; 0 is background)."""
    cats = sorted(coco.getCatIds())
    if len(cats) != NUM_CLASSES - 1:
        raise io.InputError(f"the annotation file has {len(cats)} categories; COCO instances have {NUM_CLASSES - 1}")
    return {c: i + 1 for i, c in enumerate(cats)}


def class_names(coco: COCO) -> list[str]:
    """['background', 80 category names in contiguous order]."""
    return ["background"] + [coco.cats[c]["name"] for c in sorted(coco.getCatIds())]


def image_ids(coco: COCO, max_images: int) -> list[int]:
    """Image ids sorted ascending, the first `max_images` of them (0 = all)."""
    ids = sorted(coco.getImgIds())
    return ids[:max_images] if max_images else ids


def semantic_map(coco: COCO, img_id: int, cat_map: dict[int, int]) -> np.ndarray:
    """One image's annotations -> (H, W) uint8: 0 background, 1..80 things, 255 crowd.

    Crowd regions are painted first (255), then every non-crowd instance over them, largest first, so a
    smaller object lying on a larger one stays visible and a labelled instance inside a crowd keeps its class.
    """
    info = coco.imgs[img_id]
    out = np.zeros((info["height"], info["width"]), np.uint8)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id], iscrowd=None))
    for a in anns:
        if a.get("iscrowd", 0):
            out[coco.annToMask(a).astype(bool)] = io.IGNORE
    for a in sorted((a for a in anns if not a.get("iscrowd", 0)), key=lambda a: -a["area"]):
        out[coco.annToMask(a).astype(bool)] = cat_map[a["category_id"]]
    return out


def image_path(root: str | Path, split: str, coco: COCO, img_id: int) -> Path:
    return Path(root) / f"{split}2017" / coco.imgs[img_id]["file_name"]


def sample_name(coco: COCO, img_id: int) -> str:
    """The prepared name of an image: its file name without extension (000000000139)."""
    return Path(coco.imgs[img_id]["file_name"]).stem


def encode(mask: np.ndarray) -> dict:
    """(H, W) bool -> COCO RLE with a JSON-ready string 'counts'."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def instances(coco: COCO, ids: list[int], names: list[str]) -> dict:
    """The instance ground truth of the prepared images at their ORIGINAL size (the size evaluate scores at) as a
    COCO instances dict: images named by `names` with ids 1..N, RLE masks, iscrowd and COCO category ids kept."""
    images, anns = [], []
    for k, (img_id, name) in enumerate(zip(ids, names), start=1):
        info = coco.imgs[img_id]
        images.append({"id": k, "file_name": f"{name}.png", "height": info["height"], "width": info["width"]})
        for a in coco.loadAnns(coco.getAnnIds(imgIds=[img_id], iscrowd=None)):
            m = coco.annToMask(a).astype(bool)
            if not m.any():
                continue
            rle = encode(m)
            anns.append({"id": len(anns) + 1, "image_id": k, "category_id": a["category_id"],
                         "iscrowd": int(a.get("iscrowd", 0)), "segmentation": rle,
                         "area": float(mask_utils.area(rle)), "bbox": mask_utils.toBbox(rle).tolist()})
    cats = [coco.cats[c] for c in sorted(coco.getCatIds())]
    return {"images": images, "annotations": anns, "categories": cats}

