"""Stage features: the backbone's dense patch tokens and attention keys for every image, in float16 shards."""
from pathlib import Path

from tqdm import tqdm

from pipeline import io
from pipeline.backbone import factory as bb
from pipeline.backbone import features
from pipeline.config import load_params


def main() -> None:
    p = load_params()
    manifest = io.read_manifest(p.paths.prepare)
    names = manifest["names"]
    model = bb.from_stage(p.backbone, Path(p.paths.pretrain) / "backbone.pth", manifest["image_size"])
    device = bb.pick_device(p.features.device)
    writer = io.ShardWriter(p.paths.features, p.features.shard_size)
    bar = tqdm(total=len(names), desc="features", unit="img")
    # Images are read one chunk at a time, so memory stays bounded whatever the dataset's size.
    chunk = max(p.features.batch_size, 1)
    for start in range(0, len(names), chunk):
        batch_names = names[start:start + chunk]
        images = io.read_images(p.paths.prepare, batch_names)
        for arrays in features.extract(model, images, p.features.batch_size, device):
            for i, name in enumerate(batch_names):
                writer.add(name, {k: v[i] for k, v in arrays.items()})
        bar.update(len(batch_names))
    writer.close()
    bar.close()
    print(f"features: {len(names)} images on {device} -> {p.paths.features}")


if __name__ == "__main__":
    main()
