"""Dense mode (cluster.mode dense): every patch of every training image is clustered into cluster.k classes, for
scenes whose classes are stuff (road, sky, wall) rather than salient objects; there is no background class.

What is clustered (cluster.dense_features): the unit patch tokens (`tokens`); the unit tokens beside each patch's mean
colour (`tokens_colour`, weighted by cluster.dense_colour_weight); or the unit codes of STEGO's head trained on the
tokens (`stego`, pipeline/method/stego.py). K-means (cluster.backend, cluster.n_init starts) is fitted on a seeded
sample of at most cluster.fit_sample patches (kmeans.TokenSample) and every image's patches are then assigned shard by
shard, so memory stays bounded. Each image's class probabilities are softmax(cluster.dense_alpha x cosine to each
centre) on its patch grid (STEGO's cluster probe with its alpha), written as (k, h, w) float16 shards; the pseudolabels
stage upsamples them to the image (bilinear), refines them by the dense CRF on the image (cluster.dense_crf, the crf
section's settings, as STEGO does) and writes the argmax as classes 1..k (0, background, is never given).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline import distributed, io
from pipeline.config import ClusterConfig, CRFConfig
from pipeline.method import kmeans, stego
from pipeline.method.vectors import unit_rows
from pipeline.report import viz
from pipeline.train.crf import dense_crf

def patch_colours(image: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 image whose sides are grid x the patch size -> (h, w, 3) float32 mean colour of each patch,
    in [0, 1]."""
    h, w = grid
    ph, pw = image.shape[0] // h, image.shape[1] // w
    x = image[:h * ph, :w * pw].astype(np.float32).reshape(h, ph, w, pw, 3)
    return x.mean((1, 3)) / 255.0


def patch_rows(tokens: np.ndarray, image: np.ndarray | None, cfg: ClusterConfig,
               head: stego.Head | None) -> np.ndarray:
    """One image's tokens (h, w, D) (and its (H, W, 3) image for tokens_colour) -> (h * w, F) float32 rows that are
    clustered, row-major: unit tokens; unit tokens + dense_colour_weight x the patch colour centred on grey, over
    sqrt(3) (at most dense_colour_weight long); or the unit codes of the STEGO head."""
    x = tokens.reshape(-1, tokens.shape[-1]).astype(np.float32)
    if cfg.dense_features == "stego":
        return stego.codes(head, x)
    x = unit_rows(x)
    if cfg.dense_features == "tokens_colour":
        rgb = (patch_colours(image, tokens.shape[:2]).reshape(-1, 3) - 0.5) * (2 / np.sqrt(3))
        x = np.concatenate([x, cfg.dense_colour_weight * rgb], 1).astype(np.float32)
    return x


def fit_centres(sample: np.ndarray, k: int, n_init: int, seed: int, backend: kmeans.Backend) -> np.ndarray:
    """(S, F) rows -> (k, F) float32 unit centres of k-means (`backend`, n_init seeded starts) on their unit
    vectors."""
    if len(sample) < k:
        raise ValueError(f"params: 'cluster.k' is {k} but the training split has only {len(sample)} patches")
    centres = kmeans.fit(unit_rows(sample.astype(np.float32)), k, n_init, kmeans.MAX_ITER, seed, backend)
    return unit_rows(centres)


def probabilities(rows: np.ndarray, centres: np.ndarray, grid: tuple[int, int], alpha: float) -> np.ndarray:
    """(h * w, F) rows, (k, F) unit centres -> (k, h, w) float32 softmax over classes of alpha x cosine."""
    logits = alpha * unit_rows(rows.astype(np.float32)) @ centres.T
    p = np.exp(logits - logits.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True)).T.reshape(len(centres), *grid).astype(np.float32)


def upsample(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(k, h, w) probabilities -> (k, H, W) float32, bilinear (align_corners False, as the network's logits)."""
    t = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32))[None]
    return F.interpolate(t, size=tuple(int(v) for v in size), mode="bilinear", align_corners=False)[0].numpy()


def pseudo_label(image: np.ndarray, probs: np.ndarray, crf: CRFConfig | None) -> np.ndarray:
    """(H, W, 3) uint8 image, (k, h, w) patch probabilities -> (H, W) uint8 classes 1..k: the argmax of the
    probabilities upsampled to the image, refined first by the dense CRF on the image when `crf` is given."""
    up = upsample(probs, image.shape[:2])
    up = up / up.sum(0, keepdims=True)
    if crf is not None:
        up = dense_crf(image, up, crf)
    return (up.argmax(0) + 1).astype(np.uint8)


def _images(features: str | Path, prepare: str | Path, colour: bool) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, tokens (h, w, D), image (H, W, 3) or None) of every training image, shard by shard."""
    for names, grids in io.iter_shards(features, "tokens"):
        for name, tok in zip(names, grids):
            yield name, tok, io.read_image(Path(prepare) / "images" / f"{name}.png") if colour else None


def stego_head(features: str | Path, cfg: ClusterConfig, seed: int) -> tuple[stego.Head, list[float]]:
    """The STEGO head trained on the tokens of a seeded subset of at most cluster.stego_images training images."""
    index = io.read_json(Path(features) / "index.json")
    names = [n for s in index["shards"] for n in s["names"]]
    keep = set(np.random.default_rng(seed).permutation(len(names))[:cfg.stego_images].tolist())
    chosen = {names[i] for i in keep}
    grids = [tok.copy() for ns, gs in io.iter_shards(features, "tokens") for n, tok in zip(ns, gs) if n in chosen]
    if len(grids) < 2:
        raise ValueError("cluster.dense_features stego needs at least 2 training images")
    w = stego.LossWeights(cfg.stego_intra_weight, cfg.stego_inter_weight, cfg.stego_neg_weight,
                          cfg.stego_intra_shift, cfg.stego_inter_shift, cfg.stego_neg_shift)
    return stego.train_head(grids, cfg.stego_dim, cfg.stego_steps, cfg.stego_batch, cfg.stego_lr, cfg.stego_samples,
                            cfg.stego_knn, cfg.stego_negatives, w, seed, log_every=max(cfg.stego_steps // 10, 1))


@dataclass
class DenseResult:
    """What `cluster_dense` made: the centres, each class's patch count, the STEGO losses (empty without it), and
    for the gallery each class's images with the largest share of that class (best first)."""

    centres: np.ndarray
    sizes: list[int]
    losses: list[float]
    top_images: list[list[str]]


def cluster_dense(features: str | Path, prepare: str | Path, out: str | Path, cfg: ClusterConfig, k: int,
                  seed: int, per_class: int) -> DenseResult:
    """The dense cluster stage: rows of every training patch (`patch_rows`), k-means on a seeded sample of them,
    every image's (k, h, w) probabilities -> out/dense/ shards (key io.DENSE_PROBS, the features' shard size)."""
    head, losses = stego_head(features, cfg, seed) if cfg.dense_features == "stego" else (None, [])
    colour = cfg.dense_features == "tokens_colour"
    sample = kmeans.TokenSample(cfg.fit_sample, seed)
    for _, tok, image in _images(features, prepare, colour):
        sample.add(patch_rows(tok, image, cfg, head))
    centres = fit_centres(sample.rows(), k, cfg.n_init, seed, cfg.backend)
    shard_size = max(len(s["names"]) for s in io.read_json(Path(features) / "index.json")["shards"])
    writer, sizes, shares = io.ShardWriter(Path(out) / "dense", shard_size), np.zeros(k, np.int64), {}
    for name, tok, image in _images(features, prepare, colour):
        probs = probabilities(patch_rows(tok, image, cfg, head), centres, tok.shape[:2], cfg.dense_alpha)
        counts = np.bincount(probs.argmax(0).ravel(), minlength=k)
        sizes += counts
        shares[name] = counts / counts.sum()
        writer.add(name, {io.DENSE_PROBS: probs.astype(np.float16)})
    writer.close()
    top = [sorted(shares, key=lambda n: -shares[n][c])[:per_class] for c in range(k)]
    return DenseResult(centres, sizes.tolist(), losses, top)


def class_gallery(prepare: str | Path, out: str | Path, top_images: list[list[str]], per_class: int) -> np.ndarray:
    """One gallery row per class: its images with the largest share of it, the class's patches (nearest-upsampled
    argmax of out/dense's probabilities) outlined in the class colour (viz.mask_tile, 64 px tiles)."""
    probs = io.dense_probs(out)
    tiles = []
    for c, names in enumerate(top_images):
        for name in names:
            image = io.read_image(Path(prepare) / "images" / f"{name}.png")
            grid = probs.get(name).argmax(0) == c
            mask = np.kron(grid, np.ones((image.shape[0] // grid.shape[0], image.shape[1] // grid.shape[1]), bool))
            tiles.append(viz.mask_tile(image, mask, io.palette()[c + 1], 64))
        tiles += [np.full((64, 64, 3), 255, np.uint8)] * (per_class - len(names))
    return viz.grid(tiles, per_class)


def _write_label(prepare: Path, out: Path, crf: CRFConfig | None, item: tuple[str, np.ndarray]) -> str:
    name, probs = item
    image = io.read_image(prepare / "images" / f"{name}.png")
    io.write_maps(out, [name], pseudo_label(image, probs.astype(np.float32), crf)[None], image[None])
    return name


def write_labels(prepare: str | Path, cluster_dir: str | Path, out: str | Path, names: list[str],
                 crf: CRFConfig | None, workers: int) -> None:
    """The dense pseudolabels stage: every image's probabilities (cluster_dir/dense) -> `pseudo_label` ->
    out/labels/<name>.png (classes 1..k, at the prepared size) and out/overlays/, over `workers` processes (the
    files do not depend on the count)."""
    probs = io.dense_probs(cluster_dir, names)
    items = ((n, probs.get(n)) for n in names)
    write = partial(_write_label, Path(prepare), Path(out), crf)
    for _ in tqdm(distributed.map_images(write, items, workers), total=len(names), desc="pseudolabels", unit="img"):
        pass
