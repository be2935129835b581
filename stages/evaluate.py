"""Stage evaluate: the only stage that reads ground truth. Hungarian-matched mIoU of the network, every
intermediate label map and two baselines (k-means on pixel colours, k-means on patch features)."""
from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.config import load_params
from pipeline.data import coco
from pipeline.evaluate import baselines, metrics
from pipeline.report import viz


def main() -> None:
    p = load_params()
    out = Path(p.paths.evaluate)
    manifest = io.read_manifest(p.paths.prepare)
    names, n_gt = manifest["names"], manifest["num_classes"]
    if not manifest["has_labels"]:
        io.write_json(out / "metrics.json", {"note": "no ground truth in this dataset: nothing to evaluate"})
        print("evaluate: the dataset has no labels/; skipped")
        return
    gt = io.read_labels(Path(p.paths.prepare) / "gt", names)
    images = io.read_images(p.paths.prepare, names)
    n_pred = p.cluster.k + 1
    sources = {"pseudolabels": Path(p.paths.pseudolabels) / "labels", "filter": Path(p.paths.filter) / "labels",
               "merge": Path(p.paths.merge) / "labels", "network": Path(p.paths.train) / "predictions" / "labels"}
    # self-training (train.rounds > 1): every round's predictions, predictions/round_<r>/labels
    rounds = sorted((Path(p.paths.train) / "predictions").glob("round_*/labels"), key=lambda f: int(f.parent.name[6:]))
    sources.update({f"network round {f.parent.name[6:]}": f for f in rounds})
    results, coverage = {}, {}
    for key, folder in sources.items():
        maps = io.read_labels(folder, names)
        coverage[key] = float((maps != io.IGNORE).mean())
        results[key] = metrics.evaluate_maps(np.where(maps == io.IGNORE, 0, maps), gt, n_pred, n_gt)
    colours = baselines.kmeans_colours(images, n_gt, p.seed, p.evaluate.baseline_pixels, p.evaluate.baseline_kmeans_init)
    results["baseline_colour_kmeans"] = metrics.evaluate_maps(colours, gt, n_gt, n_gt)
    _, tokens = io.read_shards(p.paths.features, "tokens")  # per image (h, w, D); grids may differ in size
    # k-means on every patch of every image at once (a (1, P, 1, D) stack of the flattened grids: the same rows,
    # in the same order, as stacking equal grids), then each image's labels back on its own grid.
    flat = np.concatenate([t.reshape(-1, t.shape[-1]) for t in tokens])[None, :, None]
    patch = baselines.kmeans_patches(flat, n_gt, p.seed, p.evaluate.baseline_kmeans_init)[0, :, 0]
    grids = io.unpack_ragged(patch, np.array([t.shape[:2] for t in tokens]))
    maps = np.stack([baselines.upsample_labels(g[None], manifest["image_size"])[0] for g in grids])
    results["baseline_feature_kmeans"] = metrics.evaluate_maps(maps, gt, n_gt, n_gt)
    summary = {k: {"miou": round(v["miou"], 4), "pixel_acc": round(v["pixel_acc"], 4)} for k, v in results.items()}
    for k, c in coverage.items():
        summary[k]["coverage"] = round(c, 4)
    extra = {}
    if manifest.get("gt_instances"):  # COCO: class-agnostic mask AP50 of the proposals' object masks
        extra["proposals_mask_ap50"] = proposal_ap50(p, manifest)
    io.write_json(out / "metrics.json", {**summary, **extra})
    io.write_json(out / "per_class.json", {k: dict(zip(manifest["class_names"], v["iou"])) for k, v in results.items()})
    io.write_json(out / "details.json", results)
    net = results["network"]
    conf = np.asarray(net["confusion"])
    order = np.argsort([m if m >= 0 else n_gt + i for i, m in enumerate(net["mapping"])])
    rows = [f"pred {i} -> {manifest['class_names'][net['mapping'][i]] if net['mapping'][i] >= 0 else 'unmatched'}"
            for i in order]
    viz.save_confusion(out / "confusion.png", conf[order], rows, manifest["class_names"], "network vs ground truth")
    lines = ["| label map | mIoU | pixel acc | coverage |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['miou']:.3f} | {v['pixel_acc']:.3f} | {v.get('coverage', 1.0):.3f} |" for k, v in summary.items()]
    if extra:
        ap = extra["proposals_mask_ap50"]
        lines += ["", f"proposals, class-agnostic mask AP50 (COCOeval): {'n/a' if ap is None else f'{ap:.3f}'}"]
    io.write_bytes(out / "table.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


def proposal_ap50(p, manifest: dict) -> float | None:
    """Class-agnostic mask AP50 of data/04_proposals against the prepared instance ground truth (None: no instances)."""
    gt = io.read_json(Path(p.paths.prepare) / manifest["gt_instances"])
    table = io.read_json(Path(p.paths.proposals) / "proposals.json")
    maps = {n: io.read_label(Path(p.paths.proposals) / "masks" / f"{n}.png") for n in manifest["names"]}
    scores = {n: [m["score"] for m in table.get(n, [])] for n in manifest["names"]}
    ap = coco.mask_ap50(gt, coco.mask_detections(maps, scores, gt))
    return None if np.isnan(ap) else round(ap, 4)


if __name__ == "__main__":
    main()
