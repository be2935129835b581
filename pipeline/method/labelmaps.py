"""The label maps of the pseudolabels, filter and merge stages, written the one way: each image's mask map (the
distill stage's) with every mask given a class, as an indexed-palette PNG and an overlay; image by image over
`workers` processes (pipeline/parallel.py) in each torchrun process, each its share of the images
(pipeline/distributed.py): the files do not depend on either count."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pipeline import distributed, io


def render_labels(mask_map: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(H, W) mask map (0 none, i = mask i) and classes (M,) (class of mask i+1, 255 = ignore)
    -> (H, W) uint8 label map: background 0, mask i -> classes[i-1]."""
    lut = np.zeros(256, np.uint8)
    lut[1:len(classes) + 1] = classes
    return lut[mask_map]


def classes_by_image(records: list[dict], classes: Iterable[int]) -> dict[str, dict[int, int]]:
    """Mask records ({"image", "mask", ...}) and a class for each (or 255 = ignore) -> {image: {mask id: class}},
    what write_mask_labels reads."""
    out: dict[str, dict[int, int]] = {}
    for r, c in zip(records, classes):
        out.setdefault(r["image"], {})[r["mask"]] = c
    return out


def write_mask_labels(prepare_dir: str | Path, masks_dir: str | Path, out: str | Path, names: list[str],
                      mask_classes: dict[str, dict[int, int]], desc: str, workers: int) -> None:
    """The per-image loop of the pseudolabels, filter and merge stages: for each image, its mask map
    (masks_dir/masks/<name>.png, the distill stage's; (H, W) 0 = none, i = mask i) with mask i ->
    mask_classes[name][i] (a class, or 255 = ignore; an image without masks is all background) ->
    out/labels/<name>.png and out/overlays/, over `workers` processes (0 = every core)."""
    def classes(name: str) -> np.ndarray:
        cls = mask_classes.get(name, {})
        return np.array([cls[i] for i in sorted(cls)], np.uint8)

    items = ((name, (classes(name),)) for name in names)
    write_rendered_labels(prepare_dir, masks_dir, out, items, render_labels, desc, workers, total=len(names))


def write_rendered_labels(prepare_dir: str | Path, masks_dir: str | Path, out: str | Path,
                          items: Iterable[tuple[str, tuple]], render: Callable[..., np.ndarray], desc: str,
                          workers: int, total: int | None = None) -> None:
    """As write_mask_labels, for label maps that are not one class per mask (merge.method leopart: a class per
    patch inside the masks): items (name, args), render(mask map (H, W) uint8, *args) -> (H, W) uint8 label map,
    written to out/labels/<name>.png and out/overlays/. `render` must pickle (a module-level function) when
    workers != 1; `total` (the number of items) is for the progress bar."""
    write = partial(_write_one, Path(prepare_dir), Path(masks_dir), Path(out), render)
    for _ in tqdm(distributed.map_images(write, items, workers), total=total, desc=desc, unit="img"):
        pass


def _write_one(prepare_dir: Path, masks_dir: Path, out: Path, render: Callable[..., np.ndarray],
               item: tuple[str, tuple[Any, ...]]) -> str:
    name, args = item
    lab = render(io.read_label(masks_dir / "masks" / f"{name}.png"), *args)
    image = io.read_image(prepare_dir / "images" / f"{name}.png")
    io.write_maps(out, [name], lab[None], image[None])
    return name


def pass_on(src: str | Path, out: str | Path, names: list[str], stage: str, why: str) -> None:
    """A label-map folder's labels/<name>.png and overlays/<name>.jpg -> the same files under `out`, byte for byte,
    and a log line "<stage>: <why>: the labels pass on unchanged" (the filter and merge stages of cluster.mode
    dense, and merge.method none); under torch.distributed each process copies its `shard` of the names."""
    for name in distributed.shard(names, *distributed.world()):
        for sub, ext in (("labels", "png"), ("overlays", "jpg")):
            io.write_bytes(Path(out) / sub / f"{name}.{ext}", (Path(src) / sub / f"{name}.{ext}").read_bytes())
    if distributed.is_main():
        print(f"{stage}: {why}: the labels of {src} pass on unchanged -> {out}", flush=True)
