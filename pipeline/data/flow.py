"""Dense optical flow between video frames and the camera's own motion in it.

One place for what both the motion proposals (`pipeline.method.motion`) and the video pretext objectives
(`pipeline.backbone.pretext`) measure on frames: OpenCV flow (DIS or Farneback), the dominant (camera) motion
fitted with RANSAC on a grid, and the residual flow once the camera is subtracted.
"""
from __future__ import annotations

import cv2
import numpy as np

from pipeline.config import MotionConfig


def dense_flow(a: np.ndarray, b: np.ndarray, cfg: MotionConfig) -> np.ndarray:
    """Frames (H, W, 3) uint8 RGB a, b -> (H, W, 2) float32 flow with a(p) ~ b(p + flow(p)), (dx, dy).

    DIS (Kroeger et al. 2016) from OpenCV's medium preset with the patch settings of cfg, or Farneback
    (pyramid 0.5 x 3 levels, 3 iterations, polynomial n = 5, sigma = 1.1, OpenCV's documented choice)."""
    ga, gb = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
    if cfg.flow == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        dis.setFinestScale(cfg.dis_finest_scale)
        dis.setPatchSize(cfg.dis_patch_size)
        dis.setPatchStride(cfg.dis_patch_stride)
        return dis.calc(ga, gb, None)
    if cfg.flow == "farneback":
        return cv2.calcOpticalFlowFarneback(ga, gb, None, 0.5, 3, cfg.farneback_window, 3, 5, 1.1, 0)
    raise ValueError(f"dense_flow: unknown method {cfg.flow!r} (dis | farneback)")


def fit_camera(flow: np.ndarray, step: int, model: str, ransac_threshold: float) -> tuple[np.ndarray | None, float]:
    """Flow (H, W, 2) -> (3, 3) transform p -> p + flow(p) of the dominant motion, fitted with RANSAC on a
    grid of points every `step` pixels, and the share of grid points it explains (None, 0.0 when no fit)."""
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[step // 2:h:step, step // 2:w:step]
    src = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
    dst = src + flow[ys.ravel(), xs.ravel()]
    if len(src) < 8:
        return None, 0.0
    if model == "homography":
        m, inl = cv2.findHomography(src, dst, cv2.RANSAC, ransac_threshold)
    elif model == "affine":
        a, inl = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=ransac_threshold)
        m = None if a is None else np.vstack([a, [0, 0, 1]])
    else:
        raise ValueError(f"fit_camera: unknown model {model!r} (homography | affine)")
    if m is None or inl is None:
        return None, 0.0
    return m.astype(np.float64), float(inl.mean())


def camera_flow(m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(3, 3) transform and frame shape (H, W) -> (H, W, 2) float32 flow the transform alone induces."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    pts = np.stack([xs, ys], -1).reshape(-1, 1, 2)
    moved = cv2.perspectiveTransform(pts, m).reshape(h, w, 2)
    return moved - np.stack([xs, ys], -1)


def camera_residual(flow: np.ndarray, cfg: MotionConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """Flow (H, W, 2) -> ((H, W) float32 magnitude of the flow minus the fitted camera motion in pixels, (H, W, 2)
    the camera's flow), or None when the camera fit explains less than cfg.min_inliers of the grid."""
    m, share = fit_camera(flow, cfg.grid_step, cfg.camera, cfg.ransac_threshold)
    if m is None or share < cfg.min_inliers:
        return None
    cam = camera_flow(m, flow.shape[:2])
    return np.linalg.norm(flow - cam, axis=2).astype(np.float32), cam
