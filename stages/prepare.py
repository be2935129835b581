"""Stage prepare: materialise the dataset as images/<name>.png, ground truth apart in gt/, and a manifest.
Files left out (bad images under data.on_bad_image: skip, non-image files) are listed in skipped.csv."""
import sys
from pathlib import Path

from tqdm import tqdm

from pipeline import io
from pipeline.config import check_backbone_name, load_params
from pipeline.data import datasets, video


def main() -> None:
    p = load_params()
    check_backbone_name(p.backbone.name)  # the first stage: a typo in backbone.name fails before any work
    out = Path(p.paths.prepare)
    names, has_labels, skipped = [], [], []
    is_video = p.data.name in video.KINDS
    samples = video.load(p.data, p.video, p.seed) if is_video else datasets.load(p.data, p.seed, skipped)
    try:
        for name, image, label in tqdm(samples, desc="prepare", unit="img"):
            io.write_image(out / "images" / f"{name}.png", image)
            if label is not None:
                io.write_label(out / "gt" / f"{name}.png", label)
            names.append(name)
            has_labels.append(label is not None)
    finally:  # the report is written even when a bad file stops the stage
        io.write_csv(out / "skipped.csv", ["file", "reason"], skipped)
    if not names:
        raise io.InputError(f"prepare: every image was left out; see {out / 'skipped.csv'} for why")
    if len(set(names)) != len(names):
        raise io.InputError("prepare: two images map to the same name")
    manifest = {
        "dataset": p.data.name, "names": names, "image_size": p.data.image_size,
        "num_classes": p.data.num_classes, "class_names": datasets.class_names(p.data),
        "has_labels": all(has_labels) and bool(has_labels), "skipped": len(skipped)}
    if p.data.name == "coco":  # instance masks for the evaluate stage's mask AP50
        io.write_json(out / "gt_instances.json", datasets.coco_instances(p.data))
        manifest["gt_instances"] = "gt_instances.json"
    if is_video:  # which prepared images are consecutive frames of one video, in time order
        manifest.update(class_names=video.class_names(p.data), videos=video.sequences(names))
    io.write_json(out / "manifest.json", manifest)
    if skipped:
        print(f"prepare: left out {len(skipped)} files, listed with the reason in {out / 'skipped.csv'}; e.g.\n  "
              + "\n  ".join(f"{f}: {r}" for f, r in skipped[:3]), file=sys.stderr)
    print(f"prepare: {len(names)} images -> {out}")


if __name__ == "__main__":
    main()
