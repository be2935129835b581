"""Proposal refinement: foreground IoU against ground truth and time per image for each `proposals.refine`, beside
the features' own time per image (the issue's bound: refinement no slower than the features).

    python benchmarks/refine.py --project /path/to/a/run          # a project whose prepare and features stages ran

For the training split's images of that run (its params.yaml: the proposals section, the backbone), with the
patch proposals of its features: pixel masks by each setting (grabcut as params.yaml; grabcut at each
--grabcut-max-side; guided at a few radii / eps; none), timed per image (one process, torch / OpenCV threads as
given), pooled foreground IoU of each image's masks together against ground truth > 0 at the original size (as
evaluate's proposals_fg_iou), and the IoU of each setting's masks (their union per image, pooled) with the first
row's (how far a cheaper setting moves the masks, ground truth or not). Features: the backbone's forward
pass on the same prepared images, batch 1 and batch 32, ms per image. Prints a markdown table. Reads ground truth:
a benchmark, never part of the DAG.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from pipeline import io
from pipeline.backbone import factory as bb
from pipeline.config import parse_params
from pipeline.evaluate import metrics
from pipeline.method import proposals


def feature_ms(p, project: Path, images: list[np.ndarray], batch: int) -> float:
    size = io.read_manifest(project / "data/01_prepare")["image_size"]
    model = bb.from_stage(p.backbone, project / "data/02_pretrain/backbone.pth", size).eval()
    same = [im for im in images if im.shape == images[0].shape][:max(batch, 32)]
    x = bb.normalize(bb.to_tensor(np.stack(same)))
    with torch.inference_mode():
        bb.dense_features(model, x[:batch])
        t0 = time.perf_counter()
        for i in range(0, len(x), batch):
            bb.dense_features(model, x[i:i + batch])
    return (time.perf_counter() - t0) / len(x) * 1000


def guided_setting(spec: str) -> dict:
    """'16:1e-3' -> radius 16, eps 1e-3, subsample 1; '16:1e-3:4' -> subsample 4."""
    radius, eps, *sub = spec.split(":")
    return {"refine_radius": int(radius), "refine_eps": float(eps), "refine_subsample": int(sub[0]) if sub else 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--project", type=Path, required=True)
    ap.add_argument("--images", type=int, default=100, help="first N training images")
    ap.add_argument("--guided", nargs="+", default=["4:1e-3", "8:1e-3", "16:1e-3", "16:1e-4", "24:1e-3"],
                    help="guided settings RADIUS:EPS[:SUBSAMPLE] (subsample 1 when left out)")
    ap.add_argument("--grabcut-max-side", type=int, nargs="*", default=[],
                    help="grabcut rows with proposals.refine_max_side = each of these (besides params.yaml's)")
    args = ap.parse_args()
    project = args.project
    p = parse_params(yaml.safe_load((project / "params.yaml").read_text()))
    prep = project / "data/01_prepare"
    names, grids = io.read_shards(project / "data/03_features", p.proposals.affinity)
    names, grids = names[:args.images], grids[:args.images]
    images = [io.read_image(prep / "images" / f"{n}.png") for n in names]
    gts = [io.read_label(prep / "gt" / f"{n}.png") if (prep / "gt" / f"{n}.png").exists() else None for n in names]
    cands = [proposals.patch_proposals(g.astype(np.float32), p.proposals) for g in grids]
    print(f"{project}: {len(names)} images of {images[0].shape[:2]} px, patch grid {grids[0].shape[:2]}; "
          f"torch threads {torch.get_num_threads()}, cpu count {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
    print("| refine | settings | foreground IoU | IoU with the first row's masks | ms per image |")
    print("|---|---|---|---|---|")
    settings = [("grabcut", {})] + [("grabcut", {"refine_max_side": s}) for s in args.grabcut_max_side] \
        + [("guided", guided_setting(g)) for g in args.guided] + [("none", {})]
    first: list[np.ndarray] = []
    for refine, extra in settings:
        cfg = p.proposals.model_copy(update={"refine": refine, **extra})
        inter = union = 0
        t0 = time.perf_counter()
        maps = []
        for im, g, c in zip(images, grids, cands):
            maps.append(proposals.pixel_masks(im, c, im.shape[0] // g.shape[0], cfg)[0])
        ms = (time.perf_counter() - t0) / len(images) * 1000
        for m, gt in zip(maps, gts):
            if gt is not None:
                i, u = metrics.foreground_counts(metrics.to_size(m, gt.shape) > 0, gt)
                inter, union = inter + i, union + u
        first = first or maps  # the first row's mask maps stand in for ground truth: > 0 is foreground
        counts = [metrics.foreground_counts(m > 0, f) for m, f in zip(maps, first)]
        agree = sum(i for i, _ in counts) / max(1, sum(u for _, u in counts))
        print(f"| {refine} | {extra or ''} | {inter / max(union, 1):.3f} | {agree:.3f} | {ms:.1f} |", flush=True)
    for batch in (1, 32):
        print(f"features (forward pass), batch {batch}: {feature_ms(p, project, images, batch):.1f} ms per image")


if __name__ == "__main__":
    main()
