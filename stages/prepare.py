"""Stage prepare: materialise both splits of the dataset as images/<name>.png (short side data.image_size, aspect
kept, sides multiples of the backbone's patch size), ground truth apart in gt/ at the ORIGINAL size, and a manifest:
`names` (the training split, all the label-free stages read), `eval_names` (the held-out evaluation split), `sizes`
({name: [H, W]} original), `has_labels` / `eval_has_labels` and `labelled` (the names with a usable gt/<name>.png).
Files left out (bad images under data.on_bad_image: skip, non-image files) and labels left out of evaluation (the
image is still used) are listed in skipped.csv."""
import sys
from functools import partial
from pathlib import Path

from tqdm import tqdm

from pipeline import io, parallel
from pipeline.config import backbone_patch_size, check_backbone_name, load_params
from pipeline.data import datasets, video


def main() -> None:
    p = load_params()
    check_backbone_name(p.backbone.name)  # the first stage: a typo in backbone.name fails before any work
    out = Path(p.paths.prepare)
    patch = backbone_patch_size(p.backbone) or 1
    skipped: list[tuple[str, str]] = []
    is_video = p.data.name in video.KINDS
    if is_video:
        parts = {"train": video.load(p.data, p.video, p.seed, skipped, patch=patch),
                 "eval": video.load_eval(p.data, p.video, p.seed, skipped, patch=patch)}
    else:
        parts = {"train": datasets.load(p.data, p.seed, skipped, patch=patch),
                 "eval": datasets.load_eval(p.data, p.seed, p.evaluate.split, skipped, patch=patch)}
    names: dict[str, list[str]] = {"train": [], "eval": []}
    part_of: dict[str, str] = {}
    sizes, labelled = {}, []

    def checked(part: str, samples):  # (name, image, label, size) in the main process: names unique across splits
        for name, image, label, size in samples:
            if name in part_of:
                raise io.InputError(f"prepare: two images map to the name {name!r}" if part_of[name] == part else
                                    f"prepare: {name!r} is in both the training and the evaluation split; "
                                    "the evaluation split must be held out (names are unique across splits)")
            part_of[name] = part
            yield name, image, label, size

    try:
        for part, samples in parts.items():  # read / generated here in order; the PNGs encoded over `workers`
            for name, size, has_label in tqdm(parallel.map_images(partial(write_sample, out=out),
                                                                  checked(part, samples), p.workers),
                                              desc=f"prepare {part}", unit="img"):
                if has_label:
                    labelled.append(name)
                names[part].append(name)
                sizes[name] = [int(size[0]), int(size[1])]
    finally:  # the report is written even when a bad file stops the stage
        io.write_csv(out / "skipped.csv", ["file", "reason"], skipped)
    if not names["train"]:
        raise io.InputError(f"prepare: every image was left out; see {out / 'skipped.csv'} for why")
    has = set(labelled)
    manifest = {
        "dataset": p.data.name, "names": names["train"], "eval_names": names["eval"], "sizes": sizes,
        "image_size": p.data.image_size, "num_classes": p.data.num_classes, "class_names": datasets.class_names(p.data),
        "has_labels": all(n in has for n in names["train"]),
        "eval_has_labels": bool(names["eval"]) and all(n in has for n in names["eval"]),
        "labelled": labelled, "skipped": len(skipped)}
    if p.data.name == "coco":  # instance masks of the training images (the proposals') for the mask AP50
        io.write_json(out / "gt_instances.json", datasets.coco_instances(p.data))
        manifest["gt_instances"] = "gt_instances.json"
    if is_video:  # which prepared training images are consecutive frames of one video, in time order
        manifest.update(class_names=video.class_names(p.data), videos=video.sequences(names["train"]))
    io.write_json(out / "manifest.json", manifest)
    if skipped:
        print(f"prepare: left out {len(skipped)} files or labels, listed with the reason in {out / 'skipped.csv'}; "
              "e.g.\n  " + "\n  ".join(f"{f}: {r}" for f, r in skipped[:3]), file=sys.stderr)
    print(f"prepare: {len(names['train'])} training + {len(names['eval'])} evaluation images -> {out}")


def write_sample(sample: tuple, out: Path) -> tuple[str, tuple[int, int], bool]:
    """One prepared sample (name, image (H, W, 3) uint8, label (H0, W0) uint8 or None, original size) -> its PNGs
    under `out` (images/, gt/) -> (name, original size, whether it has a label). Runs in a worker process."""
    name, image, label, size = sample
    io.write_image(out / "images" / f"{name}.png", image)
    if label is not None:
        io.write_label(out / "gt" / f"{name}.png", label)
    return name, size, label is not None


if __name__ == "__main__":
    main()
