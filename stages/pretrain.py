"""Stage pretrain: the backbone's weights (hub / local file / self-supervised on the prepared images / random) -> backbone.pth."""
import time
from pathlib import Path

import torch

from pipeline import io
from pipeline.backbone import factory as bb
from pipeline.backbone import pretrain
from pipeline.config import load_params
from pipeline.data import video
from pipeline.report import viz


def main() -> None:
    p = load_params()
    out = Path(p.paths.pretrain)
    if p.pretrain.threads:
        torch.set_num_threads(p.pretrain.threads)
    manifest = io.read_manifest(p.paths.prepare)
    start = time.time()
    torch.manual_seed(p.seed)
    model = bb.create_backbone(p.backbone, manifest["image_size"])
    history = []
    if p.backbone.source == "pretrain":  # images of different sizes are centre-cropped to one square
        images = pretrain.square_crops(io.read_image_list(p.paths.prepare, manifest["names"]))
        videos = video.frame_indices(manifest["videos"], manifest["names"]) if "videos" in manifest else None
        model, history = pretrain.fit(model, images, p.pretrain, p.seed, videos, p.motion,
                                      bb.pick_device(p.pretrain.device))
        io.write_json(out / "history.json", history)
        viz.save_curve(out / "loss.png", [r["loss"] for r in history], f"{p.pretrain.method} loss per epoch", "epoch")
    state = pretrain.cpu_state(model)
    with io.atomic_open(out / "backbone.pth") as f:
        torch.save(state, f)
    info = pretrain.info(p.backbone, p.pretrain.method, state, (out / "backbone.pth").read_bytes(), history)
    io.write_json(out / "info.json", info)
    # Wall time is printed, not stored: info.json stays identical between runs, so dvc.lock does too.
    print(f"pretrain: {info['source']} backbone ({info['params']} parameters) in {time.time() - start:.1f} s "
          f"-> {out / 'backbone.pth'}")


if __name__ == "__main__":
    main()
