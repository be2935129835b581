"""The label maps of the pseudolabels, filter and merge stages, written the one way: each image's mask map (the
distill stage's) with every mask given a class, as an indexed-palette PNG and an overlay."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline import io
from pipeline.method.cluster import render_labels
from pipeline.report import viz


def write_mask_labels(prepare_dir: str | Path, masks_dir: str | Path, out: str | Path, names: list[str],
                      mask_classes: dict[str, dict[int, int]], desc: str) -> None:
    """The per-image loop of the pseudolabels, filter and merge stages: for each image, its mask map
    (masks_dir/masks/<name>.png, the distill stage's; (H, W) 0 = none, i = mask i) with mask i ->
    mask_classes[name][i] (a class, or 255 = ignore; an image without masks is all background) ->
    out/labels/<name>.png and out/overlays/."""
    def render(name: str, mask_map: np.ndarray) -> np.ndarray:
        cls = mask_classes.get(name, {})
        return render_labels(mask_map, np.array([cls[i] for i in sorted(cls)], np.uint8))

    write_rendered_labels(prepare_dir, masks_dir, out, names, render, desc)


def write_rendered_labels(prepare_dir: str | Path, proposals_dir: str | Path, out: str | Path, names: list[str],
                          render: Callable[[str, np.ndarray], np.ndarray], desc: str) -> None:
    """As write_mask_labels, for label maps that are not one class per mask (merge.method leopart: a class per
    patch inside the masks): render(name, (H, W) proposals mask map) -> (H, W) uint8 label map, written to
    out/labels/<name>.png and out/overlays/."""
    for name in tqdm(names, desc=desc, unit="img"):
        lab = render(name, io.read_label(Path(proposals_dir) / "masks" / f"{name}.png"))
        image = io.read_image(Path(prepare_dir) / "images" / f"{name}.png")
        viz.write_maps(out, [name], lab[None], image[None])
