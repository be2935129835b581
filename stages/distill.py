"""Stage distill: the masks every later stage uses, in data/04_proposals' layout (masks/<name>.png: 0 none,
i = mask i; proposals.json; summary.json). distill.method none: the proposals, unchanged (the same PNG bytes; each
record gets detector_score null). maskrcnn (MaskDistill): a class-agnostic Mask R-CNN trained on the training
split's proposals predicts every training image; its detections scoring >= distill.score, and always each image's
top one, become the masks (score = detector_score = the detector's confidence), drawn in overlays/, with the
training loss in loss.png. An image where the detector finds nothing keeps no mask (as MaskDistill, which writes
no map for it); an image without proposals still gets the detector's masks."""
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline import io
from pipeline.config import Params, load_params
from pipeline.method import distill
from pipeline.report import viz


def main() -> None:
    p = load_params()
    out, src = Path(p.paths.distill), Path(p.paths.proposals)
    manifest = io.read_manifest(p.paths.prepare)
    names = manifest["names"]
    table = io.read_json(src / "proposals.json")
    if p.distill.method == "none":
        for name in tqdm(names, desc="distill (none: copy)", unit="img"):
            io.write_bytes(out / "masks" / f"{name}.png", (src / "masks" / f"{name}.png").read_bytes())
        write_tables(out, {n: [{**m, "detector_score": None} for m in table[n]] for n in names}, {"method": "none"})
        print(f"distill: method none, the proposals of {len(names)} images passed on -> {out}")
    else:
        maskrcnn(p, manifest, table)


def maskrcnn(p: Params, manifest: dict, table: dict[str, list[dict]]) -> None:
    """Train the detector on the proposals, predict every training image, write the kept detections."""
    import torch  # torch and torchvision only here: method none stays quick

    from pipeline.backbone import factory as bb
    from pipeline.train import detector

    out, src, names = Path(p.paths.distill), Path(p.paths.proposals), manifest["names"]
    cfg, device = p.distill, bb.pick_device(p.distill.device)
    images = io.read_image_list(p.paths.prepare, names)
    targets = [distill.instance_masks(io.read_label(src / "masks" / f"{n}.png"), len(table[n])) for n in names]
    fit = [i for i, t in enumerate(targets) if len(t)]  # detectron2 leaves images without annotations out
    if not fit:
        raise io.InputError(f"distill.method maskrcnn: no training image has a proposal to learn from (see "
                            f"{src}/overlays); use distill.method none, or get proposals first")
    shapes = [im.shape[:2] for im in images]
    torch.manual_seed(p.seed)
    model = detector.build(cfg, lambda: bb.from_stage(p.backbone, Path(p.paths.pretrain) / "backbone.pth",
                                                      manifest["image_size"]),
                           min(min(s) for s in shapes), max(max(s) for s in shapes))
    start = time.perf_counter()
    bar = tqdm(total=cfg.iterations, desc=f"distill train ({cfg.backbone}, {device})", unit="it")

    def step(rec: dict) -> None:
        bar.set_postfix(loss=f"{rec['loss']:.3f}")
        bar.update(1)

    history = detector.train(model, [images[i] for i in fit], [targets[i] for i in fit], cfg, p.seed, device, step)
    bar.close()
    train_s = time.perf_counter() - start
    records = {}
    for i, scores, probs in tqdm(detector.predict(model, images, cfg.batch_size, device), total=len(images),
                                 desc="distill predict", unit="img"):
        name = names[i]
        mask_map, taken = distill.select(scores, probs, cfg.score, cfg.max_per_image)
        io.write_label(out / "masks" / f"{name}.png", mask_map)
        io.write_image(out / "overlays" / f"{name}.jpg", viz.overlay(images[i], mask_map))
        records[name] = [{"id": k + 1, "source": "maskrcnn", "score": round(float(scores[j]), 4),
                          "detector_score": round(float(scores[j]), 4), "pixels": int((mask_map == k + 1).sum())}
                         for k, j in enumerate(taken)]
    viz.save_curve(out / "loss.png", [h["loss"] for h in history], f"Mask R-CNN loss ({cfg.backbone})", "step")
    first, last = np.mean([h["loss"] for h in history[:10]]), np.mean([h["loss"] for h in history[-10:]])
    info = {"method": "maskrcnn", "backbone": cfg.backbone, "train_images": len(fit), "iterations": cfg.iterations,
            "loss_first_10": round(float(first), 4), "loss_last_10": round(float(last), 4)}
    write_tables(out, records, info)
    # Wall time is printed, not stored (summary.json stays identical between runs, as pretrain's info.json).
    print(f"distill: Mask R-CNN ({cfg.backbone}) trained {cfg.iterations} steps on {len(fit)} images "
          f"(loss {first:.3f} -> {last:.3f}) in {train_s:.0f} s on {device}, {time.perf_counter() - start:.0f} s "
          f"with prediction; {sum(len(v) for v in records.values())} masks on {len(records)} images -> {out}")


def write_tables(out: Path, table: dict[str, list[dict]], info: dict) -> None:
    """proposals.json (the records per image) and summary.json (counts per image and source, plus `info`)."""
    io.write_json(out / "proposals.json", table)
    by_source: dict[str, int] = {}
    for recs in table.values():
        for m in recs:
            by_source[m["source"]] = by_source.get(m["source"], 0) + 1
    io.write_json(out / "summary.json", {**info, "images": len(table), "masks": sum(by_source.values()),
                                         "images_without_mask": sum(1 for v in table.values() if not v),
                                         "by_source": by_source})


if __name__ == "__main__":
    main()
