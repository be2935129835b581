"""What the video objectives (temporal_order, tracking) share: the frame grouping, motion between kept frames,
crops that cover the same box in every frame of a tuple, and channel splitting.

Videos arrive as a list of int64 arrays, one per video, holding the dataset indices of its kept frames in time
order (`pipeline.data.video.frame_indices` builds it from the prepare stage's manifest).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import ConfigError, MotionConfig
from pipeline.data.flow import camera_residual, dense_flow


def require_videos(videos: list[np.ndarray] | None, method: str, min_frames: int) -> list[np.ndarray]:
    """The videos with at least `min_frames` kept frames; a ConfigError naming the fix when there are none."""
    if not videos:
        raise ConfigError(f"params: 'pretrain.method' is {method}, a video objective, but the prepared dataset has "
                          "no videos (manifest.json lists none); set data.name to synthetic_video or video, "
                          "or choose another pretrain.method")
    usable = [np.asarray(v, dtype=np.int64) for v in videos if len(v) >= min_frames]
    if not usable:
        longest = max(len(v) for v in videos)
        raise ConfigError(f"params: 'pretrain.method' {method} needs videos of at least {min_frames} kept frames; "
                          f"the longest has {longest} (raise video.synth_frames or video.max_frames, or lower "
                          "video.stride)")
    return usable


def video_of_frame(videos: list[np.ndarray], n: int) -> np.ndarray:
    """(N,) int64: for each of the n dataset images the position of its video in `videos`, -1 for none."""
    out = np.full(n, -1, np.int64)
    for v, frames in enumerate(videos):
        out[frames] = v
    return out


def residual_from_flow(flow: np.ndarray, cfg: MotionConfig) -> np.ndarray | None:
    """Flow (H, W, 2) -> (H, W) float32 residual motion against the camera (`flow.camera_residual`), or None
    when the camera fit explains less than cfg.min_inliers of the grid (then nothing tells objects apart)."""
    fit = camera_residual(flow, cfg)
    return None if fit is None else fit[0]


def to_numpy_frames(data: torch.Tensor, idx: np.ndarray) -> np.ndarray:
    """Dataset images (N, 3, H, W) uint8 (any device) at idx -> (len(idx), H, W, 3) uint8 numpy, for OpenCV."""
    sel = data[torch.as_tensor(idx, device=data.device)]
    return np.ascontiguousarray(sel.permute(0, 2, 3, 1).cpu().numpy())


def frame_motion(data: torch.Tensor, videos: list[np.ndarray], cfg: MotionConfig) -> np.ndarray:
    """(N,) float32 mean residual motion of each frame against the camera, from the flow to its next kept frame
    (the last frame: to its previous one); 0 for frames without a camera fit or outside every video."""
    out = np.zeros(len(data), np.float32)
    for frames in videos:
        if len(frames) < 2:
            continue
        imgs = to_numpy_frames(data, frames)
        for t in range(len(frames)):
            other = t + 1 if t + 1 < len(frames) else t - 1
            res = residual_from_flow(dense_flow(imgs[t], imgs[other], cfg), cfg)
            out[frames[t]] = 0.0 if res is None else float(res.mean())
    return out


def crop_boxes(count: int, h: int, w: int, scale_min: float, gen: torch.Generator | None = None) -> torch.Tensor:
    """(count, 3) int64 square boxes (y, x, side) inside an h x w frame, of area share uniform in [scale_min, 1]
    of the largest square."""
    full = min(h, w)
    share = scale_min + (1 - scale_min) * torch.rand(count, generator=gen)
    side = (full * share.sqrt()).round().long().clamp(1, full)
    y = (torch.rand(count, generator=gen) * (h - side + 1)).long()
    x = (torch.rand(count, generator=gen) * (w - side + 1)).long()
    return torch.stack([y, x, side], 1)


def jitter_boxes(boxes: torch.Tensor, frames: int, jitter: int, h: int, w: int,
                 gen: torch.Generator | None = None) -> torch.Tensor:
    """Boxes (B, 3) -> (B, frames, 3): the same box in every frame, each shifted by its own offset in
    [-jitter, jitter] per axis and clamped inside the h x w frame."""
    out = boxes[:, None, :].repeat(1, frames, 1)
    if jitter > 0:
        shift = torch.randint(-jitter, jitter + 1, (len(boxes), frames, 2), generator=gen)
        side = out[..., 2]
        out[..., 0] = (out[..., 0] + shift[..., 0]).clamp(min=torch.zeros_like(side), max=h - side)
        out[..., 1] = (out[..., 1] + shift[..., 1]).clamp(min=torch.zeros_like(side), max=w - side)
    return out


def cut_and_resize(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Images (M, 3, H, W) float and boxes (M, 3) (y, x, side) -> (M, 3, size, size): each box resized
    (bilinear, antialiased; no resampling when side == size)."""
    out = []
    for im, (y, x, s) in zip(images, boxes.tolist()):
        crop = im[None, :, y:y + s, x:x + s]
        if s != size:
            crop = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(crop)
    return torch.cat(out)


def channel_split(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Frames (M, 3, h, w) -> each frame shows one random colour channel copied to all three (Lee et al. 2017's
    channel splitting, against chromatic-aberration and colour shortcuts)."""
    keep = torch.randint(0, 3, (len(x),), generator=gen).to(x.device)
    return x[torch.arange(len(x), device=x.device), keep][:, None].expand(-1, 3, -1, -1)
