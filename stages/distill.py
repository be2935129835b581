"""Stage distill: the masks every later stage uses, in data/04_proposals' layout (masks/, proposals.json,
summary.json). distill.method none: the proposals, unchanged (the same PNG bytes, detector_score null). maskrcnn
(MaskDistill): a class-agnostic Mask R-CNN trained on the proposals predicts every training image and its kept
detections become the masks (pipeline/train/detector.py), drawn in overlays/, the training loss in loss.png."""
from collections import Counter
from functools import partial
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
    manifest, table = io.read_manifest(p.paths.prepare), io.read_json(src / "proposals.json")
    names, info = manifest["names"], {"method": p.distill.method}
    if p.distill.method == "none":
        for name in tqdm(names, desc="distill (none: copy)", unit="img"):
            io.write_bytes(out / "masks" / f"{name}.png", (src / "masks" / f"{name}.png").read_bytes())
        records = {n: [{**m, "detector_score": None} for m in table[n]] for n in names}
    else:
        records, info = maskrcnn(p, manifest, table, out, src)
    by_source = Counter(m["source"] for recs in records.values() for m in recs)
    io.write_json(out / "proposals.json", records)
    io.write_json(out / "summary.json", {**info, "images": len(records), "masks": sum(by_source.values()),
                                         "images_without_mask": sum(1 for v in records.values() if not v),
                                         "by_source": dict(by_source)})
    print(f"distill: {info}; {sum(by_source.values())} masks on {len(records)} images -> {out}")


def maskrcnn(p: Params, manifest: dict, table: dict[str, list[dict]], out: Path, src: Path) -> tuple[dict, dict]:
    """The detector on the proposals; kept masks, overlays, loss.png -> (records per image, summary entries)."""
    from pipeline.backbone import factory as bb  # torch only here: method none stays quick
    from pipeline.train import detector

    names, cfg, device = manifest["names"], p.distill, bb.pick_device(p.distill.device)
    images = io.read_image_list(p.paths.prepare, names)
    targets = [distill.instance_masks(io.read_label(src / "masks" / f"{n}.png"), len(table[n])) for n in names]
    vit = partial(bb.from_stage, p.backbone, Path(p.paths.pretrain) / "backbone.pth", manifest["image_size"])
    with tqdm(total=cfg.iterations, desc=f"distill train ({cfg.backbone}, {device})", unit="it") as bar:
        model, history, fit = detector.fit_proposals(cfg, vit, images, targets, p.seed, device, lambda _: bar.update())
    records = {}
    for i, mask_map, recs in tqdm(detector.kept_masks(model, images, cfg, device), total=len(images), unit="img"):
        io.write_label(out / "masks" / f"{names[i]}.png", mask_map)
        io.write_image(out / "overlays" / f"{names[i]}.jpg", viz.overlay(images[i], mask_map))
        records[names[i]] = recs
    viz.save_curve(out / "loss.png", [h["loss"] for h in history], f"Mask R-CNN loss ({cfg.backbone})", "step")
    first, last = (round(float(np.mean([h["loss"] for h in part])), 4) for part in (history[:10], history[-10:]))
    return records, {"method": "maskrcnn", "backbone": cfg.backbone, "train_images": len(fit),
                     "iterations": cfg.iterations, "loss_first_10": first, "loss_last_10": last}


if __name__ == "__main__":
    main()
