"""Object masks from motion (Pathak et al. 2017): what moves against the camera's motion is an object.

Per frame: dense optical flow (OpenCV DIS or Farneback) to each neighbouring sampled frame of its video;
the dominant (camera) motion fitted robustly to the flow on a grid of points (homography or affine,
RANSAC) and subtracted; the residual magnitude is the frame's independent motion. With two neighbours the
per-pixel minimum of the two residuals is kept: a background pixel that the object covers in the next frame
has a wrong forward flow but a right backward one, so the minimum stops masks from bleeding along the
direction of motion. Pixels that the camera carries out of the other frame are not judged by it. Residual
above `threshold` pixels, opened and closed, split into connected components; components of at least
`min_area` of the frame are masks, scored by their motion contrast, optionally refined with GrabCut.
Then `combine` merges the masks of several sources (saliency, motion) into one exclusive mask map.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.config import MotionConfig
from pipeline.data.flow import camera_residual, dense_flow
from pipeline.method.proposals import grabcut_refine, iou


@dataclass
class MotionMask:
    """One independently moving region: (H, W) bool mask, its score in [0, 1], its mean residual (px)."""

    mask: np.ndarray
    score: float
    residual: float


def residual_motion(frame: np.ndarray, neighbours: list[np.ndarray], cfg: MotionConfig) -> np.ndarray | None:
    """Frame (H, W, 3) uint8 and its neighbouring sampled frames -> (H, W) float32 independent motion in pixels
    (per-pixel minimum over the neighbours whose camera fit explains at least cfg.min_inliers of the grid), or
    None when no neighbour gives a camera fit (nothing can be told apart from the camera's own motion)."""
    h, w = frame.shape[:2]
    best = np.full((h, w), np.inf, np.float32)
    fitted = False
    ys, xs = np.mgrid[0:h, 0:w]
    for other in neighbours:
        fit = camera_residual(dense_flow(frame, other, cfg), cfg)
        if fit is None:
            continue
        fitted = True
        res, cam = fit
        tx, ty = xs + cam[..., 0], ys + cam[..., 1]
        inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)  # still in view in the other frame
        best = np.where(inside, np.minimum(best, res), best)
    if not fitted:
        return None
    return np.where(np.isfinite(best), best, 0.0).astype(np.float32)


def group_masks(residual: np.ndarray, cfg: MotionConfig) -> list[MotionMask]:
    """Residual motion (H, W) float32 -> up to cfg.max_per_image masks of connected moving pixels, best first.

    Score = motion contrast 1 - (median residual outside every mask) / (mean residual inside), in [0, 1].
    """
    h, w = residual.shape
    moving = (residual > cfg.threshold).astype(np.uint8)
    if cfg.morph > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (cfg.morph, cfg.morph))
        moving = cv2.morphologyEx(cv2.morphologyEx(moving, cv2.MORPH_OPEN, k), cv2.MORPH_CLOSE, k)
    n, lab = cv2.connectedComponents(moving, connectivity=8)
    comps = [lab == i for i in range(1, n) if (lab == i).sum() >= cfg.min_area * h * w]
    if not comps:
        return []
    rest = ~np.any(comps, axis=0)
    floor = float(np.median(residual[rest])) if rest.any() else 0.0
    out = []
    for c in comps:
        inside = float(residual[c].mean())
        out.append(MotionMask(c, float(np.clip(1 - floor / max(inside, 1e-6), 0, 1)), inside))
    out.sort(key=lambda m: -m.score)
    return out[:cfg.max_per_image]


def frame_masks(frame: np.ndarray, neighbours: list[np.ndarray], cfg: MotionConfig) -> tuple[list[MotionMask], np.ndarray]:
    """Frame (H, W, 3) uint8 and its neighbouring sampled frames (1 or 2) -> (motion masks best first,
    residual (H, W) float32; all zeros when no camera fit was possible, and then no masks)."""
    residual = residual_motion(frame, neighbours, cfg)
    if residual is None:
        return [], np.zeros(frame.shape[:2], np.float32)
    masks = group_masks(residual, cfg)
    if cfg.refine == "grabcut":
        for m in masks:
            m.mask = grabcut_refine(frame, m.mask, cfg.refine_band, cfg.refine_iters)
    return [m for m in masks if m.mask.sum() >= cfg.min_area * frame.shape[0] * frame.shape[1]], residual


def residual_picture(residual: np.ndarray, threshold: float) -> np.ndarray:
    """Residual motion (H, W) -> (H, W, 3) uint8 RGB heat map, saturating at 4 x threshold."""
    v = np.clip(residual / (4 * threshold), 0, 1)
    return cv2.applyColorMap((255 * v).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1].copy()


def combine(sources: list[list[tuple[np.ndarray, float]]], shape: tuple[int, int], nms_iou: float,
            min_pixels: list[int]) -> tuple[np.ndarray, list[tuple[int, int, float]]]:
    """Masks of several sources, each a list of ((H, W) bool, score) best first, the first source ranking
    highest, on frames of `shape` (H, W) -> ((H, W) uint8 map, 0 none, i = i-th kept mask;
    [(source index, index in its list, score)] of the kept masks).

    A mask overlapping an already kept one with IoU above nms_iou is dropped; otherwise it takes the pixels
    no kept mask holds, and is dropped when fewer than its source's min_pixels remain. At most 254 masks."""
    out = np.zeros(shape, np.uint8)
    kept_masks: list[np.ndarray] = []
    kept: list[tuple[int, int, float]] = []
    for s, src in enumerate(sources):
        for j, (mask, score) in enumerate(src):
            if len(kept) == 254 or any(iou(mask, k) > nms_iou for k in kept_masks):
                continue
            free = mask & (out == 0)
            if free.sum() < max(min_pixels[s], 1):
                continue
            kept_masks.append(mask)
            kept.append((s, j, score))
            out[free] = len(kept)
    return out, kept
