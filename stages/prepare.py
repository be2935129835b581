"""Stage prepare: materialise the dataset as images/<name>.png, ground truth apart in gt/, and a manifest."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm  # noqa: E402

from pipeline import datasets, io, video  # noqa: E402
from pipeline.config import load_params  # noqa: E402


def main() -> None:
    p = load_params()
    out = Path(p.paths.prepare)
    names, has_labels = [], []
    is_video = p.data.name in video.KINDS
    samples = video.load(p.data, p.video, p.seed) if is_video else datasets.load(p.data, p.seed)
    for name, image, label in tqdm(samples, desc="prepare", unit="img"):
        io.write_image(out / "images" / f"{name}.png", image)
        if label is not None:
            io.write_label(out / "gt" / f"{name}.png", label)
        names.append(name)
        has_labels.append(label is not None)
    if len(set(names)) != len(names):
        raise io.InputError("prepare: two images map to the same name")
    manifest = {
        "dataset": p.data.name, "names": names, "image_size": p.data.image_size,
        "num_classes": p.data.num_classes, "class_names": datasets.class_names(p.data),
        "has_labels": all(has_labels) and bool(has_labels)}
    if is_video:  # which prepared images are consecutive frames of one video, in time order
        manifest.update(class_names=video.class_names(p.data), videos=video.sequences(names))
    io.write_json(out / "manifest.json", manifest)
    print(f"prepare: {len(names)} images -> {out}")


if __name__ == "__main__":
    main()
