"""The params.yaml schema: one frozen pydantic model per section, `Params` for the whole file. The models hold NO
defaults (every field is required; params.yaml holds every value, documented by its comment there), only types,
bounds (`Field`), choices (`Literal`) and, in `model_validator`s, the checks spanning fields. A missing or unknown
key, a wrong type (strict: an int is accepted for a float, a string never for a number, a bool never for an int) or
a value out of range raises ONE `ConfigError` naming each bad dotted key, its value and what is allowed (errors.py).
Fields on one line belong together.
"""
import typing
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.backbone import vit_name
from pipeline.config.errors import ConfigError, config_error, require
from pipeline.config.paths import Paths

def _patch_multiple(size: int, patch: int | None) -> int:
    """An example of a valid side for an error message: the largest multiple of `patch` up to `size` (at least one
    patch)."""
    p = patch or 1
    return max(p, size // p * p)

class _Raising(type(BaseModel)):  # building a section directly (not by parse_params) raises ConfigError too
    def __call__(cls, **values: Any) -> Any:
        try:
            return super().__call__(**values)
        except ValidationError as e:
            raise validation_error(e, cls) from None

class _Section(BaseModel, metaclass=_Raising):
    """A params.yaml section: every key required, none unknown, strict types, immutable."""
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

Pos, NonNeg, Crop = (Annotated[int, Field(ge=n)] for n in (1, 0, 16))  # Crop: a crop side, pixels
PosF, NonNegF = Annotated[float, Field(gt=0)], Annotated[float, Field(ge=0)]
Scale = Annotated[float, Field(gt=0, le=1)]  # (0, 1]
Share = Annotated[float, Field(gt=0, lt=1)]  # (0, 1)
Unit = Annotated[float, Field(ge=0, le=1)]  # [0, 1]
Device = Literal["auto", "cpu", "cuda"]
Refine = Literal["grabcut", "none"]

class DataConfig(_Section):
    name: Literal["synthetic", "folder", "voc2012", "coco", "synthetic_video", "video"]
    root: str; split: str; download: bool  # root: unless synthetic*; split, num_classes: fixed by voc2012 and coco
    image_size: int = Field(ge=32); num_classes: int = Field(ge=2)  # image_size: see Params
    synth_images: int = Field(ge=8); synth_eval_images: NonNeg; synth_max_objects: int = Field(ge=1, le=6)
    eval_root: str; eval_fraction: float = Field(ge=0, le=0.9)  # the evaluation split of folder / video sets
    max_images: NonNeg; max_eval_images: NonNeg; on_bad_image: Literal["skip", "error"]; min_image_side: Pos

    @model_validator(mode="after")
    def _dataset_rules(self):
        require(self, self.name in ("synthetic", "synthetic_video") or self.root, "root", self.root,
                f"must name a folder when data.name is {self.name}")
        require(self, not (self.eval_root and self.eval_fraction), "eval_fraction", self.eval_fraction,
                f"must be 0 when data.eval_root is set ({self.eval_root!r}): the evaluation split is either a second "
                "folder (eval_root) or a share of data.root (eval_fraction), not both")
        splits, classes = {"voc2012": (("train", "val", "trainval", "trainaug"), 21),
                           "coco": (("train", "val"), 81)}.get(self.name, ((self.split,), self.num_classes))
        require(self, self.split in splits, "split", self.split, f"allowed values for {self.name}: {', '.join(splits)}")
        return require(self, self.num_classes == classes, "num_classes", self.num_classes,
                       f"must be {classes} for {self.name} ({classes - 1} classes + background)")

class VideoConfig(_Section):
    stride: Pos; max_frames: NonNeg
    synth_clips: Pos; synth_frames: int = Field(ge=2); synth_camera_speed: NonNegF
    synth_object_speed: list[float]  # [min, max]

    @model_validator(mode="after")
    def _speed_range(self):
        sp = self.synth_object_speed
        return require(self, len(sp) == 2 and 0 < sp[0] <= sp[1], "synth_object_speed", sp,
                       "must be [min, max] with 0 < min <= max")

class BackboneConfig(_Section):
    name: str  # a timm ViT: check_backbone_name (imports timm, so the stages that need it call it)
    overrides: dict[str, Any]  # timm create_model kwargs
    source: Literal["file", "hub", "pretrain", "random"]
    weights: str; hf_cache: str  # weights: required when source is file

    @model_validator(mode="after")
    def _weights_and_overrides(self):
        require(self, self.source != "file" or self.weights, "weights", self.weights,
                "must name a file when backbone.source is file")
        for k, v in self.overrides.items():
            require(self, isinstance(v, (int, float, str, bool)), f"overrides.{k}", v, "must be a number, string or bool")
        ps = self.overrides.get("patch_size", 1)
        return require(self, type(ps) is int and ps >= 1, "overrides.patch_size", ps, "must be an integer >= 1")

PretrainMethod = Literal["dino", "deepcluster", "context", "jigsaw", "colorization", "inpainting", "multitask",
                         "temporal_order", "tracking"]  # the one list of pretrain methods
PretextTask = Literal[tuple(m for m in typing.get_args(PretrainMethod) if m not in ("dino", "multitask"))]

class DeepClusterConfig(_Section):
    k: int = Field(ge=2); pca_dim: int = Field(ge=2); kmeans_iters: Pos; recluster_epochs: Pos
    crop_size: Crop; crop_scale_min: Scale

class ContextConfig(_Section):
    patch: Pos; gap: NonNeg; jitter: NonNeg; color_drop: bool; hidden_dim: Pos

class JigsawConfig(_Section):
    permutations: int = Field(ge=2, le=5000); tile: int = Field(ge=8); grid_crop: int  # grid_crop >= 3 * tile
    hidden_dim: Pos; gray_prob: Unit

    @model_validator(mode="after")
    def _grid_holds_the_tiles(self):
        return require(self, self.grid_crop >= 3 * self.tile, "grid_crop", self.grid_crop,
                       f"must be >= 3 * tile = {3 * self.tile}")

class ColorizationConfig(_Section):
    grid: float = Field(ge=2, le=60); cells: Pos; crop_size: Crop; crop_scale_min: Scale

class InpaintingConfig(_Section):
    mask: Literal["central", "random_block", "random_region"]
    size: Share; coverage: Share; block: Share; overlap: NonNeg; overlap_weight: PosF; crop_size: Crop; crop_scale_min: Scale

class MultitaskConfig(_Section):
    tasks: dict[PretextTask, NonNegF]  # objective -> loss weight, one > 0

    @model_validator(mode="after")
    def _one_task_on(self):
        return require(self, any(v > 0 for v in self.tasks.values()), "tasks", self.tasks, "needs one weight > 0")

class TemporalOrderConfig(_Section):
    mode: Literal["shuffle", "sort"]; positive_fraction: Share
    span: Annotated[NonNeg, AfterValidator(lambda v: require(v, not 0 < v < 4, "", v, "must be 0 or >= 4"))]
    motion_weighted: bool; crop_size: Crop; crop_scale_min: Scale; jitter: NonNeg; channel_split: bool; hidden_dim: Pos

class TrackingConfig(_Section):
    patch: int = Field(ge=8); track_frames: Pos; queries_per_frame: Pos; margin: float = Field(gt=0, le=2)
    hidden_dim: Pos; out_dim: Pos; hard_negatives: NonNeg; hard_after_epochs: NonNeg
    negatives: Literal["other_video", "same_frame"]

class PretrainConfig(_Section):
    """Top level: DINO and the schedule every method shares; one nested section per other objective."""

    method: PretrainMethod
    epochs: Pos; batch_size: Pos; lr: PosF; min_lr: NonNegF; warmup_epochs: NonNeg; weight_decay: NonNegF
    weight_decay_end: NonNegF; out_dim: Pos; hidden_dim: Pos; bottleneck_dim: Pos; head_bn: bool  # the DINO head
    teacher_temp: PosF; warmup_teacher_temp: PosF; warmup_teacher_temp_epochs: NonNeg; student_temp: PosF
    momentum_teacher: float = Field(ge=0, lt=1); center_momentum: float = Field(ge=0, lt=1)
    freeze_last_layer_epochs: NonNeg; clip_grad: NonNegF
    global_crop_size: Pos; local_crop_size: Pos; local_crops: NonNeg
    global_scale_min: Scale; local_scale_max: float = Field(gt=0.05, le=1)
    crops: Literal["batched", "per_image"]  # batched: the whole batch at once on the device (backbone/crops.py)
    stop_after_epochs: NonNeg; max_minutes: NonNegF; threads: NonNeg; device: Device; pretext_lr: PosF
    deepcluster: DeepClusterConfig; context: ContextConfig; jigsaw: JigsawConfig; colorization: ColorizationConfig
    inpainting: InpaintingConfig; multitask: MultitaskConfig; temporal_order: TemporalOrderConfig; tracking: TrackingConfig

class FeaturesConfig(_Section):
    batch_size: Pos; shard_size: Pos; device: Device
    precision: Literal["auto", "fp32", "bf16"]  # auto: bf16 on CUDA, fp32 on the CPU

class ProposalsConfig(_Section):
    affinity: Literal["keys", "tokens"]; tau: float = Field(ge=-1, lt=1); eps: PosF
    num_eigs: Pos; fg_rule: Literal["border", "seed"]; components: Literal["all", "seed"]
    min_patches: Pos; max_per_image: Pos; nms_iou: Scale
    min_score: float = Field(ge=0, lt=2); refine: Literal["grabcut", "guided", "none"]; refine_iters: Pos
    refine_max_side: NonNeg  # grabcut only
    refine_radius: Pos; refine_eps: PosF; refine_subsample: Pos  # guided only
    sources: list[Literal["auto", "ncut", "saliency", "motion"]]  # [auto] alone, or each once

    @model_validator(mode="after")
    def _sources_once(self):
        ok = self.sources == ["auto"] or (0 < len(self.sources) == len(set(self.sources)) and "auto" not in self.sources)
        return require(self, ok, "sources", self.sources, "must be [auto], or list ncut, saliency and/or motion, "
                       "each once")

class SaliencyConfig(_Section):
    """Classic saliency (pipeline/method/saliency.py) and its refinement by a network (saliency_refine.py)."""
    cues: list[Literal["rbd", "mbd"]]; superpixels: int = Field(ge=2); compactness: PosF  # cues: each once
    sigma_clr: PosF; sigma_bndcon: PosF; sigma_spa: PosF; mu: NonNegF; border_link: Literal["colour", "zero"]  # RBD
    mbd_passes: Pos; border_strip: Share; smooth_alpha: NonNegF  # MBD+
    threshold: Literal["otsu", "twice_mean"]; min_area: Share  # the maps -> proposals
    rounds: NonNeg; epochs: Pos; momentum: Unit; ignore_band: Unit; crf: bool  # the refinement (rounds 0: none)

    @model_validator(mode="after")
    def _cues_once(self):
        return require(self, 0 < len(self.cues) == len(set(self.cues)), "cues", self.cues,
                       "must list rbd and/or mbd, each once")

class MotionConfig(_Section):
    flow: Literal["dis", "farneback"]; dis_finest_scale: NonNeg; dis_patch_size: int = Field(ge=2)
    dis_patch_stride: Pos; farneback_window: int = Field(ge=3)  # dis_patch_stride < dis_patch_size
    camera: Literal["homography", "affine"]; grid_step: Pos; ransac_threshold: PosF; min_inliers: Unit
    threshold: PosF; morph: NonNeg; min_area: Share; max_per_image: Pos; refine: Refine; refine_band: Pos; refine_iters: Pos

    @model_validator(mode="after")
    def _stride_within_patch(self):
        return require(self, self.dis_patch_stride < self.dis_patch_size, "dis_patch_stride", self.dis_patch_stride,
                       f"must be < dis_patch_size = {self.dis_patch_size}")

class DistillConfig(_Section):
    method: Literal["none", "maskrcnn"]; backbone: Literal["stage_vit", "resnet18_fpn", "resnet50_fpn"]
    pretrained: bool  # resnet*_fpn only
    lr: PosF; backbone_lr: NonNegF; iterations: Pos; batch_size: Pos; device: Device
    score: Unit; max_per_image: int = Field(ge=1, le=254)  # masks are ids of a uint8 index map

class ClusterConfig(_Section):
    k: Pos | Literal["auto"]; method: Literal["kmeans", "spectral"]; n_init: Pos; gallery_per_cluster: Pos
    backend: Literal["sklearn", "faiss"]; fit_sample: int = Field(ge=100)  # k-means here and in merge's parts
    k_rule: Literal["davies_bouldin", "silhouette", "eigengap"]; k_min: Pos; k_max: Pos  # k auto only
    embedding: Literal["tokens", "crop_cls"]  # crop_cls: the keys below; crop_size is checked against the patch in Params
    crop_size: Crop; crop_margin: float = Field(ge=0, le=1); crop_background: Literal["keep", "grey"]
    crop_token: Literal["cls", "mean"]; crop_batch_size: Pos; whiten_dim: NonNeg; device: Device
    mode: Literal["objects", "dense"]  # dense: every patch clustered (pipeline/method/dense.py); see Params
    dense_features: Literal["tokens", "tokens_colour", "stego"]; dense_colour_weight: NonNegF
    dense_alpha: PosF; dense_crf: bool
    stego_dim: Pos; stego_steps: Pos; stego_batch: int = Field(ge=2); stego_lr: PosF  # dense_features stego only
    stego_samples: Pos; stego_knn: Pos; stego_negatives: NonNeg; stego_images: int = Field(ge=2)
    stego_intra_weight: NonNegF; stego_inter_weight: NonNegF; stego_neg_weight: NonNegF
    stego_intra_shift: float; stego_inter_shift: float; stego_neg_shift: float

    @model_validator(mode="after")
    def _k_range(self):
        require(self, self.k_rule == "eigengap" or self.k_min >= 2, "k_min", self.k_min,
                f"must be >= 2 with cluster.k_rule {self.k_rule} (a score of one cluster is undefined; eigengap can try 1)")
        return require(self, self.k_min <= self.k_max, "k_max", self.k_max, f"must be >= cluster.k_min = {self.k_min}")

    @property
    def k_bound(self) -> int:
        """The most classes the cluster stage can make: k, or k_max when k is auto."""
        return self.k_max if self.k == "auto" else self.k

class FilterConfig(_Section):
    keep: Scale; folds: int = Field(ge=2); weight_distance: Unit
    score: Literal["embedding", "detector", "both"]  # detector, both: need distill.method maskrcnn (see Params)

class MergeConfig(_Section):
    method: Literal["majority", "leopart", "none"]; parts: int = Field(ge=2); resolution: PosF  # resolution: Louvain
    weight_cooccur: NonNegF; weight_adjacent: NonNegF; min_agreement: Scale  # majority only
    pca_dim: int = Field(ge=2); edge_threshold: float = Field(ge=0, lt=1); algorithm: Literal["infomap", "louvain"]
    markov_time: PosF; trials: Pos; gallery_per_community: Pos  # leopart only
    max_tokens_in_memory: Pos  # more foreground tokens: parts fitted on a seeded sample, assigned shard by shard

    @model_validator(mode="after")
    def _sample_holds_the_parts(self):
        n = self.max_tokens_in_memory
        return require(self, n >= self.parts, "max_tokens_in_memory", n,
                       f"must be >= merge.parts = {self.parts} (the parts are fitted on at most this many tokens)")

class TrainConfig(_Section):
    DEEPLAB_BACKBONES: ClassVar = ("resnet50", "resnet101", "mobilenet_v3_large")
    epochs: Pos; batch_size: Pos; lr: PosF; backbone_lr: NonNegF; weight_decay: NonNegF
    decoder_dim: Pos
    decoder: Literal["simple", "fused"]; stem_dim: Pos  # fused: a pixel stem at 1/4 fused with the tokens
    stem_stride: Literal[2, 4]  # fused: the stem's (and the logits') resolution, 1/2 or 1/4
    warmup_epochs: NonNeg  # linear lr warm-up before the cosine decay
    crop_scale_min: Scale
    crop_scale_max: Annotated[float, Field(gt=0, le=4)]  # > 1: crops larger than the image (zoom out)
    color_jitter: Annotated[float, Field(ge=0, le=1)]  # brightness/contrast/saturation share, hue half of it
    device: Device; threads: NonNeg
    model: Literal["stage", "timm", "deeplabv3"]; model_name: str; pretrained: bool  # model_name: see below
    rounds: Pos; round_epochs: Pos; relabel_threshold: Scale  # self-training
    self_training: Literal["continue", "comus"]; first_round: Literal["all", "core"]
    crf_rounds: NonNeg  # retrainings on the CRF-refined predictions (the crf section), after the rounds
    workers: NonNeg; amp: bool; checkpoint_every: Pos

    @model_validator(mode="after")
    def _model_name_fits_the_model(self):
        require(self, self.model == "stage" or self.model_name, "model_name", self.model_name,
                f"must name a model when train.model is {self.model}")
        return require(self, self.model != "deeplabv3" or self.model_name in self.DEEPLAB_BACKBONES, "model_name",
                       self.model_name, f"allowed values for deeplabv3: {', '.join(self.DEEPLAB_BACKBONES)}")

    @model_validator(mode="after")
    def _decoder_fits_the_model(self):
        return require(self, self.decoder == "simple" or self.model != "deeplabv3", "decoder", self.decoder,
                       "allowed values for deeplabv3: simple (DeepLabv3 brings its own ASPP head)")

    @model_validator(mode="after")
    def _crop_scales_are_a_range(self):
        return require(self, self.crop_scale_min <= self.crop_scale_max, "crop_scale_max", self.crop_scale_max,
                       f"must be >= train.crop_scale_min = {self.crop_scale_min}")

    @model_validator(mode="after")
    def _warmup_fits_the_schedule(self):
        require(self, self.warmup_epochs < self.epochs, "warmup_epochs", self.warmup_epochs,
                f"must be < train.epochs = {self.epochs} (the cosine decay follows the warm-up)")
        return require(self, self.rounds == 1 or self.warmup_epochs < self.round_epochs, "warmup_epochs",
                       self.warmup_epochs, f"must be < train.round_epochs = {self.round_epochs} when train.rounds > 1 "
                       "(every round warms its fresh optimiser up again)")

class CRFConfig(_Section):
    """The dense CRF (Kraehenbuehl & Koltun) on the network's probabilities: MaskDistill's utils/crf.py."""
    iterations: Pos; gaussian_weight: NonNegF; gaussian_sxy: PosF  # mean-field steps; the smoothness kernel
    bilateral_weight: NonNegF; bilateral_sxy: PosF; bilateral_srgb: PosF  # the appearance kernel
    predictions: bool; workers: NonNeg  # workers: CRF processes (0 = every core)

class EvaluateConfig(_Section):
    split: str  # voc2012, coco: the split scored ('' = none); checked against data.split in Params
    match: Literal["iou", "pixels"]
    baseline_kmeans_init: Pos; baseline_pixels: int = Field(ge=1000); baseline_patches: int = Field(ge=1000)

class ReportConfig(_Section):
    journey_images: list[Annotated[str, Field(min_length=1)]]  # names in data/01_prepare/images, without .png
    journey_count: NonNeg; gallery_size: Pos; tile_size: Crop; confusion_rows: int = Field(ge=10)

class Params(_Section):
    """The whole params.yaml, one attribute per section (+ `paths`, which is no parameter)."""

    seed: NonNeg; workers: NonNeg  # workers: processes of the per-image stages (0 = every core)
    processes: Literal["auto"] | Pos  # torchrun processes of the stages with per-image work (auto: one per GPU)
    data: DataConfig; video: VideoConfig; backbone: BackboneConfig; pretrain: PretrainConfig
    features: FeaturesConfig; saliency: SaliencyConfig; proposals: ProposalsConfig; motion: MotionConfig; distill: DistillConfig
    cluster: ClusterConfig; filter: FilterConfig; merge: MergeConfig; train: TrainConfig; crf: CRFConfig
    evaluate: EvaluateConfig; report: ReportConfig
    paths: ClassVar[Paths] = Paths()  # not a parameter: where the stages write

    @model_validator(mode="after")
    def _image_size_fits_the_patch(self):
        patch, size = vit_name.patch_size(self.backbone.name, self.backbone.overrides), self.data.image_size
        return require(self, not patch or size % patch == 0, "data.image_size", size, "must be a multiple of the "
                       f"backbone's patch size {patch}, e.g. {_patch_multiple(size, patch)}")

    @model_validator(mode="after")
    def _crop_size_fits_the_patch(self):
        patch, size = vit_name.patch_size(self.backbone.name, self.backbone.overrides), self.cluster.crop_size
        return require(self, self.cluster.embedding != "crop_cls" or not patch or size % patch == 0,
                       "cluster.crop_size", size, f"must be a multiple of the backbone's patch size {patch} when "
                       f"cluster.embedding is crop_cls, e.g. {_patch_multiple(size, patch)}")

    @model_validator(mode="after")
    def _detector_scores_exist(self):
        return require(self, self.filter.score == "embedding" or self.distill.method != "none", "filter.score",
                       self.filter.score, f"needs detector scores, but distill.method is {self.distill.method!r}: "
                       "set distill.method maskrcnn, or filter.score embedding")

    @model_validator(mode="after")
    def _parts_over_cluster_the_classes(self):
        k, what = self.cluster.k_bound, "cluster.k" if self.cluster.k != "auto" else "cluster.k_max (cluster.k auto)"
        return require(self, self.merge.method != "leopart" or self.merge.parts > k, "merge.parts",
                       self.merge.parts, f"must be > {what} = {k} when merge.method is leopart "
                       "(the parts over-cluster the classes, which are communities of parts)")

    @model_validator(mode="after")
    def _faiss_without_infomap(self):  # faiss-cpu 1.15 and infomap 2.x in one process: infomap segfaults (measured)
        return require(self, self.cluster.backend != "faiss" or self.merge.method != "leopart"
                       or self.merge.algorithm != "infomap", "cluster.backend", self.cluster.backend,
                       "cannot run with merge.algorithm 'infomap' (merge.method leopart): infomap crashes in a process "
                       "that loaded faiss; set merge.algorithm louvain, or cluster.backend sklearn")

    @model_validator(mode="after")
    def _dense_mode_has_no_masks(self):
        if self.cluster.mode != "dense":
            return self
        why = ("cluster.mode is 'dense' (every patch is clustered, no object masks: {}); "
               "use cluster.mode objects for that")
        require(self, self.cluster.k != "auto", "cluster.k", self.cluster.k,
                "must be a number when cluster.mode is 'dense' (k auto chooses among mask embeddings)")
        require(self, self.cluster.method == "kmeans", "cluster.method", self.cluster.method,
                "must be 'kmeans' when cluster.mode is 'dense' (spectral clustering of every patch does not fit in memory)")
        require(self, self.filter.score == "embedding", "filter.score", self.filter.score,
                "must be 'embedding' when " + why.format("no detector scores; the filter passes the labels on"))
        require(self, self.distill.method == "none", "distill.method", self.distill.method,
                "must be 'none' when " + why.format("nothing for a detector to distil"))
        return require(self, self.merge.method == "none", "merge.method", self.merge.method,
                       "must be 'none' when " + why.format("no parts or masks to merge; the merge passes the labels on"))

    DISJOINT_SPLITS: ClassVar = ({"train", "val"}, {"trainaug", "val"})  # voc2012 / coco splits sharing no image

    @model_validator(mode="after")
    def _evaluation_split_is_held_out(self):
        name, fit, score = self.data.name, self.data.split, self.evaluate.split
        if name not in ("voc2012", "coco") or not score:
            return self
        splits = {"voc2012": ("train", "val", "trainval", "trainaug"), "coco": ("train", "val")}[name]
        require(self, score in splits, "evaluate.split", score,
                f"allowed values for {name}: '' (no evaluation split), {', '.join(splits)}")
        return require(self, {fit, score} in self.DISJOINT_SPLITS, "evaluate.split", score,
                       f"shares images with data.split {fit!r}; the scored split must be held out: fit on "
                       f"{' or '.join(s for s in ('train', 'trainaug') if s in splits)} and score val "
                       "(or evaluate.split '' for no evaluation split)")

# each model -> the dotted key of its section in params.yaml ('' for the whole file), for the error messages
SECTION_KEYS = {Params: "", **{f.annotation: prefix + name
                               for prefix, m in (("", Params), ("pretrain.", PretrainConfig))
                               for name, f in m.model_fields.items() if f.annotation in _Section.__subclasses__()}}


def validation_error(e: ValidationError, model: type) -> ConfigError:
    """A ValidationError of `model` (Params or one of its sections) -> the ConfigError naming the dotted keys."""
    return config_error(e, model, SECTION_KEYS[model])


def check_backbone_name(name: str) -> None:
    """Raise ConfigError unless `name` (optionally with a .pretrained_tag) is a timm ViT. Imports timm (slow), so
    stages call it where they need it rather than on every load."""
    problem = vit_name.problem(name)
    if problem:
        raise ConfigError(f"params: 'backbone.name' is {name!r}, {problem}; allowed values: the ViTs of timm "
                          "(python -c \"import timm; print(timm.list_models('*vit*'))\"), e.g. vit_tiny_patch16_224, "
                          "vit_small_patch16_224.dino (the pipeline needs a ViT's patch tokens and attention keys)")
