"""Training cost of recipes on a real run's data: milliseconds per image per epoch of `loop.train` (not a test).

    python -m benchmarks.train_recipes --project . \\
        --recipe old=train.decoder=simple,train.decoder_dim=128,train.epochs=12,train.batch_size=16,train.crop_scale_max=1.0,train.backbone_lr=0.0001 \\
        --recipe default=

In a project whose prepare, pretrain and merge stages ran: the first --images prepared training images with their
merged labels, each recipe (params.yaml's train section with NAME=key=value,... applied, then --epochs epochs,
which only sets how long the timing runs) trained from the pretrain stage's weights on the CPU with --threads torch
threads (the stage's DataLoader workers as the recipe says). Prints one markdown row per recipe: ms per image per
epoch, and that times the recipe's own epochs and the project's training images (the fit of a full train stage).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml

from pipeline import io
from pipeline.backbone import factory as bb
from pipeline.config import apply_sets, parse_params, replace
from pipeline.train import loop
from pipeline.train.models import build_model
from scripts.ceiling_grid import parse_recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--recipe", action="append", required=True, help="NAME=key=value,key=value (may repeat)")
    ap.add_argument("--images", type=int, default=160, help="training images timed")
    ap.add_argument("--epochs", type=int, default=2, help="epochs timed per recipe")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    raw = yaml.safe_load((args.project / "params.yaml").read_text())
    base = parse_params(raw)
    paths = {k: args.project / getattr(base.paths, k) for k in ("prepare", "pretrain", "cluster", "merge")}
    manifest = io.read_manifest(paths["prepare"])
    names = manifest["names"][:args.images]
    images = [io.LazyImages(paths["prepare"], names)[i] for i in range(len(names))]
    labels = [io.LazyLabels(paths["merge"] / "labels", names)[i] for i in range(len(names))]
    classes = io.cluster_k(paths["cluster"]) + 1
    print(f"{len(names)} images of {args.project.resolve().name}, {args.epochs} epochs each, {args.threads} threads")
    print("| recipe | changes | ms per image per epoch | fit of the train stage (s) |\n|---|---|---|---|")
    for spec in args.recipe:
        name, changes = parse_recipe(spec)
        cfg = parse_params(apply_sets(raw, changes)).train
        run = replace(cfg, epochs=args.epochs)
        torch.manual_seed(0)
        model = build_model(run, classes, manifest["image_size"], lambda: bb.from_stage(
            base.backbone, paths["pretrain"] / "backbone.pth", manifest["image_size"]))
        tick = time.time()
        loop.train(model, images, labels, run, 0, torch.device("cpu"))
        ms = (time.time() - tick) / (args.epochs * len(names)) * 1000
        fit = ms / 1000 * cfg.epochs * len(manifest["names"])
        print(f"| {name} | {', '.join(changes) or '(params.yaml)'} | {ms:.1f} | {fit:.0f} |", flush=True)


if __name__ == "__main__":
    main()
