"""The merge stage's picture of its classes (merge.method leopart): per class, the foreground patches most like it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.method import leopart
from pipeline.method.foreground import Foreground
from pipeline.report import viz


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


def save_communities(path: str | Path, prepare: str | Path, fg: Foreground, res: leopart.Communities,
                     model: leopart.PartModel | None, per_class: int, algorithm: str, seed: int) -> None:
    """merge.method leopart's picture -> `path`: the part graph coloured by class beside each class's
    `community_rows` (the merge stage's communities.png)."""
    rows = community_rows(prepare, fg, res, model, per_class)
    viz.save_communities(Path(path), res.graph, res.community_kept[res.part_community], rows,
                         f"{res.n_parts} parts, {res.graph.number_of_edges()} edges, {algorithm}: "
                         f"{res.communities_found} communities, {res.communities_kept} kept (colour: class)", seed)
