"""The prepare stage's work: both splits of the dataset read (or generated) in order, each image and label written
as a PNG over a process pool (images/<name>.png, gt/<name>.png), and the manifest listing them (see stages/prepare.py
for its fields)."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from tqdm import tqdm

from pipeline import io, parallel
from pipeline.config import DataConfig, VideoConfig
from pipeline.data import datasets, video

GT_INSTANCES = "gt_instances.json"  # a COCO set's instance masks of the training images, for the mask AP50


class Written(NamedTuple):
    """What the prepare stage wrote: the names of each split in order, each image's original [H, W], and the names
    with a usable label, in order."""
    names: dict[str, list[str]]
    sizes: dict[str, list[int]]
    labelled: list[str]


def load_splits(data: DataConfig, video_cfg: VideoConfig, seed: int, eval_split: str,
                skipped: list[tuple[str, str]], patch: int) -> dict[str, Iterator[datasets.Sample]]:
    """{"train": samples, "eval": samples} of the dataset data.name names (a video set cut by video_cfg), images
    resized for a backbone of `patch`; files and labels left out are appended to `skipped` as (file, reason)."""
    if data.name in video.KINDS:
        return {"train": video.load(data, video_cfg, seed, skipped, patch=patch),
                "eval": video.load_eval(data, video_cfg, seed, skipped, patch=patch)}
    return {"train": datasets.load(data, seed, skipped, patch=patch),
            "eval": datasets.load_eval(data, seed, eval_split, skipped, patch=patch)}


def unique_names(part: str, samples: Iterable[tuple], part_of: dict[str, str]) -> Iterator[tuple]:
    """`samples` of split `part`, each name recorded in `part_of` ({name: split}); a name seen before (in this split
    or the other) raises InputError: names are unique across splits, the evaluation split is held out."""
    for name, image, label, size in samples:
        if name in part_of:
            raise io.InputError(f"prepare: two images map to the name {name!r}" if part_of[name] == part else
                                f"prepare: {name!r} is in both the training and the evaluation split; "
                                "the evaluation split must be held out (names are unique across splits)")
        part_of[name] = part
        yield name, image, label, size


def write_sample(sample: tuple, out: Path) -> tuple[str, tuple[int, int], bool]:
    """One prepared sample (name, image (H, W, 3) uint8, label (H0, W0) uint8 or None, original size) -> its PNGs
    under `out` (images/, gt/) -> (name, original size, whether it has a label). Runs in a worker process."""
    name, image, label, size = sample
    io.write_image(out / "images" / f"{name}.png", image)
    if label is not None:
        io.write_label(out / "gt" / f"{name}.png", label)
    return name, size, label is not None


def write_splits(parts: dict[str, Iterator[datasets.Sample]], out: Path, workers: int) -> Written:
    """Every sample of every split -> its PNGs under `out`, read here in order and encoded over `workers`."""
    written = Written({part: [] for part in parts}, {}, [])
    part_of: dict[str, str] = {}
    for part, samples in parts.items():
        for name, size, has_label in tqdm(parallel.map_images(partial(write_sample, out=out),
                                                              unique_names(part, samples, part_of), workers),
                                          desc=f"prepare {part}", unit="img"):
            if has_label:
                written.labelled.append(name)
            written.names[part].append(name)
            written.sizes[name] = [int(size[0]), int(size[1])]
    return written


def manifest(data: DataConfig, written: Written, skipped: int) -> dict:
    """The manifest of what `write_splits` wrote from the dataset `data`, `skipped` files and labels left out."""
    names, has, is_video = written.names, set(written.labelled), data.name in video.KINDS
    out = {
        "dataset": data.name, "names": names["train"], "eval_names": names["eval"], "sizes": written.sizes,
        "image_size": data.image_size, "num_classes": data.num_classes,
        "class_names": video.class_names(data) if is_video else datasets.class_names(data),
        "has_labels": all(n in has for n in names["train"]),
        "eval_has_labels": bool(names["eval"]) and all(n in has for n in names["eval"]),
        "labelled": written.labelled, "skipped": skipped}
    if data.name == "coco":
        out["gt_instances"] = GT_INSTANCES
    if is_video:  # which prepared training images are consecutive frames of one video, in time order
        out["videos"] = video.sequences(names["train"])
    return out
