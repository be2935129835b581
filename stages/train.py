"""Stage train: the segmentation network on the merged pseudo-labels (255 ignored), then predict every image."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from dvclive import Live  # noqa: E402

from pipeline import backbone as bb, io, segnet, viz  # noqa: E402
from pipeline.config import load_params  # noqa: E402


def main() -> None:
    p = load_params()
    out = Path(p.paths.train)
    if p.train.threads:
        torch.set_num_threads(p.train.threads)
    manifest = io.read_manifest(p.paths.prepare)
    names = manifest["names"]
    images = io.read_images(p.paths.prepare, names)
    labels = io.read_labels(Path(p.paths.merge) / "labels", names)
    torch.manual_seed(p.seed)
    backbone = bb.from_stage(p.backbone, Path(p.paths.pretrain) / "backbone.pth", manifest["image_size"])
    model = segnet.SegNet(backbone, p.cluster.k + 1, p.train.decoder_dim)
    device = bb.pick_device(p.train.device)
    with Live(str(out / "live"), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        def log(rec: dict) -> None:
            for key in ("loss", "lr", "images_per_second"):
                live.log_metric(f"train/{key}", rec[key])
            live.next_step()
            print(f"train epoch {rec['epoch']}: loss {rec['loss']:.4f} ({rec['images_per_second']:.1f} img/s)", flush=True)

        history = segnet.train(model, images, labels, p.train, p.seed, device, log)
    with io.atomic_open(out / "model.pt") as f:
        torch.save({"state_dict": model.state_dict(), "num_classes": p.cluster.k + 1}, f)
    preds = segnet.predict(model, images, p.train.batch_size, device)
    viz.write_maps(out / "predictions", names, preds, images)
    io.write_json(out / "history.json", history)
    print(f"train: {p.train.epochs} epochs on {device}, final loss {history[-1]['loss']:.4f} -> {out}")


if __name__ == "__main__":
    main()
