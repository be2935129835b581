"""params.yaml -> frozen, validated dataclasses.

Every section of params.yaml is one dataclass below. Loading is strict: an unknown key, a missing
section, a value of the wrong type or out of range raises `ConfigError` naming the key and what is
allowed, before any stage does work. Code receives these objects, never the raw dict.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A params.yaml value that the pipeline cannot use; the message names the key."""


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"params: '{key}' {msg}")


def _one_of(value: str, allowed: tuple[str, ...], key: str) -> None:
    _check(value in allowed, key, f"is {value!r}; allowed values: {', '.join(allowed)}")


@dataclass(frozen=True)
class Paths:
    """Where each stage writes (structure of the DAG, mirrored in dvc.yaml; not a tuning knob)."""

    prepare: str = "data/01_prepare"
    pretrain: str = "data/02_pretrain"
    features: str = "data/03_features"
    proposals: str = "data/04_proposals"
    cluster: str = "data/05_cluster"
    pseudolabels: str = "data/06_pseudolabels"
    filter: str = "data/07_filter"
    merge: str = "data/08_merge"
    train: str = "data/09_train"
    evaluate: str = "data/10_evaluate"
    report: str = "data/11_report"


@dataclass(frozen=True)
class DataConfig:
    name: str = "synthetic"  # synthetic (generated here from `seed`) | folder (images/ + optional labels/) | voc2012 | coco | synthetic_video | video
    root: str = ""  # folder: holds images/ (+ labels/); voc2012: the VOCdevkit folder; coco: holds annotations/ and <split>2017/; video: the folder of videos
    split: str = "val"  # voc2012: train | val | trainval | trainaug; coco: train | val (ignored by the others)
    download: bool = False  # voc2012: fetch VOCtrainval_11-May-2012.tar into root when missing (needs internet, 2 GB)
    image_size: int = 128  # every image is resized to image_size x image_size pixels
    num_classes: int = 5  # ground-truth classes including background 0 (evaluation only)
    synth_images: int = 300  # synthetic: how many images to generate
    synth_max_objects: int = 3  # synthetic: 1..this many objects per image
    max_images: int = 0  # folder, voc2012, coco: use only the first N good images (0 = all)
    on_bad_image: str = "skip"  # folder: skip (leave out, list in data/01_prepare/skipped.csv) | error (stop at the first)
    min_image_side: int = 16  # folder: an image whose shorter side has fewer pixels is a bad image

    def __post_init__(self) -> None:
        _one_of(self.name, ("synthetic", "folder", "voc2012", "coco", "synthetic_video", "video"), "data.name")
        _check(self.name in ("synthetic", "synthetic_video") or bool(self.root), "data.root", f"must name a folder when data.name is {self.name}")
        if self.name == "voc2012":
            _one_of(self.split, ("train", "val", "trainval", "trainaug"), "data.split")
            _check(self.num_classes == 21, "data.num_classes", f"is {self.num_classes}; voc2012 has 21 classes (20 + background)")
        if self.name == "coco":
            _one_of(self.split, ("train", "val"), "data.split")
            _check(self.num_classes == 81, "data.num_classes", f"is {self.num_classes}; coco has 81 classes (80 things + background)")
        _check(self.image_size >= 32, "data.image_size", f"is {self.image_size}; must be >= 32")
        _check(self.num_classes >= 2, "data.num_classes", f"is {self.num_classes}; must be >= 2")
        _check(self.synth_images >= 8, "data.synth_images", f"is {self.synth_images}; must be >= 8")
        _check(1 <= self.synth_max_objects <= 6, "data.synth_max_objects", "must be in 1..6")
        _check(self.max_images >= 0, "data.max_images", "must be >= 0")
        _one_of(self.on_bad_image, ("skip", "error"), "data.on_bad_image")
        _check(self.min_image_side >= 1, "data.min_image_side", f"is {self.min_image_side}; must be >= 1")


@dataclass(frozen=True)
class BackboneConfig:
    name: str = "vit_tiny_patch16_224"  # any timm ViT name, e.g. vit_small_patch16_224.dino for hub weights
    overrides: dict = field(default_factory=dict)  # timm create_model kwargs (patch_size, depth, ...); {} for hub weights
    source: str = "file"  # file (local checkpoint) | hub (timm pretrained=True) | pretrain (train here) | random
    weights: str = ""  # source=file: path of a state dict for exactly this architecture
    hf_cache: str = ""  # source=hub: Hugging Face cache dir (set HF_HUB_OFFLINE=1 to use it offline)

    def __post_init__(self) -> None:
        _one_of(self.source, ("file", "hub", "pretrain", "random"), "backbone.source")
        _check(self.source != "file" or bool(self.weights), "backbone.weights", "must name a file when backbone.source is file")
        for k, v in self.overrides.items():
            _check(isinstance(v, (int, float, str, bool)), f"backbone.overrides.{k}", "must be a number, string or bool")
        ps = self.overrides.get("patch_size", 1)
        _check(isinstance(ps, int) and not isinstance(ps, bool) and ps >= 1, "backbone.overrides.patch_size",
               f"is {ps!r}; must be an integer >= 1")


PRETRAIN_METHODS = ("dino", "deepcluster", "context", "jigsaw", "colorization", "inpainting", "multitask",
                    "temporal_order", "tracking")


@dataclass(frozen=True)
class DeepClusterConfig:
    """DeepCluster (Caron et al. 2018): k-means on the features, then learn to predict the assignments."""

    k: int = 32  # k-means clusters (the paper: 10000 on ImageNet, i.e. ~100 images per cluster)
    pca_dim: int = 64  # features are PCA-reduced to this many dims, whitened and L2-normed before k-means (paper: 256)
    kmeans_iters: int = 20  # Lloyd iterations per re-clustering
    recluster_epochs: int = 1  # re-cluster (and reset the classifier) every this many epochs (paper: every epoch)
    crop_size: int = 96  # random resized crop side (multiple of the patch size)
    crop_scale_min: float = 0.35  # RandomResizedCrop scale (min, 1)

    def __post_init__(self) -> None:
        _check(self.k >= 2, "pretrain.deepcluster.k", "must be >= 2")
        _check(self.pca_dim >= 2, "pretrain.deepcluster.pca_dim", "must be >= 2")
        _check(self.kmeans_iters >= 1, "pretrain.deepcluster.kmeans_iters", "must be >= 1")
        _check(self.recluster_epochs >= 1, "pretrain.deepcluster.recluster_epochs", "must be >= 1")
        _check(self.crop_size >= 16, "pretrain.deepcluster.crop_size", "must be >= 16")
        _check(0 < self.crop_scale_min <= 1, "pretrain.deepcluster.crop_scale_min", "must be in (0, 1]")


@dataclass(frozen=True)
class ContextConfig:
    """Context prediction (Doersch et al. 2015): the relative position (1 of 8) of two patches of an image."""

    patch: int = 32  # side of each patch in pixels (multiple of the patch size); paper: 96 of ~256 px images
    gap: int = 8  # pixels between neighbouring grid patches (paper: 48, half a patch)
    jitter: int = 4  # each patch moves by up to this many pixels in x and y (paper: 7)
    color_drop: bool = True  # keep one random colour channel, the other two become noise (against chromatic aberration)
    hidden_dim: int = 256  # MLP on the two concatenated patch embeddings

    def __post_init__(self) -> None:
        for k in ("patch", "hidden_dim"):
            _check(getattr(self, k) >= 1, f"pretrain.context.{k}", "must be >= 1")
        for k in ("gap", "jitter"):
            _check(getattr(self, k) >= 0, f"pretrain.context.{k}", "must be >= 0")


@dataclass(frozen=True)
class JigsawConfig:
    """Jigsaw puzzles (Noroozi & Favaro 2016): which of a fixed set of permutations shuffled 3x3 tiles."""

    permutations: int = 100  # size of the permutation set, chosen greedily for large Hamming distance (paper: 100-1000)
    tile: int = 32  # side of the tile cut at a random place inside each of the 3x3 cells (multiple of the patch size)
    grid_crop: int = 120  # the 3x3 grid covers a random crop of this side (cells of grid_crop / 3; paper: 225 -> 75 -> 64)
    hidden_dim: int = 256  # per-tile embedding -> concatenated -> MLP of this width -> permutation logits
    gray_prob: float = 0.3  # chance a puzzle is shown in grayscale (against colour-aberration shortcuts)

    def __post_init__(self) -> None:
        _check(2 <= self.permutations <= 5000, "pretrain.jigsaw.permutations", "must be in 2..5000")
        _check(self.tile >= 8, "pretrain.jigsaw.tile", "must be >= 8")
        _check(self.grid_crop >= 3 * self.tile, "pretrain.jigsaw.grid_crop", f"must be >= 3 * tile = {3 * self.tile}")
        _check(self.hidden_dim >= 1, "pretrain.jigsaw.hidden_dim", "must be >= 1")
        _check(0 <= self.gray_prob <= 1, "pretrain.jigsaw.gray_prob", "must be in [0, 1]")


@dataclass(frozen=True)
class ColorizationConfig:
    """Colorization as a proxy task (Larsson et al. 2017): lightness in, distributions over quantised ab out."""

    grid: float = 10.0  # ab bin width (Lab units); in-gamut bins only (grid 10 -> 313 bins, as Zhang et al. 2016)
    cells: int = 2  # each patch token predicts the colour histogram of cells x cells sub-cells of its pixels
    crop_size: int = 96  # random resized crop side (multiple of the patch size)
    crop_scale_min: float = 0.35  # RandomResizedCrop scale (min, 1)

    def __post_init__(self) -> None:
        _check(2.0 <= self.grid <= 60.0, "pretrain.colorization.grid", "must be in [2, 60]")
        _check(self.cells >= 1, "pretrain.colorization.cells", "must be >= 1")
        _check(self.crop_size >= 16, "pretrain.colorization.crop_size", "must be >= 16")
        _check(0 < self.crop_scale_min <= 1, "pretrain.colorization.crop_scale_min", "must be in (0, 1]")


@dataclass(frozen=True)
class InpaintingConfig:
    """Context Encoders (Pathak et al. 2016): reconstruct a masked region's pixels from its context."""

    mask: str = "random_block"  # central (one square) | random_block (several random squares) | random_region (random shapes)
    size: float = 0.5  # central: side of the square as a fraction of the image side (paper: 0.5, a quarter of the area)
    coverage: float = 0.25  # random_block / random_region: fraction of pixels to mask (paper: ~0.25)
    block: float = 0.25  # random_block: side of each square as a fraction of the image side
    overlap: int = 4  # the prediction also covers this many context pixels around the hole (paper: 4 px) ...
    overlap_weight: float = 10.0  # ... whose loss weighs this much more (paper: 10)
    crop_size: int = 96  # random resized crop side (multiple of the patch size)
    crop_scale_min: float = 0.35  # RandomResizedCrop scale (min, 1)

    def __post_init__(self) -> None:
        _one_of(self.mask, ("central", "random_block", "random_region"), "pretrain.inpainting.mask")
        for k in ("size", "coverage", "block"):
            _check(0 < getattr(self, k) < 1, f"pretrain.inpainting.{k}", "must be in (0, 1)")
        _check(self.overlap >= 0, "pretrain.inpainting.overlap", "must be >= 0")
        _check(self.overlap_weight > 0, "pretrain.inpainting.overlap_weight", "must be > 0")
        _check(self.crop_size >= 16, "pretrain.inpainting.crop_size", "must be >= 16")
        _check(0 < self.crop_scale_min <= 1, "pretrain.inpainting.crop_scale_min", "must be in (0, 1]")


@dataclass(frozen=True)
class TemporalOrderConfig:
    """Temporal order of video frames: Shuffle and Learn (Misra et al. 2016) or sequence sorting (Lee et al. 2017)."""

    mode: str = "shuffle"  # shuffle (3 frames: is the middle one in order? binary) | sort (4 shuffled frames: which of 12 orders)
    positive_fraction: float = 0.5  # shuffle: share of in-order tuples (the rest have the middle frame from outside the span)
    span: int = 6  # frames come from a window of this many kept frames, drawn by its residual motion (0 = whole video)
    motion_weighted: bool = True  # windows drawn with probability proportional to their motion against the camera (papers: high-motion windows)
    crop_size: int = 96  # side the shared crop box is resized to (a multiple of the patch size)
    crop_scale_min: float = 0.35  # the box covers a share in [crop_scale_min, 1] of the frame's area
    jitter: int = 4  # each frame's box moves by up to this many pixels per axis (0 = identical boxes)
    channel_split: bool = True  # each frame shows one random colour channel in all three (OPN, against colour shortcuts)
    hidden_dim: int = 256  # per-frame fc width (and the pair fc / MLP width)

    def __post_init__(self) -> None:
        _one_of(self.mode, ("shuffle", "sort"), "pretrain.temporal_order.mode")
        _check(0 < self.positive_fraction < 1, "pretrain.temporal_order.positive_fraction", "must be in (0, 1)")
        _check(self.span == 0 or self.span >= 4, "pretrain.temporal_order.span", f"is {self.span}; must be 0 or >= 4")
        _check(self.crop_size >= 16, "pretrain.temporal_order.crop_size", "must be >= 16")
        _check(0 < self.crop_scale_min <= 1, "pretrain.temporal_order.crop_scale_min", "must be in (0, 1]")
        _check(self.jitter >= 0, "pretrain.temporal_order.jitter", "must be >= 0")
        _check(self.hidden_dim >= 1, "pretrain.temporal_order.hidden_dim", "must be >= 1")


@dataclass(frozen=True)
class TrackingConfig:
    """Tracking (Wang & Gupta 2015): patches followed by optical flow stay close, other videos' patches far."""

    patch: int = 32  # side of the tracked patches, pixels (a multiple of the patch size)
    track_frames: int = 3  # the positive is the patch this many kept frames after the anchor (fewer in shorter videos)
    queries_per_frame: int = 2  # non-overlapping patches started per frame where residual motion > motion.threshold (else 1 random)
    margin: float = 0.5  # ranking-loss margin on the cosine distance (paper: 0.5)
    hidden_dim: int = 256  # MLP on the class token ...
    out_dim: int = 128  # ... to the embedding compared by cosine (paper: 1024)
    hard_negatives: int = 4  # hard negative mining: each anchor's K hardest other-video patches of the batch (paper: 4; 0 = off)
    hard_after_epochs: int = 2  # mining starts at this epoch, random negatives before (paper: after 10 epochs)
    negatives: str = "other_video"  # other_video (paper: a random patch of another video) | same_frame (a patch of the positive's frame not overlapping it)

    def __post_init__(self) -> None:
        _check(self.patch >= 8, "pretrain.tracking.patch", "must be >= 8")
        _check(self.track_frames >= 1, "pretrain.tracking.track_frames", "must be >= 1")
        _check(self.queries_per_frame >= 1, "pretrain.tracking.queries_per_frame", "must be >= 1")
        _check(0 < self.margin <= 2, "pretrain.tracking.margin", "must be in (0, 2]")
        for k in ("hidden_dim", "out_dim"):
            _check(getattr(self, k) >= 1, f"pretrain.tracking.{k}", "must be >= 1")
        for k in ("hard_negatives", "hard_after_epochs"):
            _check(getattr(self, k) >= 0, f"pretrain.tracking.{k}", "must be >= 0")
        _one_of(self.negatives, ("other_video", "same_frame"), "pretrain.tracking.negatives")


@dataclass(frozen=True)
class MultitaskConfig:
    """Multi-task self-supervision (Doersch & Zisserman 2017): a weighted sum of objectives on one shared trunk."""

    tasks: dict = field(default_factory=lambda: {"context": 1.0, "colorization": 1.0, "jigsaw": 1.0,
                                                 "inpainting": 1.0})  # objective -> loss weight (0 leaves it out)

    def __post_init__(self) -> None:
        allowed = ("deepcluster", "context", "jigsaw", "colorization", "inpainting", "temporal_order", "tracking")
        for k, v in self.tasks.items():
            _one_of(k, allowed, "pretrain.multitask.tasks")
            _check(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0,
                   f"pretrain.multitask.tasks.{k}", f"must be a number >= 0, got {v!r}")
        _check(any(v > 0 for v in self.tasks.values()), "pretrain.multitask.tasks", "needs one weight > 0")


@dataclass(frozen=True)
class PretrainConfig:
    """Self-supervised pretraining. Top-level keys: DINO (Caron et al. 2021, the reference recipe scaled
    down) and the schedule shared by every method; one nested section per other objective."""

    method: str = "dino"  # dino | deepcluster | context | jigsaw | colorization | inpainting | multitask | temporal_order | tracking (videos)
    epochs: int = 100  # passes over the prepared images
    batch_size: int = 64
    lr: float = 5e-4  # peak lr at batch 256 (scaled by batch_size / 256), reached after warmup_epochs
    min_lr: float = 1e-6  # cosine schedule end
    warmup_epochs: int = 10
    weight_decay: float = 0.04  # cosine from weight_decay to weight_decay_end
    weight_decay_end: float = 0.4
    out_dim: int = 4096  # prototypes of the DINO head
    hidden_dim: int = 512
    bottleneck_dim: int = 128
    head_bn: bool = True  # BatchNorm in the head MLP: breaks the uniform start on small data
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.02
    warmup_teacher_temp_epochs: int = 20
    student_temp: float = 0.1
    momentum_teacher: float = 0.99  # EMA, cosine to 1
    center_momentum: float = 0.9
    freeze_last_layer_epochs: int = 1
    clip_grad: float = 3.0
    global_crop_size: int = 96
    local_crop_size: int = 48
    local_crops: int = 4
    global_scale_min: float = 0.35  # RandomResizedCrop scale (min, 1) of global crops
    local_scale_max: float = 0.35  # RandomResizedCrop scale (0.05, max) of local crops
    stop_after_epochs: int = 0  # stop after this many epochs, schedules still spanning `epochs` (0 = run all)
    max_minutes: float = 0.0  # stop after this wall time (0 = run all epochs)
    threads: int = 0  # torch CPU threads (0 = torch default)
    device: str = "auto"  # auto (cuda when present) | cpu | cuda: where the backbone trains
    pretext_lr: float = 1e-3  # peak AdamW lr of the non-DINO objectives (not batch-scaled), warm-up then cosine to min_lr
    deepcluster: DeepClusterConfig = field(default_factory=DeepClusterConfig)
    context: ContextConfig = field(default_factory=ContextConfig)
    jigsaw: JigsawConfig = field(default_factory=JigsawConfig)
    colorization: ColorizationConfig = field(default_factory=ColorizationConfig)
    inpainting: InpaintingConfig = field(default_factory=InpaintingConfig)
    multitask: MultitaskConfig = field(default_factory=MultitaskConfig)
    temporal_order: TemporalOrderConfig = field(default_factory=TemporalOrderConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        _one_of(self.method, PRETRAIN_METHODS, "pretrain.method")
        _one_of(self.device, ("auto", "cpu", "cuda"), "pretrain.device")
        _check(self.pretext_lr > 0, "pretrain.pretext_lr", "must be > 0")
        for k in ("epochs", "batch_size", "out_dim", "hidden_dim", "bottleneck_dim", "global_crop_size", "local_crop_size"):
            _check(getattr(self, k) >= 1, f"pretrain.{k}", "must be >= 1")
        for k in ("lr", "teacher_temp", "student_temp", "warmup_teacher_temp"):
            _check(getattr(self, k) > 0, f"pretrain.{k}", "must be > 0")
        _check(0 <= self.momentum_teacher < 1, "pretrain.momentum_teacher", "must be in [0, 1)")
        _check(0 <= self.center_momentum < 1, "pretrain.center_momentum", "must be in [0, 1)")
        _check(0 < self.global_scale_min <= 1, "pretrain.global_scale_min", "must be in (0, 1]")
        _check(0.05 < self.local_scale_max <= 1, "pretrain.local_scale_max", "must be in (0.05, 1]")
        _check(self.stop_after_epochs >= 0, "pretrain.stop_after_epochs", "must be >= 0")
        for k in ("min_lr", "weight_decay", "weight_decay_end", "warmup_epochs", "warmup_teacher_temp_epochs",
                  "freeze_last_layer_epochs", "clip_grad", "max_minutes", "threads"):
            _check(getattr(self, k) >= 0, f"pretrain.{k}", f"is {getattr(self, k)}; must be >= 0")
        _check(self.local_crops >= 0, "pretrain.local_crops", "must be >= 0")


@dataclass(frozen=True)
class FeaturesConfig:
    batch_size: int = 32
    shard_size: int = 512  # images per shard file
    device: str = "auto"  # auto (cuda when present) | cpu | cuda

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "features.batch_size", "must be >= 1")
        _check(self.shard_size >= 1, "features.shard_size", "must be >= 1")
        _one_of(self.device, ("auto", "cpu", "cuda"), "features.device")


@dataclass(frozen=True)
class ProposalsConfig:
    affinity: str = "keys"  # keys (last attention keys, as TokenCut) | tokens
    tau: float = 0.2  # TokenCut: affinities above tau are edges (1), below get eps
    eps: float = 1e-5
    num_eigs: int = 1  # bipartitions from eigenvectors 1..num_eigs (Fiedler first)
    min_patches: int = 3  # a connected component smaller than this many patches is no proposal
    max_per_image: int = 4
    nms_iou: float = 0.5  # a proposal overlapping a better one more than this is dropped
    min_score: float = 0.01  # a proposal whose contrast (inside minus between similarity) is not above this is dropped
    refine: str = "grabcut"  # grabcut (OpenCV, pixel-accurate borders) | none (bilinear upsampling only)
    refine_iters: int = 3
    sources: list = field(default_factory=lambda: ["saliency"])  # saliency (normalized cut) and/or motion (video only); earlier ranks higher

    def __post_init__(self) -> None:
        _check(bool(self.sources) and len(set(self.sources)) == len(self.sources), "proposals.sources",
               f"is {self.sources!r}; must list saliency and/or motion, each once")
        for s in self.sources:
            _one_of(s, ("saliency", "motion"), "proposals.sources")
        _one_of(self.affinity, ("keys", "tokens"), "proposals.affinity")
        _check(-1 <= self.tau < 1, "proposals.tau", "must be in [-1, 1)")
        _check(self.eps > 0, "proposals.eps", "must be > 0")
        _check(self.num_eigs >= 1, "proposals.num_eigs", "must be >= 1")
        _check(self.min_patches >= 1, "proposals.min_patches", "must be >= 1")
        _check(self.max_per_image >= 1, "proposals.max_per_image", "must be >= 1")
        _check(0 < self.nms_iou <= 1, "proposals.nms_iou", "must be in (0, 1]")
        _check(0 <= self.min_score < 2, "proposals.min_score", f"is {self.min_score}; must be in [0, 2)")
        _one_of(self.refine, ("grabcut", "none"), "proposals.refine")
        _check(self.refine_iters >= 1, "proposals.refine_iters", "must be >= 1")


@dataclass(frozen=True)
class VideoConfig:
    """Video datasets (data.name synthetic_video | video): frame sampling and the generated clips."""

    stride: int = 2  # keep every stride-th frame of each video (motion is measured between kept frames)
    max_frames: int = 0  # keep at most this many frames per video after striding (0 = all)
    synth_clips: int = 16  # synthetic_video: how many clips to generate
    synth_frames: int = 12  # synthetic_video: frames per clip before striding
    synth_camera_speed: float = 1.5  # synthetic_video: camera drift, pixels per frame at most
    synth_object_speed: list = field(default_factory=lambda: [1.0, 2.0])  # synthetic_video: objects' own speed range, px/frame

    def __post_init__(self) -> None:
        _check(self.stride >= 1, "video.stride", "must be >= 1")
        _check(self.max_frames >= 0, "video.max_frames", "must be >= 0")
        _check(self.synth_clips >= 1, "video.synth_clips", "must be >= 1")
        _check(self.synth_frames >= 2, "video.synth_frames", "must be >= 2")
        _check(self.synth_camera_speed >= 0, "video.synth_camera_speed", "must be >= 0")
        sp = self.synth_object_speed
        _check(len(sp) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in sp)
               and 0 < sp[0] <= sp[1], "video.synth_object_speed", f"is {sp!r}; must be [min, max] with 0 < min <= max")


@dataclass(frozen=True)
class MotionConfig:
    """Motion proposals (proposals.sources contains motion): flow, camera fit, grouping. Pixels at data.image_size."""

    flow: str = "dis"  # dis | farneback (OpenCV dense optical flow)
    dis_finest_scale: int = 0  # dis: finest pyramid level computed (0 = full resolution; 1+ faster, coarser)
    dis_patch_size: int = 6  # dis: patch side, pixels
    dis_patch_stride: int = 2  # dis: distance between patches, pixels (< dis_patch_size)
    farneback_window: int = 5  # farneback: averaging window, pixels
    camera: str = "homography"  # homography | affine: the dominant motion model fitted with RANSAC
    grid_step: int = 4  # the camera is fitted to the flow at points every grid_step pixels
    ransac_threshold: float = 1.0  # RANSAC inlier distance, pixels
    min_inliers: float = 0.4  # a camera fit must explain this share of the points, else the frame gets no masks
    threshold: float = 1.0  # a pixel moves independently when its flow differs from the camera's by more (pixels)
    morph: int = 3  # opening + closing kernel of the moving pixels, pixels (0 = none)
    min_area: float = 0.005  # a mask covers at least this share of the frame
    max_per_image: int = 4
    refine: str = "grabcut"  # grabcut (refine mask borders on the image colours) | none
    refine_band: int = 3  # grabcut: decides this many pixels either side of the border
    refine_iters: int = 3

    def __post_init__(self) -> None:
        _one_of(self.flow, ("dis", "farneback"), "motion.flow")
        _check(self.dis_finest_scale >= 0, "motion.dis_finest_scale", "must be >= 0")
        _check(self.dis_patch_size >= 2, "motion.dis_patch_size", "must be >= 2")
        _check(1 <= self.dis_patch_stride < self.dis_patch_size, "motion.dis_patch_stride",
               "must be in 1..dis_patch_size - 1")
        _check(self.farneback_window >= 3, "motion.farneback_window", "must be >= 3")
        _one_of(self.camera, ("homography", "affine"), "motion.camera")
        _check(self.grid_step >= 1, "motion.grid_step", "must be >= 1")
        _check(self.ransac_threshold > 0, "motion.ransac_threshold", "must be > 0")
        _check(0 <= self.min_inliers <= 1, "motion.min_inliers", "must be in [0, 1]")
        _check(self.threshold > 0, "motion.threshold", "must be > 0")
        _check(self.morph >= 0, "motion.morph", "must be >= 0")
        _check(0 < self.min_area < 1, "motion.min_area", "must be in (0, 1)")
        _check(self.max_per_image >= 1, "motion.max_per_image", "must be >= 1")
        _one_of(self.refine, ("none", "grabcut"), "motion.refine")
        _check(self.refine_band >= 1, "motion.refine_band", "must be >= 1")
        _check(self.refine_iters >= 1, "motion.refine_iters", "must be >= 1")


@dataclass(frozen=True)
class ClusterConfig:
    k: int = 4  # object classes to discover (background is class 0 on top of these)
    method: str = "kmeans"  # kmeans | spectral
    n_init: int = 10
    gallery_per_cluster: int = 8  # masks shown per cluster in gallery.png

    def __post_init__(self) -> None:
        _check(self.k >= 1, "cluster.k", f"is {self.k}; must be >= 1")
        _one_of(self.method, ("kmeans", "spectral"), "cluster.method")
        _check(self.n_init >= 1, "cluster.n_init", "must be >= 1")
        _check(self.gallery_per_cluster >= 1, "cluster.gallery_per_cluster", "must be >= 1")


@dataclass(frozen=True)
class FilterConfig:
    keep: float = 0.8  # fraction of masks kept per class (COMUS keeps 80%)
    folds: int = 5  # out-of-fold classifier on mask embeddings
    weight_distance: float = 0.5  # reliability = w * centre-distance rank + (1 - w) * classifier-confidence rank

    def __post_init__(self) -> None:
        _check(0 < self.keep <= 1, "filter.keep", f"is {self.keep}; must be in (0, 1]")
        _check(self.folds >= 2, "filter.folds", "must be >= 2")
        _check(0 <= self.weight_distance <= 1, "filter.weight_distance", "must be in [0, 1]")


@dataclass(frozen=True)
class MergeConfig:
    parts: int = 60  # over-clustering of foreground patch features (Leopart: 100-250 on VOC)
    resolution: float = 1.0  # Louvain resolution
    weight_cooccur: float = 1.0  # edge weight of two parts seen in the same mask
    weight_adjacent: float = 1.0  # edge weight of two parts on neighbouring patches
    min_agreement: float = 0.8  # a mask is relabelled when this fraction of its patches agree on another class

    def __post_init__(self) -> None:
        _check(self.parts >= 2, "merge.parts", "must be >= 2")
        _check(self.resolution > 0, "merge.resolution", "must be > 0")
        _check(self.weight_cooccur >= 0 and self.weight_adjacent >= 0, "merge.weight_*", "must be >= 0")
        _check(0 < self.min_agreement <= 1, "merge.min_agreement", "must be in (0, 1]")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12
    batch_size: int = 16
    lr: float = 1e-3  # decoder head lr
    backbone_lr: float = 1e-4  # 0 freezes the backbone
    weight_decay: float = 1e-4
    decoder_dim: int = 128
    crop_scale_min: float = 0.5  # random resized crop scale (min, 1)
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0
    model: str = "stage"  # stage (the pretrain stage's ViT) | timm (train.model_name) | deeplabv3 (torchvision)
    model_name: str = ""  # timm: any model (ViT: patch tokens; resnet18, convnext_atto: last map); deeplabv3: resnet50 | resnet101 | mobilenet_v3_large
    pretrained: bool = False  # timm/deeplabv3 only: ImageNet weights from the hub (needs internet); false = random
    rounds: int = 1  # self-training: train, relabel the images with the model's confident pixels, retrain
    round_epochs: int = 4  # epochs of every round after the first (which runs `epochs`), continuing its weights
    relabel_threshold: float = 0.9  # relabelling keeps pixels with softmax confidence >= this, the rest 255
    gpus: int | str = "auto"  # auto (every visible GPU; 1 process on CPU) | N processes under torchrun (gloo on CPU)
    workers: int = 2  # DataLoader worker processes (0 = augment in the training process)
    amp: bool = True  # CUDA only: bf16 autocast where supported, else fp16 with loss scaling
    checkpoint_every: int = 50  # optimizer steps between resume checkpoints (also written at every round's end)

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "train.epochs", "must be >= 1")
        _one_of(self.model, ("stage", "timm", "deeplabv3"), "train.model")
        _check(self.model == "stage" or bool(self.model_name), "train.model_name",
               "must name a model when train.model is timm or deeplabv3")
        if self.model == "deeplabv3":
            _one_of(self.model_name, ("resnet50", "resnet101", "mobilenet_v3_large"), "train.model_name")
        _check(self.rounds >= 1, "train.rounds", f"is {self.rounds}; must be >= 1")
        _check(self.round_epochs >= 1, "train.round_epochs", "must be >= 1")
        _check(0 < self.relabel_threshold <= 1, "train.relabel_threshold", "must be in (0, 1]")
        _check(self.gpus == "auto" or (isinstance(self.gpus, int) and self.gpus >= 1), "train.gpus",
               f"is {self.gpus!r}; allowed values: auto or an integer >= 1")
        _check(self.workers >= 0, "train.workers", "must be >= 0")
        _check(self.checkpoint_every >= 1, "train.checkpoint_every", "must be >= 1")
        _check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        _check(self.lr > 0, "train.lr", "must be > 0")
        _check(self.backbone_lr >= 0, "train.backbone_lr", "must be >= 0")
        _check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _check(0 < self.crop_scale_min <= 1, "train.crop_scale_min", "must be in (0, 1]")
        _check(self.decoder_dim >= 1, "train.decoder_dim", "must be >= 1")
        _check(self.threads >= 0, "train.threads", f"is {self.threads}; must be >= 0 (0 = torch default)")
        _one_of(self.device, ("auto", "cpu", "cuda"), "train.device")


@dataclass(frozen=True)
class EvaluateConfig:
    baseline_kmeans_init: int = 4  # n_init of the baselines' k-means
    baseline_pixels: int = 200000  # pixels sampled to fit the colour baseline

    def __post_init__(self) -> None:
        _check(self.baseline_kmeans_init >= 1, "evaluate.baseline_kmeans_init", "must be >= 1")
        _check(self.baseline_pixels >= 1000, "evaluate.baseline_pixels", "must be >= 1000")


@dataclass(frozen=True)
class ReportConfig:
    journey_images: list = field(default_factory=list)  # image names drawn as a journey; [] = the first journey_count
    journey_count: int = 3  # with journey_images empty: how many images (in dataset order) get a journey
    gallery_size: int = 6  # most and least typical masks shown per cluster, community and filtered class
    tile_size: int = 64  # pixels of one gallery tile
    confusion_rows: int = 1000  # rows of the dvc-plots confusion table, in proportion to the pixel counts

    def __post_init__(self) -> None:
        _check(all(isinstance(n, str) and n for n in self.journey_images), "report.journey_images",
               "must be a list of image names (as in data/01_prepare/images, without .png)")
        _check(self.journey_count >= 0, "report.journey_count", "must be >= 0")
        _check(self.gallery_size >= 1, "report.gallery_size", "must be >= 1")
        _check(self.tile_size >= 16, "report.tile_size", "must be >= 16")
        _check(self.confusion_rows >= 10, "report.confusion_rows", "must be >= 10")


@dataclass(frozen=True)
class Params:
    seed: int
    data: DataConfig
    backbone: BackboneConfig
    pretrain: PretrainConfig
    features: FeaturesConfig
    proposals: ProposalsConfig
    cluster: ClusterConfig
    filter: FilterConfig
    merge: MergeConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    report: ReportConfig
    video: VideoConfig = field(default_factory=VideoConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    paths: Paths = field(default_factory=Paths)


def _type_ok(value: Any, tp: Any) -> bool:
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is dict or typing.get_origin(tp) is dict or dataclasses.is_dataclass(tp):
        return isinstance(value, dict)
    if tp is list:
        return isinstance(value, list)
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return any(_type_ok(value, t) for t in typing.get_args(tp))
    return isinstance(value, tp)


def build_section(cls: type, raw: Any, section: str) -> Any:
    """A dict from params.yaml -> an instance of `cls`, rejecting unknown keys and wrong types."""
    if raw is None:
        raw = {}
    _check(isinstance(raw, dict), section, f"must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        _check(key in names, f"{section}.{key}", f"is not a known key; allowed keys: {', '.join(names)}")
    for key, value in raw.items():
        tp = hints[key]
        _check(_type_ok(value, tp), f"{section}.{key}",
               f"must be of type {getattr(tp, '__name__', tp)}, got {value!r} ({type(value).__name__})")
    values = {k: (float(v) if hints[k] is float else v) for k, v in raw.items()}
    for k, v in values.items():  # a nested section (e.g. pretrain.jigsaw) is built and checked the same way
        if dataclasses.is_dataclass(hints[k]):
            values[k] = build_section(hints[k], v, f"{section}.{k}")
    return cls(**values)


_SECTIONS = {
    "data": DataConfig,
    "backbone": BackboneConfig,
    "pretrain": PretrainConfig,
    "features": FeaturesConfig,
    "proposals": ProposalsConfig,
    "cluster": ClusterConfig,
    "filter": FilterConfig,
    "merge": MergeConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "report": ReportConfig,
    "video": VideoConfig,
    "motion": MotionConfig,
}


def parse_params(raw: dict) -> Params:
    """The whole params.yaml mapping -> Params. Raises ConfigError naming the first bad key."""
    _check(isinstance(raw, dict), "params.yaml", "must be a mapping of sections")
    allowed = ["seed", *_SECTIONS]
    for key in raw:
        _check(key in allowed, key, f"is not a known section; allowed sections: {', '.join(allowed)}")
    for key in allowed:
        _check(key in raw, key, "is missing")
    seed = raw["seed"]
    _check(isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0, "seed", f"must be an integer >= 0, got {seed!r}")
    sections = {name: build_section(cls, raw[name], name) for name, cls in _SECTIONS.items()}
    patch = backbone_patch_size(sections["backbone"])
    size = sections["data"].image_size
    _check(patch is None or size % patch == 0, "data.image_size",
           f"is {size}; must be a multiple of the backbone's patch size {patch}, e.g. {max(patch or 1, size // (patch or 1) * (patch or 1))}")
    return Params(seed=seed, **sections)


def backbone_patch_size(cfg: BackboneConfig) -> int | None:
    """The ViT patch size from backbone.overrides.patch_size or the timm name (..._patch16_...), None if unknown."""
    if "patch_size" in cfg.overrides:
        return cfg.overrides["patch_size"]
    m = re.search(r"patch(\d+)", cfg.name)
    return int(m.group(1)) if m else None


def check_backbone_name(name: str) -> None:
    """Raise ConfigError unless `name` (optionally with a .pretrained_tag) is a timm ViT.

    Imports timm (slow), so stages call it where they need it rather than on every load."""
    import difflib

    import timm

    arch = name.split(".")[0]
    vits = timm.list_models("*vit*")
    if arch in vits:
        return
    close = difflib.get_close_matches(arch, vits, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    what = "a timm ViT" if arch in timm.list_models() else "a timm model"
    raise ConfigError(f"params: 'backbone.name' is {name!r}, not {what}; {hint}allowed values: the ViTs of timm "
                      "(python -c \"import timm; print(timm.list_models('*vit*'))\"), e.g. vit_tiny_patch16_224, "
                      "vit_small_patch16_224.dino (the pipeline needs a ViT's patch tokens and attention keys)")


def replace(cfg: Any, **changes: Any) -> Any:
    """A copy of the config object `cfg` with `changes` applied, validated again (a bad value raises ConfigError)."""
    return dataclasses.replace(cfg, **changes)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml (default: in the current directory, where dvc runs stages)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params: file {path} not found (run from the project root, where params.yaml is)")
    with open(path) as f:
        raw = yaml.safe_load(f)
    return parse_params(raw or {})
