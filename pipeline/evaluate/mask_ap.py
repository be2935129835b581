"""Class-agnostic mask AP at IoU 0.5 by pycocotools' COCOeval: of object masks against COCO's own instances or,
for a ground truth without instances of its own (folder, VOC, synthetic sets), against the 8-connected components
of each ground-truth class.

Masks come as index maps (0 none, i = mask i, scored scores[i - 1]); each image's masks and instances are
run-length encoded as it is read (pycocotools.mask.encode), so only the RLEs are held, never the maps:

    dets[name] = detections(det_map, scores, gt != IGNORE)        # one image at a time
    insts.append((name, gt.shape, component_instances(gt)))
    ap50(ground_truth(insts), dets)                               # None: no instance anywhere
"""
from __future__ import annotations

import contextlib
import io as _stdio
from collections.abc import Iterable, Mapping
from pathlib import Path

import cv2
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline.data.coco import encode
from pipeline.io import IGNORE

CATEGORY = {"id": 1, "name": "object"}  # the one category of the components' ground truth


def instance_map(gt: np.ndarray) -> tuple[np.ndarray, int]:
    """A (H, W) uint8 class map (0 background, 255 ignore) -> ((H, W) int32 instance ids: 0 none, 1..K the
    8-connected components of each class > 0, class by class (components in cv2.connectedComponents' order), K)."""
    out, n = np.zeros(gt.shape, np.int32), 0
    for c in np.unique(gt):
        if c == 0 or c == IGNORE:
            continue
        k, comp = cv2.connectedComponents((gt == c).astype(np.uint8), connectivity=8)
        out[comp > 0] = comp[comp > 0] + n
        n += k - 1
    return out, n


def component_instances(gt: np.ndarray) -> list[dict]:
    """A (H, W) uint8 class map -> its instances (`instance_map`, in its order) as COCO annotations without ids:
    [{"segmentation": RLE, "area": pixels, "iscrowd": 0}]."""
    inst, n = instance_map(gt)
    masks = (inst == j for j in range(1, n + 1))
    return [{"segmentation": encode(m), "area": float(m.sum()), "iscrowd": 0} for m in masks]


def detections(det_map: np.ndarray, scores: list[float], keep: np.ndarray | None) -> list[dict]:
    """One image's masks, a (H, W) index map and the scores of masks 1, 2, ..., -> [{"segmentation": RLE, "score"}]
    of each mask with at least one pixel, by id. keep: (H, W) bool or None; pixels outside it are cleared before
    encoding, so IoU counts only kept pixels (ground truth 255 left out), and a mask lying wholly outside stays a
    (then empty) detection: a false positive."""
    out = []
    for i, s in enumerate(scores, start=1):
        mask = det_map == i
        if mask.any():
            out.append({"segmentation": encode(mask if keep is None else mask & keep), "score": float(s)})
    return out


def ground_truth(images: Iterable[tuple[str, tuple[int, int], list[dict]]]) -> dict:
    """(name, (H, W), instances from `component_instances`) per image -> a COCO instances dict: images 1..N named
    <name>.png, annotations 1..M, all of one category."""
    out = {"images": [], "annotations": [], "categories": [CATEGORY]}
    for k, (name, (h, w), insts) in enumerate(images, start=1):
        out["images"].append({"id": k, "file_name": f"{name}.png", "height": int(h), "width": int(w)})
        out["annotations"] += [{**a, "id": len(out["annotations"]) + j, "image_id": k, "category_id": CATEGORY["id"]}
                               for j, a in enumerate(insts, start=1)]
    return out


def ap50(gt: dict, dets: Mapping[str, list[dict]]) -> float | None:
    """Class-agnostic mask AP at IoU 0.5 of detections {name: `detections` of that image} against a COCO instances
    dict (images named <name>.png) by COCOeval: useCats 0, iouThrs [0.5], one area range (all), every detection of
    an image counted (maxDets = their number), crowd instances ignored as COCO does; 101-point interpolated.
    -> float in [0, 1]; 0.0 without detections; None without a non-crowd instance."""
    if not any(not a["iscrowd"] for a in gt["annotations"]):
        return None
    ids = {Path(im["file_name"]).stem: im["id"] for im in gt["images"]}
    cat = gt["categories"][0]["id"]
    results = [{**d, "image_id": ids[name], "category_id": cat} for name, ds in dets.items() for d in ds]
    if not results:
        return 0.0
    with contextlib.redirect_stdout(_stdio.StringIO()):  # pycocotools prints progress lines
        cg = COCO()
        cg.dataset = gt
        cg.createIndex()
        ev = COCOeval(cg, cg.loadRes(results), iouType="segm")
        ev.params.useCats = 0
        ev.params.iouThrs = np.array([0.5])
        ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
        ev.params.maxDets = [len(results)]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][0, :, 0, 0, 0]  # (101 recall points,) of the one threshold, area and maxDets
    return float(precision.mean())
