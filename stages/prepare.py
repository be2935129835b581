"""Stage prepare: materialise the dataset as images/<name>.png, ground truth apart in gt/, and a manifest."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm  # noqa: E402

from pipeline import datasets, io  # noqa: E402
from pipeline.config import load_params  # noqa: E402


def main() -> None:
    p = load_params()
    out = Path(p.paths.prepare)
    names, has_labels = [], []
    for name, image, label in tqdm(datasets.load(p.data, p.seed), desc="prepare", unit="img"):
        io.write_image(out / "images" / f"{name}.png", image)
        if label is not None:
            io.write_label(out / "gt" / f"{name}.png", label)
        names.append(name)
        has_labels.append(label is not None)
    if len(set(names)) != len(names):
        raise io.InputError("prepare: two images map to the same name")
    extra = {}
    if p.data.name == "coco":  # instance masks for the evaluate stage's mask AP50
        io.write_json(out / "gt_instances.json", datasets.coco_instances(p.data))
        extra["gt_instances"] = "gt_instances.json"
    io.write_json(out / "manifest.json", {
        "dataset": p.data.name, "names": names, "image_size": p.data.image_size,
        "num_classes": p.data.num_classes, "class_names": datasets.class_names(p.data),
        "has_labels": all(has_labels) and bool(has_labels), **extra})
    print(f"prepare: {len(names)} images -> {out}")


if __name__ == "__main__":
    main()
