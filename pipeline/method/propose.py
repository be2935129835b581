"""The proposals stage's work on one image: the masks of every source in proposals.sources (ncut: the normalized
cut, pipeline/method/proposals.py; saliency: the salient regions of the saliency stage's map,
pipeline/method/saliency.py; motion: pipeline/method/motion.py), combined and written."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.config import ConfigError, MotionConfig, ProposalsConfig, SaliencyConfig
from pipeline.data import video
from pipeline.method import motion, proposals, saliency
from pipeline.report import viz


def resolve_sources(sources: list[str], manifest: dict) -> list[str]:
    """proposals.sources and the prepare stage's manifest -> the list of sources, earlier ranking first: [auto] is
    [motion, ncut] on a video dataset (motion's masks of what moves are the better ones there), [saliency] on
    still images (classic saliency needs no weights and beats the cut on photos: docs/stages.md, "Saliency:
    classic maps and their refinement"); any other list is returned as it is."""
    if sources != ["auto"]:
        return list(sources)
    return ["motion", "ncut"] if "videos" in manifest else ["saliency"]


def neighbours(manifest: dict, sources: list[str]) -> dict[str, list[str]]:
    """The prepare stage's manifest -> each frame's neighbouring frames when a source is motion (else {}); raise
    ConfigError, before any work, when motion is asked of still images."""
    if "motion" not in sources:
        return {}
    if "videos" not in manifest:
        raise ConfigError(f"params: 'proposals.sources' includes motion but data.name is {manifest['dataset']!r} "
                          f"(still images); motion needs data.name {' or '.join(video.KINDS)}, else use auto or [ncut]")
    return video.neighbours(manifest["videos"])


@lru_cache(maxsize=8)
def read_frame(prepare: str, name: str) -> np.ndarray:
    """A prepared image (H, W, 3) uint8; the last few are kept (motion reads each frame's neighbours too)."""
    return io.read_image(Path(prepare) / "images" / f"{name}.png")


def propose_image(item: tuple[str, np.ndarray], out: Path, prepare: str, cfg: ProposalsConfig,
                  motion_cfg: MotionConfig, saliency_cfg: SaliencyConfig, sources: list[str],
                  near: dict[str, list[str]], saliency_maps: Path) -> tuple[str, list[dict]]:
    """One image: (name, its (h, w, D) feature grid) -> (name, its proposals.json rows), having written
    out/masks/<name>.png, overlays/<name>.jpg (and motion/<name>.jpg). `sources`: resolved (`resolve_sources`);
    saliency reads saliency_maps/<name>.png. Runs in a worker process (parallel.map_images)."""
    name, f = item
    image = read_frame(prepare, name)
    patch = image.shape[0] // f.shape[0]
    if image.shape[:2] != (f.shape[0] * patch, f.shape[1] * patch):
        raise io.InputError(f"{name}: prepared image of {image.shape[:2]} pixels but a feature grid of "
                            f"{f.shape[:2]} patches (re-run the features stage: `dvc repro features`)")
    lists, extras, min_pixels = [], [], []
    for src in sources:
        if src == "saliency":
            sal = saliency.from_png(io.read_label(saliency_maps / f"{name}.png"))
            regions = salient_masks(image, sal, cfg, saliency_cfg, patch)
            lists.append(regions)
            extras.append([{} for _ in regions])
            min_pixels.append(int(saliency_cfg.min_area * sal.size))
        elif src == "ncut":
            cands = proposals.patch_proposals(f, cfg)
            sal_map, kept = proposals.pixel_masks(image, cands, patch, cfg)
            lists.append([(sal_map == i + 1, k.score) for i, k in enumerate(kept)])
            extras.append([{"eigenvector": k.eig} for k in kept])
            min_pixels.append(cfg.min_patches * patch * patch // 2)
        else:
            moving, residual = motion.frame_masks(image, [read_frame(prepare, n) for n in near[name]], motion_cfg)
            io.write_image(out / "motion" / f"{name}.jpg", motion.residual_picture(residual, motion_cfg.threshold))
            lists.append([(m.mask, m.score) for m in moving])
            extras.append([{"residual_px": round(m.residual, 3)} for m in moving])
            min_pixels.append(int(motion_cfg.min_area * image.shape[0] * image.shape[1]))
    mask_map, kept = motion.combine(lists, image.shape[:2], cfg.nms_iou, min_pixels)
    io.write_label(out / "masks" / f"{name}.png", mask_map)
    io.write_image(out / "overlays" / f"{name}.jpg", viz.overlay(image, mask_map))
    return name, [{"id": i + 1, "source": sources[s], "score": round(score, 4), **extras[s][j],
                   "pixels": int((mask_map == i + 1).sum())} for i, (s, j, score) in enumerate(kept)]


def salient_masks(image: np.ndarray, sal: np.ndarray, cfg: ProposalsConfig, saliency_cfg: SaliencyConfig,
                  patch: int) -> list[tuple[np.ndarray, float]]:
    """(H, W, 3) uint8 image and its (H, W) saliency map in [0, 1] -> up to cfg.max_per_image (mask (H, W) bool,
    score) best first: the map's salient regions (`saliency.salient_regions`) of score above cfg.min_score, each
    refined as the ncut's masks are (cfg.refine: grabcut on the image, guided filter, or none)."""
    regions = [r for r in saliency.salient_regions(sal, saliency_cfg.threshold,
                                                   int(saliency_cfg.min_area * sal.size))
               if r[1] > cfg.min_score][:cfg.max_per_image]
    if cfg.refine == "grabcut":
        shrunk = proposals.shrunk_for(image, cfg.refine_max_side, cfg.refine_eps) if regions else None
        regions = [(proposals.grabcut_refine(image, m, band=patch // 2, iters=cfg.refine_iters,
                                             max_side=cfg.refine_max_side, eps=cfg.refine_eps, shrunk=shrunk), s)
                   for m, s in regions]
    elif cfg.refine == "guided" and regions:
        guide = proposals.GuidedFilter(image, cfg.refine_radius, cfg.refine_eps, cfg.refine_subsample)
        regions = [(guide.filter(m) > 0.5, s) for m, s in regions]
    return regions


def summary(table: dict[str, list[dict]], sources: list[str]) -> dict:
    """proposals.json's table -> summary.json: images, proposals, images without any, proposals by source."""
    by_source = {s: sum(r["source"] == s for rows in table.values() for r in rows) for s in sources}
    return {"images": len(table), "proposals": sum(by_source.values()),
            "images_without_proposal": sum(1 for v in table.values() if not v), "by_source": by_source}
