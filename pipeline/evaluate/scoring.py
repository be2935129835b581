"""The evaluate stage's run: every label map scored against the ground truth at its ORIGINAL size, image by image
over `workers` processes (`score_image`; memory does not grow with the dataset; the counts are summed in image
order by `Tally`), with one Hungarian matching over each row's dataset-level confusion matrix (`evaluate.match`).

Rows (`label_maps`): the held-out evaluation split's network (the headline), the network + dense CRF (when the
train stage wrote predictions/crf/), its self-training rounds and two label-free baselines fitted there
(`fit_baselines`); the training split's pseudolabels, filter, merge, network and network + CRF (the quality of the
labels the network learnt from, as MaskDistill reports it). Also, on the training split, the foreground IoU and the
class-agnostic mask AP50 of the proposals and of the distill stage's masks (`mask_ap`): against COCO's own
instances, or elsewhere the 8-connected components of each ground-truth class. The evaluation split's token grids
(feature baseline) are read a shard at a time (io.ShardArrays) and the masks one image at a time, so nothing holds
the split.
"""
from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from tqdm import tqdm

from pipeline import distributed, io, parallel
from pipeline.config import Params, Paths
from pipeline.evaluate import baselines, mask_ap, metrics

BASELINES = ("baseline_colour_kmeans", "baseline_feature_kmeans")  # rows of the evaluation split, (n_gt, n_gt)


def labelled_splits(manifest: dict) -> dict[str, list[str]]:
    """The prepared manifest -> {"eval": names, "train": names} of the images with ground truth, in that order,
    leaving out a split without any."""
    labelled = set(manifest["labelled"])
    splits = {split: [n for n in manifest[key] if n in labelled]
              for split, key in (("eval", "eval_names"), ("train", "names"))}
    return {split: names for split, names in splits.items() if names}


def round_number(folder: Path) -> int:
    """A self-training round's prediction folder, data/10_train/predictions/round_<r> -> r."""
    found = re.fullmatch(r"round_(\d+)", folder.name)
    if found is None:
        raise ValueError(f"{folder}: a round's predictions are in a folder named round_<r>")
    return int(found.group(1))


def label_maps(paths: Paths) -> dict[str, dict[str, Path]]:
    """{split: {row: folder of <name>.png label maps}} scored by the evaluate stage, in table order. The network +
    CRF row is there when the train stage wrote predictions/crf/ (crf.predictions), the round rows when it wrote
    predictions/round_<r>/ (train.rounds > 1), by round."""
    preds = Path(paths.train) / "predictions"
    crf = {"network + CRF": preds / "crf" / "labels"} if (preds / "crf" / "labels").is_dir() else {}
    rounds = sorted((round_number(f.parent), f) for f in preds.glob("round_*/labels"))
    return {"eval": {"network": preds / "labels", **crf, **{f"network round {r}": f for r, f in rounds}},
            "train": {"pseudolabels": Path(paths.pseudolabels) / "labels", "filter": Path(paths.filter) / "labels",
                      "merge": Path(paths.merge) / "labels", "network": preds / "labels", **crf}}


def mask_folders(paths: Paths) -> dict[str, Path]:
    """{mask set: its folder of masks/<name>.png index maps and proposals.json scores} whose mask AP50 is scored."""
    return {"proposals": Path(paths.proposals), "distill": Path(paths.distill)}


def mask_scores(table: dict[str, list[dict]], name: str) -> list[float]:
    """The scores of an image's masks 1, 2, ... from a proposals.json table (data/04_proposals, data/05_distill)."""
    return [m["score"] for m in sorted(table.get(name, []), key=lambda m: m["id"])]


def fit_baselines(p: Params, names: list[str], n_gt: int) -> tuple[KMeans, MiniBatchKMeans, io.ShardArrays]:
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
                components: bool) -> dict:
    """One image: (name, its evaluation-split token grid or None, {mask set: its masks' scores}) -> what `Tally`
    adds from it, all at the ground truth's original size (H, W): {"pixels": H * W, "confusion": {row: (n_pred,
    n_gt) counts (baselines: (n_gt, n_gt))}, "kept": {row: pixels not ignored}, "masks": {mask set in `masks`:
    (foreground intersection, union, `mask_ap.detections`)}, "instances": ((H, W), `mask_ap.component_instances`)
    when `components` and `masks`, else None}. The baselines are scored when `colour` and `feature` are given; the
    components' detections leave ground truth 255 out. Runs in a worker process (parallel.map_images)."""
    name, grid, scores = item
    gt = io.read_label(prep / "gt" / f"{name}.png")
    out: dict = {"pixels": gt.size, "confusion": {}, "kept": {}, "masks": {}, "instances": None}
    for key, folder in sources.items():
        pred = metrics.to_size(io.read_label(folder / f"{name}.png"), gt.shape)
        out["confusion"][key] = metrics.confusion(pred, gt, n_pred, n_gt)
        out["kept"][key] = int((pred != io.IGNORE).sum())
    if colour is not None and feature is not None:
        image = io.read_image(prep / "images" / f"{name}.png")
        out["confusion"][BASELINES[0]] = metrics.confusion(
            metrics.to_size(baselines.predict_colour(colour, image), gt.shape), gt, n_gt, n_gt)
        out["confusion"][BASELINES[1]] = metrics.confusion(
            baselines.predict_features(feature, grid, gt.shape), gt, n_gt, n_gt)
    keep = gt != io.IGNORE if components else None
    for key, folder in masks.items():
        det = metrics.to_size(io.read_label(folder / "masks" / f"{name}.png"), gt.shape)
        out["masks"][key] = (*metrics.foreground_counts(det > 0, gt), mask_ap.detections(det, scores[key], keep))
    if masks and components:
        out["instances"] = (gt.shape, mask_ap.component_instances(gt))
    return out


class Tally:
    """One split's `score_image` results summed image by image, in image order: a confusion matrix per row, the
    pixels each row leaves unignored, and for each mask set the pooled foreground (intersection, union) and every
    image's detections (with the components' instances)."""

    def __init__(self, rows: list[str], fitted: list[str], n_pred: int, n_gt: int, mask_sets: list[str]) -> None:
        self.confs = {key: metrics.Confusion(n_pred, n_gt) for key in rows}
        self.confs.update({key: metrics.Confusion(n_gt, n_gt) for key in fitted})
        self.kept, self.pixels = dict.fromkeys(rows, 0), 0
        self.fg = {key: np.zeros(2, np.int64) for key in mask_sets}
        self.detections: dict[str, dict[str, list[dict]]] = {key: {} for key in mask_sets}
        self.instances: list[tuple[str, tuple[int, int], list[dict]]] = []

    def add(self, name: str, r: dict) -> None:
        self.pixels += r["pixels"]
        for key, counts in r["confusion"].items():
            self.confs[key].add_counts(counts)
        for key, n in r["kept"].items():
            self.kept[key] += n
        for key, (inter, union, dets) in r["masks"].items():
            self.fg[key] += (inter, union)
            self.detections[key][name] = dets
        if r["instances"] is not None:
            self.instances.append((name, *r["instances"]))

    def all_reduce(self, names: list[str]) -> None:
        """Under torch.distributed, each process having added its `distributed.shard` of a split's images (`names`,
        in that order): the confusion matrices and every other count all-reduced (integer sums, exact in any order),
        the detections and instances of every process gathered in image order -> every process holds the tally of
        every image, what one process adding them all holds. Nothing outside torch.distributed."""
        if distributed.world()[1] == 1:
            return
        confs, kept = list(self.confs.values()), list(self.kept)
        parts = [c.matrix for c in confs] + [np.array([c.images for c in confs]), np.array([self.kept[k] for k in kept]),
                                             np.array([self.pixels])] + list(self.fg.values())
        flat = distributed.all_reduce_sum(np.concatenate([np.ravel(a) for a in parts]))
        summed = np.split(flat, np.cumsum([np.size(a) for a in parts])[:-1])
        for c, m, n in zip(confs, summed, summed[len(confs)]):
            c.matrix, c.images = m.reshape(c.matrix.shape), int(n)
        self.kept = {k: int(v) for k, v in zip(kept, summed[len(confs) + 1])}
        self.pixels = int(summed[len(confs) + 2][0])
        self.fg = dict(zip(self.fg, summed[len(confs) + 3:]))
        instances = {i[0]: i for i in self.instances}
        every = distributed.gather([(n, {k: d[n] for k, d in self.detections.items()}, instances.get(n))
                                    for n in names])
        self.detections = {k: {n: dets[k] for n, dets, _ in every} for k in self.detections}
        self.instances = [i for _, _, i in every if i is not None]

    def results(self, match: metrics.Match) -> dict[str, dict]:
        """{row: Confusion.result(match)}."""
        return {key: conf.result(match) for key, conf in self.confs.items()}

    def summary(self, results: dict[str, dict]) -> dict[str, dict]:
        """{row: {miou, pixel_acc, coverage (share of pixels not ignored; baselines: 1)}}, rounded to 4 places."""
        return {key: {"miou": round(r["miou"], 4), "pixel_acc": round(r["pixel_acc"], 4),
                      "coverage": round(self.kept.get(key, self.pixels) / self.pixels, 4)}
                for key, r in results.items()}


def mask_metrics(gt: dict, tally: Tally) -> dict[str, float | None]:
    """The training split's tally and the instance ground truth (a COCO instances dict) -> {<mask set>_mask_ap50}
    then {<mask set>_fg_iou} (the union of each image's masks against ground truth > 0, pooled), rounded to 4
    places (None: no instance / no foreground)."""
    aps = {key: mask_ap.ap50(gt, dets) for key, dets in tally.detections.items()}
    out = {f"{key}_mask_ap50": None if ap is None else round(ap, 4) for key, ap in aps.items()}
    out.update({f"{key}_fg_iou": round(float(i / u), 4) if u else None for key, (i, u) in tally.fg.items()})
    return out


def evaluate(p: Params, manifest: dict, splits: dict[str, list[str]], n_pred: int) -> tuple[dict, dict, dict]:
    """Every split of `labelled_splits` scored -> ({split: {row: Confusion.result}}, {split: Tally.summary},
    `mask_metrics` of the training split ({} without one))."""
    n_gt, prep, coco = manifest["num_classes"], Path(p.paths.prepare), bool(manifest.get("gt_instances"))
    sources = label_maps(p.paths)
    tables = {key: io.read_json(folder / "proposals.json") for key, folder in mask_folders(p.paths).items()}
    results, summary, extra = {}, {}, {}
    for split, names in splits.items():
        masks = mask_folders(p.paths) if split == "train" else {}
        colour, feature, grids = fit_baselines(p, names, n_gt) if split == "eval" else (None, None, None)
        tally = Tally(list(sources[split]), list(BASELINES) if split == "eval" else [], n_pred, n_gt, list(masks))
        score = partial(score_image, prep=prep, sources=sources[split], n_pred=n_pred, n_gt=n_gt, colour=colour,
                        feature=feature, masks=masks, components=not coco)
        mine = distributed.shard(names, *distributed.world())  # this process's images; all of them in one
        items = ((n, grids.get(n) if grids is not None else None,  # the token grid: one shard held at a time
                  {key: mask_scores(tables[key], n) for key in masks}) for n in mine)
        for name, r in zip(mine, tqdm(parallel.map_images(score, items, distributed.local_workers(p.workers)),
                                      total=len(mine), desc=f"evaluate {split}", unit="img")):
            tally.add(name, r)
        tally.all_reduce(mine)
        results[split] = tally.results(p.evaluate.match)
        summary[split] = tally.summary(results[split])
        if masks:
            gt = io.read_json(prep / manifest["gt_instances"]) if coco else mask_ap.ground_truth(tally.instances)
            extra = mask_metrics(gt, tally)
    return results, summary, extra


def instances_note(manifest: dict) -> str:
    """What the mask AP50 is measured against, for the results table."""
    return ("COCO's instances, COCOeval" if manifest.get("gt_instances") else
            "instances: the 8-connected components of each ground-truth class")


def confusion_rows(net: dict, class_names: list[str]) -> tuple[np.ndarray, list[str]]:
    """A row's Confusion.result -> its (n_pred, n_gt) confusion with the predicted ids ordered by the class each is
    matched to (unmatched last) and their row labels "pred <id> -> <class>" ("unmatched"), for viz.save_confusion."""
    mapping, n_gt = net["mapping"], len(class_names)
    order = np.argsort([m if m >= 0 else n_gt + i for i, m in enumerate(mapping)])
    rows = [f"pred {i} -> {class_names[mapping[i]] if mapping[i] >= 0 else 'unmatched'}" for i in order]
    return np.asarray(net["confusion"])[order], rows
