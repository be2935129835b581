"""Stage proposals: object masks per image from the sources in proposals.sources -> masks/<name>.png
(0 none, i = proposal i), overlays, scores. saliency: normalized cut on patch features; motion (video
datasets): what moves against the camera between neighbouring frames (residual pictures in motion/)."""
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline import io, parallel
from pipeline.config import ConfigError, Params, load_params
from pipeline.data import video
from pipeline.method import motion, proposals
from pipeline.report import viz


def main() -> None:
    p = load_params()
    out = Path(p.paths.proposals)
    manifest = io.read_manifest(p.paths.prepare)
    sources = p.proposals.sources
    if "motion" in sources and "videos" not in manifest:
        raise ConfigError(f"params: 'proposals.sources' includes motion but data.name is {manifest['dataset']!r} "
                          f"(still images); motion needs data.name {' or '.join(video.KINDS)}, else use [saliency]")
    near = video.neighbours(manifest["videos"]) if "motion" in sources else {}
    key = "keys" if p.proposals.affinity == "keys" else "tokens"
    items = ((name, f) for names, feats in io.iter_shards(p.paths.features, key) for name, f in zip(names, feats))
    propose = partial(propose_image, p=p, near=near)
    table = dict(tqdm(parallel.map_images(propose, items, p.workers), total=len(manifest["names"]), desc="proposals",
                      unit="img"))
    by_source = {s: sum(r["source"] == s for rows in table.values() for r in rows) for s in sources}
    count = sum(by_source.values())
    io.write_json(out / "proposals.json", table)
    empty = sum(1 for v in table.values() if not v)
    io.write_json(out / "summary.json", {"images": len(table), "proposals": count, "images_without_proposal": empty,
                                         "by_source": by_source})
    print(f"proposals: {count} masks ({by_source}) on {len(table)} images ({empty} without any) -> {out}")


@lru_cache(maxsize=8)
def read_frame(prepare: str, name: str) -> np.ndarray:
    """A prepared image (H, W, 3) uint8; the last few are kept (motion reads each frame's neighbours too)."""
    return io.read_image(Path(prepare) / "images" / f"{name}.png")


def propose_image(item: tuple[str, np.ndarray], p: Params, near: dict[str, list[str]]) -> tuple[str, list[dict]]:
    """One image: (name, its (h, w, D) feature grid) -> (name, its proposals.json rows), having written
    masks/<name>.png, overlays/<name>.jpg (and motion/<name>.jpg). Runs in a worker process (parallel.map_images)."""
    name, f = item
    out, sources = Path(p.paths.proposals), p.proposals.sources
    image = read_frame(p.paths.prepare, name)
    patch = image.shape[0] // f.shape[0]
    if image.shape[:2] != (f.shape[0] * patch, f.shape[1] * patch):
        raise io.InputError(f"{name}: prepared image of {image.shape[:2]} pixels but a feature grid of "
                            f"{f.shape[:2]} patches (re-run the features stage: `dvc repro features`)")
    lists, extras, min_pixels = [], [], []
    for src in sources:
        if src == "saliency":
            cands = proposals.patch_proposals(f, p.proposals)
            sal_map, kept = proposals.pixel_masks(image, cands, patch, p.proposals)
            lists.append([(sal_map == i + 1, k.score) for i, k in enumerate(kept)])
            extras.append([{"eigenvector": k.eig} for k in kept])
            min_pixels.append(p.proposals.min_patches * patch * patch // 2)
        else:
            moving, residual = motion.frame_masks(image, [read_frame(p.paths.prepare, n) for n in near[name]], p.motion)
            io.write_image(out / "motion" / f"{name}.jpg", motion.residual_picture(residual, p.motion.threshold))
            lists.append([(m.mask, m.score) for m in moving])
            extras.append([{"residual_px": round(m.residual, 3)} for m in moving])
            min_pixels.append(int(p.motion.min_area * image.shape[0] * image.shape[1]))
    mask_map, kept = motion.combine(lists, image.shape[:2], p.proposals.nms_iou, min_pixels)
    io.write_label(out / "masks" / f"{name}.png", mask_map)
    io.write_image(out / "overlays" / f"{name}.jpg", viz.overlay(image, mask_map))
    return name, [{"id": i + 1, "source": sources[s], "score": round(score, 4), **extras[s][j],
                   "pixels": int((mask_map == i + 1).sum())} for i, (s, j, score) in enumerate(kept)]

if __name__ == "__main__":
    main()
