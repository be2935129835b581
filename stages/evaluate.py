"""Stage evaluate: the only stage that reads ground truth. Every label map is scored against the ground truth at
its ORIGINAL size, image by image over `workers` processes (`score_image`; memory does not grow with the dataset;
the counts are summed in image order), with one Hungarian matching over each row's dataset-level confusion matrix
(`evaluate.match`). Rows: the held-out evaluation split's network (the
headline), the network + dense CRF (when the train stage wrote predictions/crf/), its self-training rounds and two
label-free baselines fitted there; the training split's pseudolabels, filter, merge, network and network + CRF (the
quality of the labels the network learnt from, as MaskDistill reports it). Also the class-agnostic mask AP50 of the
training split's proposals and of the distill stage's masks: against COCO's own instances, or elsewhere the
8-connected components of each ground-truth class. The evaluation split's token grids (feature baseline) are read a
shard at a time (io.ShardArrays) and COCO's mask AP reads the mask maps one at a time, so nothing holds the split."""
from functools import partial
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from tqdm import tqdm

from pipeline import io, parallel
from pipeline.config import load_params
from pipeline.data import coco
from pipeline.evaluate import baselines, metrics
from pipeline.report import viz


def main() -> None:
    p = load_params()
    out = Path(p.paths.evaluate)
    prep = Path(p.paths.prepare)
    manifest = io.read_manifest(prep)
    n_gt, n_pred = manifest["num_classes"], io.cluster_k(p.paths.cluster) + 1
    labelled = set(manifest["labelled"])
    splits = {split: [n for n in manifest[key] if n in labelled]
              for split, key in (("eval", "eval_names"), ("train", "names"))}
    splits = {s: names for s, names in splits.items() if names}
    if not splits:
        io.write_json(out / "metrics.json", {"note": "no ground truth in this dataset: nothing to evaluate"})
        print("evaluate: no image has ground truth (labels/); skipped")
        return
    preds = Path(p.paths.train) / "predictions"
    rounds = sorted(preds.glob("round_*/labels"), key=lambda f: int(f.parent.name[6:]))
    crf = {"network + CRF": preds / "crf" / "labels"} if (preds / "crf" / "labels").is_dir() else {}  # crf.predictions
    sources = {"eval": {"network": preds / "labels", **crf,
                        **{f"network round {f.parent.name[6:]}": f for f in rounds}},
               "train": {"pseudolabels": Path(p.paths.pseudolabels) / "labels",
                         "filter": Path(p.paths.filter) / "labels", "merge": Path(p.paths.merge) / "labels",
                         "network": preds / "labels", **crf}}
    results: dict[str, dict[str, dict]] = {}
    summary: dict[str, dict[str, dict]] = {}
    coco_instances = bool(manifest.get("gt_instances"))
    mask_sets = {key: (Path(folder), io.read_json(Path(folder) / "proposals.json"))
                 for key, folder in (("proposals", p.paths.proposals), ("distill", p.paths.distill))}
    aps = {key: metrics.MaskAP() for key in mask_sets} if "train" in splits and not coco_instances else {}
    fg = {key: np.zeros(2, np.int64) for key in mask_sets}  # foreground (intersection, union) of each mask set
    for split, names in splits.items():
        # label-free baselines, fitted on the scored images themselves (evaluation split only); they ignore nothing
        colour, feature, grids = fit_baselines(p, names, n_gt) if split == "eval" else (None, None, None)
        fitted = ["baseline_colour_kmeans", "baseline_feature_kmeans"] if split == "eval" else []
        confs = {key: metrics.Confusion(n_pred, n_gt) for key in sources[split]}
        confs.update({key: metrics.Confusion(n_gt, n_gt) for key in fitted})
        kept = dict.fromkeys(sources[split], 0)  # pixels not ignored (255), for the coverage column
        total = 0
        score = partial(score_image, prep=prep, sources=sources[split], n_pred=n_pred, n_gt=n_gt, colour=colour,
                        feature=feature, masks={key: folder for key, (folder, _) in mask_sets.items()}
                        if split == "train" else {}, instances=bool(aps))
        items = ((name, grids.get(name) if grids is not None else None,  # the token grid: one shard held at a time
                  {key: mask_scores(table, name) for key, (_, table) in mask_sets.items()}
                  if split == "train" and aps else {}) for name in names)
        for r in tqdm(parallel.map_images(score, items, p.workers), total=len(names), desc=f"evaluate {split}",
                      unit="img"):
            total += r["pixels"]
            for key, counts in r["confusion"].items():
                confs[key].add_counts(counts)
            for key, n in r["kept"].items():
                kept[key] += n
            for key, (inter, union, matched) in r["masks"].items():
                fg[key] += (inter, union)
                if aps:
                    aps[key].add_matched(*matched)
        results[split] = {key: conf.result(p.evaluate.match) for key, conf in confs.items()}
        summary[split] = {key: {"miou": round(r["miou"], 4), "pixel_acc": round(r["pixel_acc"], 4),
                                "coverage": round(kept.get(key, total) / total, 4)}
                          for key, r in results[split].items()}
    if coco_instances:  # COCO: against its own instances, by COCOeval
        extra = {f"{key}_mask_ap50": coco_ap50(p, manifest, folder, table)
                 for key, (folder, table) in mask_sets.items()}
    else:
        extra = {f"{key}_mask_ap50": None if (v := ap.result()) is None else round(v, 4) for key, ap in aps.items()}
    if "train" in splits:  # the union of each image's masks against ground truth > 0, pooled over the split
        extra.update({f"{key}_fg_iou": round(float(i / u), 4) if u else None for key, (i, u) in fg.items()})
    io.write_json(out / "metrics.json", {**summary, **extra, "cluster_k": n_pred - 1})  # the k used (cluster.k auto: chosen)
    io.write_json(out / "per_class.json", {split: {k: dict(zip(manifest["class_names"], v["iou"])) for k, v in r.items()}
                                           for split, r in results.items()})
    io.write_json(out / "details.json", results)
    headline = next(iter(results))  # the evaluation split when there is one
    net = results[headline]["network"]
    conf = np.asarray(net["confusion"])
    order = np.argsort([m if m >= 0 else n_gt + i for i, m in enumerate(net["mapping"])])
    rows = [f"pred {i} -> {manifest['class_names'][net['mapping'][i]] if net['mapping'][i] >= 0 else 'unmatched'}"
            for i in order]
    viz.save_confusion(out / "confusion.png", conf[order], rows, manifest["class_names"],
                       f"network vs ground truth ({headline} split)")
    text = metrics.results_table(summary, p.evaluate.match, metrics.warn_classes(n_pred, n_gt), extra,
                                 "COCO's instances, COCOeval" if coco_instances else
                                 "instances: the 8-connected components of each ground-truth class")
    io.write_bytes(out / "table.md", (text + "\n").encode())
    print(text)


def fit_baselines(p, names: list[str], n_gt: int) -> tuple[KMeans, MiniBatchKMeans, io.ShardArrays]:
    """The two baselines on the evaluation split: k-means (n_gt clusters) on the prepared images' Lab colours and on
    the features stage's patch tokens, fitted on a seeded sample of those images -> (colour model, feature model,
    the evaluation split's (h, w, D) token grids, read a shard at a time: `.get(name)`), for `score_image`."""
    prep = Path(p.paths.prepare)
    colour = baselines.fit_colour(io.LazyImages(prep, names), n_gt, p.seed, p.evaluate.baseline_pixels,
                                  p.evaluate.baseline_kmeans_init)
    grids = io.ShardArrays(Path(p.paths.features) / "eval", "tokens", names)
    feature = baselines.fit_features(grids, n_gt, p.seed, p.evaluate.baseline_kmeans_init, p.evaluate.baseline_patches)
    return colour, feature, grids


def score_image(item: tuple[str, np.ndarray | None, dict[str, list[float]]], prep: Path, sources: dict[str, Path],
                n_pred: int, n_gt: int, colour: KMeans | None, feature: MiniBatchKMeans | None, masks: dict[str, Path],
                instances: bool) -> dict:
    """One image: (name, its evaluation-split token grid or None, {mask set: its masks' scores}) -> what the
    dataset-level accumulators take from it, all at the ground truth's original size: {"pixels": ground-truth
    pixels, "confusion": {row: (n_pred, n_gt) counts (baselines: (n_gt, n_gt))}, "kept": {row: pixels not
    ignored}, "masks": {mask set in `masks`: (foreground intersection, union, match_masks result + instance count
    when `instances`)}}. The baselines are scored when `colour` and `feature` are given. Runs in a worker process
    (parallel.map_images)."""
    name, grid, scores = item
    gt = io.read_label(prep / "gt" / f"{name}.png")
    out: dict = {"pixels": gt.size, "confusion": {}, "kept": {}, "masks": {}}
    for key, folder in sources.items():
        pred = metrics.to_size(io.read_label(folder / f"{name}.png"), gt.shape)
        out["confusion"][key] = metrics.confusion(pred, gt, n_pred, n_gt)
        out["kept"][key] = int((pred != io.IGNORE).sum())
    if colour is not None and feature is not None:
        image = io.read_image(prep / "images" / f"{name}.png")
        out["confusion"]["baseline_colour_kmeans"] = metrics.confusion(
            metrics.to_size(baselines.predict_colour(colour, image), gt.shape), gt, n_gt, n_gt)
        out["confusion"]["baseline_feature_kmeans"] = metrics.confusion(
            baselines.predict_features(feature, grid, gt.shape), gt, n_gt, n_gt)
    inst, n_inst = metrics.instance_map(gt) if masks and instances else (None, 0)  # instances: gt's components
    for key, folder in masks.items():  # every mask set: foreground IoU (pooled) and class-agnostic mask AP
        det = metrics.to_size(io.read_label(folder / "masks" / f"{name}.png"), gt.shape)
        matched = (*metrics.match_masks(det, scores[key], inst, n_inst, gt != io.IGNORE), n_inst) if instances else None
        out["masks"][key] = (*metrics.foreground_counts(det > 0, gt), matched)
    return out


def mask_scores(table: dict[str, list[dict]], name: str) -> list[float]:
    """The scores of an image's masks 1, 2, ... from a proposals.json table (data/04_proposals, data/05_distill)."""
    return [m["score"] for m in sorted(table.get(name, []), key=lambda m: m["id"])]


def coco_ap50(p, manifest: dict, folder: Path, table: dict[str, list[dict]]) -> float | None:
    """Class-agnostic mask AP50 of a mask folder (data/04_proposals or data/05_distill; training split) against
    COCO's prepared instance ground truth at the original size, by COCOeval (None: no instances)."""
    gt = io.read_json(Path(p.paths.prepare) / manifest["gt_instances"])
    sizes = manifest["sizes"]
    maps = ((n, metrics.to_size(io.read_label(folder / "masks" / f"{n}.png"), sizes[n])) for n in manifest["names"])
    scores = {n: mask_scores(table, n) for n in manifest["names"]}  # maps: read one at a time
    ap = coco.mask_ap50(gt, coco.mask_detections(maps, scores, gt))
    return None if np.isnan(ap) else round(ap, 4)


if __name__ == "__main__":
    main()
