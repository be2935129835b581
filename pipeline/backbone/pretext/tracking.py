"""Tracking (Wang & Gupta 2015): patches tracked through a video should stay close in feature space.

Before training, from the uint8 frames: dense optical flow (`pipeline.data.flow.dense_flow`) between consecutive
kept frames, the camera's motion fitted and removed; query patches are started where the residual motion
is largest (on moving objects; a random patch where nothing moves) and followed through `track_frames`
kept frames by chaining the flow (each step moves the patch by the median flow of its moving pixels, or of
all its pixels when the patch itself is not moving); a track leaving the frame is dropped. Training pulls
the first patch (anchor) and the tracked one (positive) together and pushes a random patch of another video
(negative) away with the paper's ranking loss max(0, D(a, p) - D(a, n) + margin), D = 1 - cosine of the
embeddings (backbone class token -> MLP). From `hard_after_epochs` on, each anchor instead takes the
`hard_negatives` hardest among its own negative and the batch's patches of other videos (the paper's hard
negative mining). `negatives: same_frame` (not in the paper) takes the negative from the positive's own frame,
away from it: the embedding must then tell the object from its surroundings, not one video from another.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.backbone.factory import normalize
from pipeline.backbone.pretext import frames as fr
from pipeline.backbone.pretext.common import Objective, check_multiple, embed, mlp
from pipeline.config import MotionConfig, TrackingConfig
from pipeline.data.flow import dense_flow


@dataclass
class Tracks:
    """M tracked patches: video (M,), anchor / positive dataset frame (M,), their top-left corners (M, 2)
    (y, x) int64, and whether the track started on independent motion (M,) bool."""

    video: np.ndarray
    anchor_frame: np.ndarray
    anchor_yx: np.ndarray
    positive_frame: np.ndarray
    positive_yx: np.ndarray
    moving: np.ndarray

    def __len__(self) -> int:
        return len(self.video)


def box_means(residual: np.ndarray, patch: int) -> np.ndarray:
    """(H, W) -> (H - patch + 1, W - patch + 1) float64: mean of the patch x patch box at each top-left."""
    s = cv2.integral(residual.astype(np.float64))
    return (s[patch:, patch:] - s[:-patch, patch:] - s[patch:, :-patch] + s[:-patch, :-patch]) / (patch * patch)


def query_patches(residual: np.ndarray, patch: int, count: int, threshold: float,
                  rng: np.random.Generator) -> list[tuple[int, int, bool]]:
    """Residual motion (H, W) -> up to `count` non-overlapping patches (top-left y, x, True) whose mean residual
    exceeds `threshold`, strongest first; when none does, one random patch (y, x, False)."""
    m = box_means(residual, patch)
    out: list[tuple[int, int, bool]] = []
    while len(out) < count:
        y, x = np.unravel_index(int(np.argmax(m)), m.shape)
        if m[y, x] <= threshold:
            break
        out.append((int(y), int(x), True))
        m[max(y - patch + 1, 0):y + patch, max(x - patch + 1, 0):x + patch] = -np.inf
    if out:
        return out
    h, w = residual.shape
    return [(int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1)), False)]


def track_patch(flows: list[np.ndarray], residuals: list[np.ndarray | None], y: int, x: int, patch: int,
                threshold: float) -> list[tuple[float, float]] | None:
    """Follow the patch with top-left (y, x) through consecutive flows (each (H, W, 2), frame t -> t + 1) ->
    its top-left in every frame [(y0, x0), ...] (len(flows) + 1 of them), or None when it leaves the frame.

    Each step moves the patch by the median flow over its pixels whose residual exceeds `threshold` when the
    patch's mean residual does (it sits on a moving object), else over all its pixels."""
    h, w = flows[0].shape[:2]
    pos = [(float(y), float(x))]
    cy, cx = float(y), float(x)
    for flow, res in zip(flows, residuals):
        iy, ix = int(round(cy)), int(round(cx))
        f = flow[iy:iy + patch, ix:ix + patch].reshape(-1, 2)
        if res is not None:
            r = res[iy:iy + patch, ix:ix + patch].reshape(-1)
            if r.mean() > threshold:
                f = f[r > threshold]
        cx += float(np.median(f[:, 0]))
        cy += float(np.median(f[:, 1]))
        if not (0 <= round(cy) <= h - patch and 0 <= round(cx) <= w - patch):
            return None
        pos.append((cy, cx))
    return pos


def build_tracks(data: torch.Tensor, videos: list[np.ndarray], cfg: TrackingConfig, motion: MotionConfig,
                 seed: int) -> Tracks:
    """Frames (N, 3, H, W) uint8 and videos (time-ordered dataset indices) -> every track: from each frame that
    has min(track_frames, len(video) - 1) frames after it, its query patches followed that far."""
    rng = np.random.default_rng(seed)
    rows: list[tuple] = []
    for v, seq in enumerate(videos):
        imgs = fr.to_numpy_frames(data, seq)
        flows = [dense_flow(imgs[t], imgs[t + 1], motion) for t in range(len(seq) - 1)]
        residuals = [fr.residual_from_flow(f, motion) for f in flows]
        k = min(cfg.track_frames, len(seq) - 1)
        for t in range(len(seq) - k):
            res = residuals[t] if residuals[t] is not None else np.zeros(imgs.shape[1:3], np.float32)
            for y, x, moving in query_patches(res, cfg.patch, cfg.queries_per_frame, motion.threshold, rng):
                path = track_patch(flows[t:t + k], residuals[t:t + k], y, x, cfg.patch, motion.threshold)
                if path is None:
                    continue
                py, px = path[-1]
                rows.append((v, seq[t], y, x, seq[t + k], int(round(py)), int(round(px)), moving))
    if not rows:
        raise ValueError("tracking: every tracked patch left the frame; lower pretrain.tracking.track_frames or patch")
    a = list(zip(*rows))
    return Tracks(np.array(a[0], np.int64), np.array(a[1], np.int64), np.stack([a[2], a[3]], 1).astype(np.int64),
                  np.array(a[4], np.int64), np.stack([a[5], a[6]], 1).astype(np.int64), np.array(a[7], bool))


def apart_corner(h: int, w: int, patch: int, box: tuple[int, int], gen: torch.Generator | None = None,
                 tries: int = 50) -> tuple[int, int]:
    """A random top-left (y, x) of a patch x patch box inside h x w that does not overlap the box at `box`
    (drawn uniformly, up to `tries` times; then the frame corner farthest from it)."""
    by, bx = box
    for _ in range(tries):
        y = int(torch.randint(0, h - patch + 1, (1,), generator=gen))
        x = int(torch.randint(0, w - patch + 1, (1,), generator=gen))
        if abs(y - by) >= patch or abs(x - bx) >= patch:
            return y, x
    corners = [(0, 0), (0, w - patch), (h - patch, 0), (h - patch, w - patch)]
    return max(corners, key=lambda c: abs(c[0] - by) + abs(c[1] - bx))


def cosine_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(..., D), (..., D) -> (...): 1 - cosine similarity."""
    return 1 - (F.normalize(x, dim=-1) * F.normalize(y, dim=-1)).sum(-1)


def triplet_loss(a: torch.Tensor, p: torch.Tensor, n: torch.Tensor, margin: float,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
    """Anchors (B, D), positives (B, D), negatives (B, K, D) -> mean over the (valid (B, K) bool) pairs of
    max(0, D(a, p) - D(a, n) + margin), D = cosine distance."""
    losses = (cosine_distance(a, p)[:, None] - cosine_distance(a[:, None], n) + margin).clamp_min(0)
    if valid is None:
        return losses.mean()
    return (losses * valid).sum() / valid.sum().clamp_min(1)


def hardest_negatives(a: torch.Tensor, cands: torch.Tensor, allowed: torch.Tensor, k: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchors (B, D), candidates (C, D), allowed (B, C) bool -> (indices (B, k) of each anchor's k allowed
    candidates nearest in cosine distance (the highest losses), valid (B, k) bool: False where fewer are allowed)."""
    d = cosine_distance(a[:, None], cands[None]).masked_fill(~allowed, float("inf"))
    k = min(k, cands.shape[0])
    dist, ind = d.topk(k, dim=1, largest=False)
    return ind, torch.isfinite(dist)


class TrackingNet(Objective):
    """Backbone on each patch -> MLP embedding; ranking loss on (anchor, tracked positive, other-video negative)."""

    def __init__(self, backbone: nn.Module, cfg: TrackingConfig, image_size: int, videos: list[np.ndarray] | None,
                 motion: MotionConfig, seed: int) -> None:
        super().__init__(backbone)
        check_multiple(cfg.patch, backbone, "pretrain.tracking.patch")
        if cfg.patch > image_size:
            raise ValueError(f"params: 'pretrain.tracking.patch' is {cfg.patch}; must be <= data.image_size {image_size}")
        self.cfg = cfg
        self.motion_cfg = motion
        self.seed = seed
        self.videos = fr.require_videos(videos, "tracking", 2)
        self.head = mlp([backbone.num_features, cfg.hidden_dim, cfg.out_dim])
        self.data: torch.Tensor | None = None
        self.tracks: Tracks | None = None
        self.epoch = 0

    @torch.no_grad()
    def epoch_start(self, data: torch.Tensor, epoch: int) -> list[nn.Parameter]:
        self.data, self.epoch = data, epoch
        if self.tracks is None:
            self.tracks = build_tracks(data, self.videos, self.cfg, self.motion_cfg, self.seed)
            anchors = self.tracks.anchor_frame
            self.by_frame = {f: np.flatnonzero(anchors == f) for f in np.unique(anchors).tolist()}
            self.by_video = {v: np.flatnonzero(self.tracks.video == v) for v in np.unique(self.tracks.video).tolist()}
            self.video_of = fr.video_of_frame(self.videos, len(data))
        return []

    def sample_order(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.resize(rng.permutation(np.array(sorted(self.by_frame))), n)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised patches (B, 3, p, p) -> embeddings (B, out_dim)."""
        return self.head(embed(self.backbone, x))

    def pick(self, idx: torch.Tensor, gen: torch.Generator | None = None) -> np.ndarray:
        """Dataset indices (B,) -> (B,) track rows: one anchored at that frame, else one of its video, else any."""
        assert self.tracks is not None
        out = []
        for f in idx.tolist():
            pool = self.by_frame.get(f)
            if pool is None:
                pool = self.by_video.get(int(self.video_of[f]), np.arange(len(self.tracks)))
            out.append(int(pool[int(torch.randint(0, len(pool), (1,), generator=gen))]))
        return np.array(out, np.int64)

    def negatives(self, rows: np.ndarray, gen: torch.Generator | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Track rows (B,) -> (frame (B,), top-left (B, 2), video (B,)) of each one's negative patch.

        other_video: a random patch of a random frame of another video (of another frame of the same video when
        there is one video only); same_frame: a patch of the positive's frame that does not overlap the positive."""
        assert self.data is not None and self.tracks is not None
        t = self.tracks
        _, _, h, w = self.data.shape
        p = self.cfg.patch
        frames, yxs, vs = [], [], []
        for r in rows.tolist():
            v = int(t.video[r])
            if self.cfg.negatives == "same_frame":
                frames.append(int(t.positive_frame[r]))
                yxs.append(apart_corner(h, w, p, tuple(t.positive_yx[r].tolist()), gen))
                vs.append(v)
                continue
            others = [u for u in range(len(self.videos)) if u != v]
            if others:
                u = others[int(torch.randint(0, len(others), (1,), generator=gen))]
                pool = self.videos[u]
            else:
                u, av = v, (t.anchor_frame[r], t.positive_frame[r])
                pool = np.array([f for f in self.videos[v] if f not in av]) if len(self.videos[v]) > 2 else self.videos[v]
            frames.append(int(pool[int(torch.randint(0, len(pool), (1,), generator=gen))]))
            yxs.append((int(torch.randint(0, h - p + 1, (1,), generator=gen)),
                        int(torch.randint(0, w - p + 1, (1,), generator=gen))))
            vs.append(u)
        return np.array(frames, np.int64), np.array(yxs, np.int64).reshape(-1, 2), np.array(vs, np.int64)

    def patches(self, frames: np.ndarray, yx: np.ndarray, device: torch.device) -> torch.Tensor:
        """Frames (M,) and top-lefts (M, 2) -> normalised patches (M, 3, p, p) on `device`."""
        assert self.data is not None
        p = self.cfg.patch
        sel = self.data[torch.as_tensor(frames, device=self.data.device)]
        cut = torch.stack([im[:, y:y + p, x:x + p] for im, (y, x) in zip(sel, yx.tolist())])
        return normalize(cut.to(device).float() / 255.0)

    def loss(self, batch: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if self.tracks is None:
            raise RuntimeError("tracking: epoch_start must run before loss (it builds the tracks)")
        t = self.tracks
        rows = self.pick(idx)
        vids = t.video[rows]
        nf, nyx, nv = self.negatives(rows)
        b = len(rows)
        x = torch.cat([self.patches(t.anchor_frame[rows], t.anchor_yx[rows], batch.device),
                       self.patches(t.positive_frame[rows], t.positive_yx[rows], batch.device),
                       self.patches(nf, nyx, batch.device)])
        e = self.embed(x)
        a, p, n = e[:b], e[b:2 * b], e[2 * b:]
        hard = self.cfg.hard_negatives > 0 and self.epoch >= self.cfg.hard_after_epochs
        if hard:  # candidates: the anchor's own negative and every patch of the batch from another video
            cand_video = torch.as_tensor(np.concatenate([vids, nv]), device=e.device)
            allowed = cand_video[None, :] != torch.as_tensor(vids, device=e.device)[:, None]
            allowed[torch.arange(b, device=e.device), b + torch.arange(b, device=e.device)] = True
            ind, valid = hardest_negatives(a.detach(), torch.cat([p, n]).detach(), allowed, self.cfg.hard_negatives)
            loss = triplet_loss(a, p, torch.cat([p, n])[ind], self.cfg.margin, valid)
        else:
            loss = triplet_loss(a, p, n[:, None], self.cfg.margin)
        with torch.no_grad():
            ranked = float((cosine_distance(a, p) < cosine_distance(a, n)).float().mean())
        return loss, {"ranked": ranked, "hard": float(hard), "moving_tracks": float(t.moving.mean())}
