"""Mask embeddings: each mask's pooled patch tokens (cluster.embedding tokens, `token_embeddings`), or its crop
through the backbone (crop_cls, `crop_embeddings`), as MaskDistill, COMUS and Deep Spectral Methods embed
their masks: each mask's bounding box, grown by a margin, is cut from the prepared image, resized to a square of
cluster.crop_size, its pixels outside the mask kept or greyed out, and run through the backbone; the crop's class
token (or the mean of its patch tokens) is PCA-whitened and L2-normalised.

What the anchors do, read from their code, and where this departs:
- MaskDistill (`utils/cluster.py`, `process`): the detection box exactly (no margin), cut at native resolution and
  zero-padded up to a multiple of the patch (not resized), background kept; CLS of DINO ViT-S/8; every dimension
  divided by its standard deviation (`scipy.cluster.vq.whiten`, no rotation), then L2-normalised; MiniBatchKMeans.
- COMUS (`comus/datasets/pascal_voc.py`, `PascalVOCSegmentationSaliency`): the saliency box exactly, resized to a
  256 x 256 square (aspect not kept), ImageNet normalisation, background kept; CLS of DINO ViT-S/8; no whitening;
  spectral clustering.
- Deep Spectral Methods (`extract/extract.py`, `extract_bboxes` / `extract_bbox_features` / `extract_bbox_clusters`):
  the box of the segment eroded by 2 and dilated by 5 patches (a margin of about 3 patches), cut at native
  resolution, background kept; CLS; L2-normalised, then PCA to 32 dims without whitening; MiniBatchKMeans.
Here: the margin is relative to the box (`crop_margin`, a share of its height / width on each side), so that it
scales with the object, unlike DSM's fixed patch count; crops are resized to one square size as COMUS does, so
that they batch (MaskDistill and DSM run one crop at a time); the background can be greyed out to the backbone's
normalisation mean (none of the three does; it keeps a neighbour's colour out of the embedding); the whitening is
a seeded PCA with whitening (a rotation and a scaling: identity covariance), where MaskDistill only scales each
dimension, and DSM reduces without scaling.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from torch import nn

from pipeline import io
from pipeline.backbone import factory as bb
from pipeline.config import BackboneConfig, ClusterConfig
from pipeline.method import cluster, proposals
from pipeline.method.vectors import unit_rows

Box = tuple[int, int, int, int]  # (y0, x0, y1, x1), ends exclusive


def crop_box(mask: np.ndarray, margin: float) -> Box:
    """(H, W) bool mask, not empty -> its bounding box grown by int(margin * h + 0.5) rows above and below and
    int(margin * w + 0.5) columns left and right (h, w: the box's own height and width), clipped to the image."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    dy, dx = int(margin * (y1 - y0) + 0.5), int(margin * (x1 - x0) + 0.5)
    return max(y0 - dy, 0), max(x0 - dx, 0), min(y1 + dy, mask.shape[0]), min(x1 + dx, mask.shape[1])


def cut(image: np.ndarray, mask: np.ndarray, box: Box, background: str) -> np.ndarray:
    """(H, W, 3) uint8 image, (H, W) bool mask, box -> (y1 - y0, x1 - x0, 3) float32 in [0, 1]: the box's pixels;
    background 'grey' sets the pixels outside the mask to the backbone's normalisation mean (factory.MEAN, 0 after
    normalisation), 'keep' leaves them."""
    y0, x0, y1, x1 = box
    crop = image[y0:y1, x0:x1].astype(np.float32) / 255.0
    if background == "grey":
        crop[~mask[y0:y1, x0:x1]] = bb.MEAN
    return crop


def mask_crops(image: np.ndarray, mask_map: np.ndarray, ids: Iterable[int], size: int, margin: float,
               background: str) -> Iterator[torch.Tensor]:
    """(H, W, 3) uint8 image, (H, W) mask map (mask i where it is i) and mask ids -> per id a (3, size, size)
    float32 crop in [0, 1] (`crop_box`, `cut`, then a bilinear antialiased resize to the square; aspect not kept)."""
    for i in ids:
        mask = mask_map == i
        crop = torch.from_numpy(cut(image, mask, crop_box(mask, margin), background)).permute(2, 0, 1)[None]
        yield F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


def check_crop_size(model: nn.Module, size: int) -> None:
    """Raise ValueError unless the crop side is a multiple of the ViT's patch size (for backbones whose patch size
    params.yaml does not tell; config.Params checks the others on load)."""
    p = bb.patch_size(model)
    if size % p:
        raise ValueError(f"params: 'cluster.crop_size' is {size}; must be a multiple of the backbone's patch size {p}, "
                         f"e.g. {max(p, size // p * p)}")


@torch.no_grad()
def crop_features(model: nn.Module, crops: Iterable[torch.Tensor], batch_size: int, device: torch.device,
                  token: str) -> np.ndarray:
    """Crops (a stream of M (3, s, s) float tensors in [0, 1], one size) -> (M, D) float32 backbone features, in
    order: `token` 'cls' = the final normed class token, 'mean' = the mean of the crop's final normed patch tokens.

    Crops go through the backbone batch_size at a time (the stream is consumed as it goes, so M can be large);
    normalised with factory.normalize as the features stage does; bf16 autocast on CUDA, float32 on the CPU.
    """
    if token == "cls" and getattr(model, "cls_token", None) is None:
        raise ValueError("params: 'cluster.crop_token' is 'cls' but the backbone has no class token; use mean")
    model = model.to(device).eval()
    amp = device.type == "cuda"
    out, batch = [], []

    def run() -> None:
        x = bb.normalize(torch.stack(batch).to(device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            tokens = model.forward_features(x)
        feats = tokens[:, 0] if token == "cls" else tokens[:, model.num_prefix_tokens:].mean(1)
        out.append(feats.float().cpu().numpy())
        batch.clear()

    for crop in crops:
        batch.append(crop)
        if len(batch) == max(batch_size, 1):
            run()
    if batch:
        run()
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, model.num_features), np.float32)


def whiten(x: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """(M, D) -> (M, d) PCA-whitened (sklearn PCA(whiten=True), random_state=seed): centred, rotated onto the
    principal axes and scaled to unit variance, so the sample covariance (ddof 1) is the identity.
    d = min(dim, D, M - 1): the centred M rows span at most M - 1 directions, and whitening a direction of zero
    variance would blow up rounding noise. dim 0 (or M < 2) = no whitening: x as float32."""
    d = min(dim, x.shape[1], len(x) - 1)
    if dim == 0 or d < 1:
        return x.astype(np.float32)
    return PCA(d, whiten=True, random_state=seed).fit_transform(x.astype(np.float64)).astype(np.float32)


def token_embeddings(features: str | Path, distill: str | Path, table: dict[str, list[dict]],
                     pooled: bool) -> tuple[list[dict], np.ndarray | None]:
    """The distill stage's proposals.json table ({image: [{"id", "detector_score"?, ...}]}), read with the features
    shard by shard -> one record per mask in shard order ({"image", "mask"}, with "detector_score" when the
    distill stage gave one) and, when pooled, their (M, D) embeddings (cluster.mask_embeddings on the mask
    maps' patch coverage), else None."""
    records, embs = [], []
    for names, tokens in io.iter_shards(features, "tokens"):
        for name, tok in zip(names, tokens):
            if not table[name]:
                continue
            if pooled:
                mask_map = io.read_label(Path(distill) / "masks" / f"{name}.png")
                embs.append(cluster.mask_embeddings(tok, proposals.patch_fractions(mask_map, len(table[name]),
                                                                                   tok.shape[:2])))
            for m in table[name]:
                rec = {"image": name, "mask": m["id"]}
                if m.get("detector_score") is not None:  # distill.method maskrcnn
                    rec["detector_score"] = m["detector_score"]
                records.append(rec)
    return records, (np.concatenate(embs) if pooled else None)


def crop_embeddings(prepare: str | Path, distill: str | Path, weights: str | Path, backbone: BackboneConfig,
                    cfg: ClusterConfig, records: list[dict], seed: int) -> np.ndarray:
    """cluster.embedding crop_cls: the pretrain stage's backbone (weights, as the features stage loads it) on every
    record's mask crop, in record order -> (M, d) whitened, unit-norm float32 embeddings."""
    size = io.read_manifest(prepare)["image_size"]
    model = bb.from_stage(backbone, weights, size)
    check_crop_size(model, cfg.crop_size)
    by_image: dict[str, list[int]] = {}
    for r in records:
        by_image.setdefault(r["image"], []).append(r["mask"])
    crops = (crop for name, ids in by_image.items()
             for crop in mask_crops(io.read_image(Path(prepare) / "images" / f"{name}.png"),
                                    io.read_label(Path(distill) / "masks" / f"{name}.png"),
                                    ids, cfg.crop_size, cfg.crop_margin, cfg.crop_background))
    feats = crop_features(model, crops, cfg.crop_batch_size, bb.pick_device(cfg.device), cfg.crop_token)
    return unit_rows(whiten(feats, cfg.whiten_dim, seed))
