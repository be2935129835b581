"""Stage pseudolabels: dense label maps from clustered masks (background 0, a mask -> its cluster + 1)."""
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline import io
from pipeline.config import load_params
from pipeline.method import cluster
from pipeline.report import viz


def main() -> None:
    p = load_params()
    names = io.read_manifest(p.paths.prepare)["names"]
    masks = io.read_json(Path(p.paths.cluster) / "clusters.json")["masks"]
    classes: dict[str, dict[int, int]] = {}
    for r in masks:
        classes.setdefault(r["image"], {})[r["mask"]] = r["cluster"] + 1
    for name in tqdm(names, desc="pseudolabels", unit="img"):
        mask_map = io.read_label(Path(p.paths.proposals) / "masks" / f"{name}.png")
        cls = classes.get(name, {})
        lab = cluster.render_labels(mask_map, np.array([cls[i] for i in sorted(cls)], np.uint8))
        image = io.read_image(Path(p.paths.prepare) / "images" / f"{name}.png")
        viz.write_maps(p.paths.pseudolabels, [name], lab[None], image[None])
    print(f"pseudolabels: {len(names)} label maps -> {p.paths.pseudolabels}")


if __name__ == "__main__":
    main()
