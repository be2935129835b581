"""MaskDistill's distillation, the label-free rules around the detector (pipeline.train.detector): the proposals
as detector targets, and which detections become an image's masks.

MaskDistill (wvangansbeke/MaskDistill, `gen_segmentation.py`, `get_confident_predictions`) keeps, per image, every
detection scoring at least the threshold (0.9) and, when none does, the top one alone; then paints the kept masks
into one segmentation map, best first. Departures, and why:
- at most `max_per_image` masks (the masks are ids of a uint8 index map; MaskDistill keeps them all);
- a mask scoring below another is painted only on the pixels no better mask covers, and dropped when none is left.
  MaskDistill means to skip any mask overlapping one already painted (its test indexes the map with the 0/1 mask
  as integers, so in effect it looks at the map's first two rows); keeping the free pixels loses less.
"""
from __future__ import annotations

import numpy as np

MASK_THRESHOLD = 0.5  # a pixel is in a predicted mask when its probability is >= this (detectron2's paste rule)


def instance_masks(mask_map: np.ndarray, n: int) -> np.ndarray:
    """An index map (H, W) (0 none, i = mask i) with masks 1..n -> (m, H, W) bool, the non-empty ones in id order."""
    masks = np.stack([mask_map == i for i in range(1, n + 1)]) if n else np.zeros((0,) + mask_map.shape, bool)
    return masks[masks.any(axis=(1, 2))]


def boxes(masks: np.ndarray) -> np.ndarray:
    """(M, H, W) bool, each non-empty -> (M, 4) float32 boxes x0, y0, x1, y1 in pixel edges (x1 = last column + 1),
    the boxes torchvision's detectors take."""
    out = np.zeros((len(masks), 4), np.float32)
    for k, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        out[k] = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    return out


def confident(scores: np.ndarray, min_score: float) -> np.ndarray:
    """(N,) detection scores -> indices of the kept ones, best first (stable among equal scores): every detection
    scoring >= min_score, or the top one alone when none does (MaskDistill's get_confident_predictions); empty
    only when there is no detection."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    keep = order[np.asarray(scores)[order] >= min_score]
    return keep if len(keep) else order[:1]


def paint(masks: np.ndarray, order: np.ndarray, max_masks: int,
          threshold: float = MASK_THRESHOLD) -> tuple[np.ndarray, list[int]]:
    """Mask probabilities (N, H, W) float and the detections to paint, best first -> (index map (H, W) uint8:
    0 none, i = the i-th painted mask; the detection index of each id). Each mask takes its pixels >= threshold
    that no better mask took; one left with no pixel gets no id; painting stops after max_masks ids."""
    out = np.zeros(masks.shape[1:], np.uint8)
    taken: list[int] = []
    for j in order:
        if len(taken) == max_masks:
            break
        free = (masks[j] >= threshold) & (out == 0)
        if free.any():
            taken.append(int(j))
            out[free] = len(taken)
    return out, taken


def select(scores: np.ndarray, masks: np.ndarray, min_score: float, max_masks: int) -> tuple[np.ndarray, list[int]]:
    """One image's detections, scores (N,) and mask probabilities (N, H, W) -> (index map (H, W) uint8, detection
    index of each id 1..): `confident` then `paint`."""
    return paint(masks, confident(scores, min_score), max_masks)
