"""The pictures the cluster and merge stages draw of their classes: per class, the masks or patches most like it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.method import leopart
from pipeline.method.foreground import Foreground
from pipeline.report import viz


def cluster_tiles(prepare: str | Path, distill: str | Path, records: list[dict], labels: np.ndarray,
                  dist: np.ndarray, k: int, per_cluster: int) -> np.ndarray:
    """Mask records ({"image", "mask"}), their cluster (M,) and distance to its centre (M,) -> the gallery picture
    (viz.grid): one row per cluster, its per_cluster masks closest to the centre (64 px tiles, blank where fewer)."""
    tiles = []
    for c in range(k):
        members = [i for i in np.argsort(dist) if labels[i] == c][:per_cluster]
        row = []
        for i in members:
            r = records[i]
            image = io.read_image(Path(prepare) / "images" / f"{r['image']}.png")
            masks = io.read_label(Path(distill) / "masks" / f"{r['image']}.png")
            row.append(viz.mask_tile(image, masks == r["mask"], io.palette()[c + 1], 64))
        tiles += row + [np.full((64, 64, 3), 255, np.uint8)] * (per_cluster - len(row))
    return viz.grid(tiles, per_cluster)


def community_rows(prepare: str | Path, fg: Foreground, res: leopart.Communities, model: leopart.PartModel | None,
                   per_class: int) -> list[tuple[str, list[np.ndarray]]]:
    """merge.method leopart: per class, its caption (its communities, its patches) and the tiles (48 px, a patch
    of context around) of its per_class foreground patches most like the class mean (leopart.typical_patches,
    every image's tokens projected again, one image at a time); no row for a class without patches."""
    cls = res.class_of_patch
    chunks = zip((model(f)[1] for f in fg.tokens()), fg.per_image(cls)) if model is not None else ()
    rows = []
    for c, idx in enumerate(leopart.typical_patches(chunks, res.class_means(), per_class), start=1):
        if len(idx):
            comms = np.flatnonzero(res.community_kept == c - 1).tolist()
            folded = f"\n+ folded: {', '.join(map(str, comms[1:]))}" if len(comms) > 1 else ""
            tiles = [viz.patch_tile(io.read_image(Path(prepare) / "images" / f"{fg.names[m]}.png"),
                                    fg.mask_grids[m].shape, cell, io.palette()[c], 48) for m, cell in fg.locate(idx)]
            rows.append((f"class {c}: community {comms[0]}{folded}\n{int((cls == c).sum())} patches", tiles))
    return rows
