"""Temporal order of video frames: Shuffle and Learn (Misra, Zitnick & Hebert 2016) and sequence sorting
(OPN, Lee, Huang, Singh & Yang 2017).

`mode: shuffle`: from a video's frames at times a < b < c < d < e, the tuple (b, c, d) is in order (positive)
and (b, a, d) or (b, e, d) are not (negatives: the middle frame replaced by one from outside the span). A
triplet siamese network (the shared backbone, a per-frame fc layer) sees the three frames; their embeddings
are concatenated and an MLP says "in order or not".
`mode: sort`: four frames of a video in time order are shown shuffled; the network says which of the 12
orders-up-to-reversal it sees (a permutation and its reverse are one class: playing a clip backwards is as
plausible as forwards). As OPN: per-frame fc features, one fc layer on each of the 6 concatenated pairs,
the 6 pair features concatenated into the classifier.

Both sample their frames inside a window of `span` kept frames chosen with probability proportional to its
residual motion against the camera (the papers sample high-motion windows; still frames have no order).
Every frame of a tuple is cut from the same random box (a small per-frame jitter) and, with
`channel_split`, shows one random colour channel, against low-level shortcuts, as OPN.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.backbone.factory import normalize
from pipeline.backbone.pretext import frames as fr
from pipeline.backbone.pretext.common import Objective, check_multiple, embed, mlp
from pipeline.config import MotionConfig, TemporalOrderConfig

SHUFFLE_FRAMES = 3
SORT_FRAMES = 4
WEIGHT_FLOOR = 1e-3  # added to every window's motion weight, so a still video can still be sampled


def order_classes() -> tuple[np.ndarray, np.ndarray]:
    """The 24 permutations of 4 frames (24, 4) int64 in lexicographic order and their class (24,) in 0..11:
    a permutation and its reverse share a class; classes are numbered in the order their first member appears."""
    perms = np.array(list(itertools.permutations(range(SORT_FRAMES))), dtype=np.int64)
    canon = [min(tuple(p), tuple(p[::-1])) for p in perms.tolist()]
    ids = {c: i for i, c in enumerate(dict.fromkeys(canon))}
    return perms, np.array([ids[c] for c in canon], dtype=np.int64)


def window_probabilities(weights: np.ndarray, span: int) -> np.ndarray:
    """Per-frame motion (L,) -> probability of each window start (L - w + 1,), w = min(span, L) (span 0: L):
    proportional to the mean motion of the window's frames plus WEIGHT_FLOOR."""
    w = min(span, len(weights)) if span else len(weights)
    p = np.array([weights[s:s + w].mean() for s in range(len(weights) - w + 1)], dtype=np.float64) + WEIGHT_FLOOR
    return p / p.sum()


def sample_positions(length: int, count: int, span: int, weights: np.ndarray | None,
                     gen: torch.Generator | None = None) -> list[int]:
    """`count` distinct sorted time positions in 0..length-1, inside a window of min(span, length) positions
    (span 0: the whole video) whose start is drawn by `window_probabilities` (uniformly when weights is None)."""
    w = min(span, length) if span else length
    if weights is None:
        start = int(torch.randint(0, length - w + 1, (1,), generator=gen))
    else:
        start = int(torch.multinomial(torch.from_numpy(window_probabilities(weights, span)), 1, generator=gen))
    return sorted((start + torch.randperm(w, generator=gen)[:count]).tolist())


def shuffle_tuples(videos: list[np.ndarray], vids: np.ndarray, positive: np.ndarray, span: int,
                   motion: np.ndarray | None, gen: torch.Generator | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Shuffle-and-Learn tuple per entry of vids (B,) (positions in `videos`, each of >= 4 frames) ->
    (frames (B, 3) dataset indices in the order shown, labels (B,) 1 = in order, times (B, 3) positions in the video).

    positive[i]: tuple i is (b, c, d) with b < c < d; otherwise (b, x, d) with x < b or x > d."""
    frames, times = [], []
    for v, pos in zip(vids.tolist(), positive.tolist()):
        seq = videos[v]
        wts = None if motion is None else motion[seq]
        while True:
            b, c, d = sample_positions(len(seq), SHUFFLE_FRAMES, span, wts, gen)
            outside = [t for t in range(len(seq)) if t < b or t > d]
            if pos:
                t3 = (b, c, d)
                break
            if outside:
                t3 = (b, outside[int(torch.randint(0, len(outside), (1,), generator=gen))], d)
                break
        times.append(t3)
        frames.append(seq[list(t3)])
    return np.array(frames, np.int64), positive.astype(np.int64), np.array(times, np.int64)


def sort_tuples(videos: list[np.ndarray], vids: np.ndarray, span: int, motion: np.ndarray | None,
                gen: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One OPN tuple per entry of vids (B,) -> (frames (B, 4) dataset indices in the order shown, labels (B,)
    in 0..11, perm (B, 4)): four time-sorted frames s, shown as s[perm], perm drawn from the 24 permutations."""
    perms, classes = order_classes()
    frames, labels, shown = [], [], []
    for v in vids.tolist():
        seq = videos[v]
        s = sample_positions(len(seq), SORT_FRAMES, span, None if motion is None else motion[seq], gen)
        k = int(torch.randint(0, len(perms), (1,), generator=gen))
        frames.append(seq[np.array(s)[perms[k]]])
        labels.append(classes[k])
        shown.append(perms[k])
    return np.array(frames, np.int64), np.array(labels, np.int64), np.array(shown, np.int64)


class TemporalOrderNet(Objective):
    """Shared backbone per frame -> fc -> (shuffle) concatenated -> MLP -> in order or not;
    (sort) pairwise fc on the 6 pairs -> concatenated -> 12 order classes."""

    def __init__(self, backbone: nn.Module, cfg: TemporalOrderConfig, image_size: int,
                 videos: list[np.ndarray] | None, motion: MotionConfig) -> None:
        super().__init__(backbone)
        check_multiple(cfg.crop_size, backbone, "pretrain.temporal_order.crop_size")
        self.cfg = cfg
        self.motion_cfg = motion
        self.t = SHUFFLE_FRAMES if cfg.mode == "shuffle" else SORT_FRAMES
        self.videos = fr.require_videos(videos, "temporal_order", self.t + 1 if cfg.mode == "shuffle" else self.t)
        self.usable = np.concatenate(self.videos)
        self.data: torch.Tensor | None = None
        self.motion: np.ndarray | None = None
        self.video_of: np.ndarray | None = None
        d, h = backbone.num_features, cfg.hidden_dim
        self.frame_fc = nn.Sequential(nn.Linear(d, h), nn.ReLU(inplace=True))
        if cfg.mode == "shuffle":
            self.classifier = mlp([SHUFFLE_FRAMES * h, h, 2])
        else:
            self.pairs = list(itertools.combinations(range(SORT_FRAMES), 2))
            self.pair_fc = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU(inplace=True))
            self.classifier = nn.Linear(len(self.pairs) * h, len(set(order_classes()[1].tolist())))

    @torch.no_grad()
    def epoch_start(self, data: torch.Tensor, epoch: int) -> list[nn.Parameter]:
        self.data = data
        if self.video_of is None:
            self.video_of = fr.video_of_frame(self.videos, len(data))
            if self.cfg.motion_weighted:
                self.motion = fr.frame_motion(data, self.videos, self.motion_cfg)
        return []

    def sample_order(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.resize(rng.permutation(self.usable), n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised frames (B, T, 3, s, s), T = 3 (shuffle) or 4 (sort) -> logits (B, 2) or (B, 12)."""
        b, t = x.shape[:2]
        f = self.frame_fc(embed(self.backbone, x.flatten(0, 1))).view(b, t, -1)
        if self.cfg.mode == "shuffle":
            return self.classifier(f.flatten(1))
        pair = [self.pair_fc(torch.cat([f[:, i], f[:, j]], 1)) for i, j in self.pairs]
        return self.classifier(torch.cat(pair, 1))

    def tuples(self, idx: torch.Tensor, gen: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Dataset indices (B,) -> (frames (B, T) to show, labels (B,)): a tuple from each index's video (a random
        usable video for a frame outside them)."""
        if self.video_of is None:
            raise RuntimeError("temporal_order: epoch_start must run before loss (it receives the frames)")
        vids = self.video_of[idx.cpu().numpy()]
        lost = vids < 0
        if lost.any():
            vids[lost] = torch.randint(0, len(self.videos), (int(lost.sum()),), generator=gen).numpy()
        if self.cfg.mode == "shuffle":
            positive = (torch.rand(len(vids), generator=gen) < self.cfg.positive_fraction).numpy()
            frames, labels, _ = shuffle_tuples(self.videos, vids, positive, self.cfg.span, self.motion, gen)
        else:
            frames, labels, _ = sort_tuples(self.videos, vids, self.cfg.span, self.motion, gen)
        return frames, labels

    def crops(self, frames: np.ndarray, device: torch.device, gen: torch.Generator | None = None) -> torch.Tensor:
        """Frames (B, T) dataset indices -> normalised crops (B, T, 3, s, s) on `device`: one random box per
        tuple, jittered per frame, optionally channel-split per frame."""
        assert self.data is not None
        b, t = frames.shape
        _, _, h, w = self.data.shape
        boxes = fr.jitter_boxes(fr.crop_boxes(b, h, w, self.cfg.crop_scale_min, gen), t, self.cfg.jitter, h, w, gen)
        sel = self.data[torch.as_tensor(frames.reshape(-1), device=self.data.device)].to(device).float() / 255.0
        x = fr.cut_and_resize(sel, boxes.flatten(0, 1), self.cfg.crop_size)
        if self.cfg.channel_split:
            x = fr.channel_split(x, gen)
        return normalize(x).view(b, t, 3, self.cfg.crop_size, self.cfg.crop_size)

    def loss(self, batch: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        frames, labels = self.tuples(idx)
        logits = self(self.crops(frames, batch.device))
        target = torch.as_tensor(labels, device=logits.device)
        acc = float((logits.argmax(1) == target).float().mean())
        return F.cross_entropy(logits, target), {"accuracy": acc}
