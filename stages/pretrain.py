"""Stage pretrain: the backbone's weights (hub / local file / self-supervised on the prepared images / random) -> backbone.pth."""
import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from pipeline import io
from pipeline.backbone import dino, pretext
from pipeline.backbone import factory as bb
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
    if p.backbone.source == "pretrain":
        # The objectives take one stacked array: images of different sizes (aspect ratio kept, short side
        # data.image_size) are centre-cropped to the square of the shortest side; square images stay as they are.
        images = io.read_image_list(p.paths.prepare, manifest["names"])
        side = min(min(im.shape[:2]) for im in images)
        images = np.stack([im[(im.shape[0] - side) // 2:(im.shape[0] - side) // 2 + side,
                              (im.shape[1] - side) // 2:(im.shape[1] - side) // 2 + side] for im in images])
        log = lambda r: print(f"pretrain {p.pretrain.method} epoch {r['epoch']}: loss {r['loss']:.4f} "  # noqa: E731
                              f"({r['minutes']:.1f} min)", flush=True)
        device = bb.pick_device(p.pretrain.device)
        print(f"pretrain {p.pretrain.method} on {device}", flush=True)
        if p.pretrain.method == "dino":
            model, history = dino.train_dino(model, images, p.pretrain, p.seed, log, device)
        else:  # the video objectives need the frames of each video in time order (None on still images)
            videos = video.frame_indices(manifest["videos"], manifest["names"]) if "videos" in manifest else None
            model, history = pretext.train(model, images, p.pretrain, p.seed, log=log, videos=videos, motion=p.motion,
                                           device=device)
        io.write_json(out / "history.json", history)
        viz.save_curve(out / "loss.png", [r["loss"] for r in history], f"{p.pretrain.method} loss per epoch", "epoch")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with io.atomic_open(out / "backbone.pth") as f:
        torch.save(state, f)
    info = {"source": p.backbone.source, "method": p.pretrain.method if p.backbone.source == "pretrain" else None,
            "name": p.backbone.name, "overrides": p.backbone.overrides,
            "weights": p.backbone.weights, "params": sum(v.numel() for v in state.values()),
            "sha256": hashlib.sha256((out / "backbone.pth").read_bytes()).hexdigest(),
            "final_loss": history[-1]["loss"] if history else None,
            "epochs_run": len(history)}
    io.write_json(out / "info.json", info)
    # Wall time is printed, not stored: info.json stays identical between runs, so dvc.lock does too.
    print(f"pretrain: {info['source']} backbone ({info['params']} parameters) in {time.time() - start:.1f} s "
          f"-> {out / 'backbone.pth'}")


if __name__ == "__main__":
    main()
