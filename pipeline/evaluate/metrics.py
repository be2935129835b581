"""Unsupervised segmentation metrics: a dataset-level confusion matrix accumulated image by image, one Hungarian
matching of predicted ids to classes for the whole dataset, per-class IoU, mIoU and pixel accuracy.

Matching as the papers we compare with do it. MaskDistill (wvangansbeke/MaskDistill,
`segmentation/utils/kmeans_utils.py`: `eval_kmeans`, `_hungarian_match(..., metric='iou')`, `get_iou`) and COMUS
(zadaianchuk/comus, `comus/clustering/utils.py` `compute_matching(matching="hungarian")` ->
`thirdparty/utils.py` `_hungarian_match`, `get_iou`; scored by `comus/clustering/evaluate.py`
`evaluate_predictions`) do the same thing:
- every image's prediction is resized to its ground truth's ORIGINAL size with cv2.INTER_NEAREST (`to_size` here);
- only pixels whose ground truth is not 255 are kept, and they are pooled over the whole dataset;
- for every (predicted id c1, class c2) pair the IoU |pred==c1 & gt==c2| / |pred==c1 | gt==c2| over those pixels
  (`iou_table` here, computed from the confusion matrix instead of from the pixel vectors: the same numbers);
- `scipy.optimize.linear_sum_assignment(n_pixels - iou)`: one one-to-one matching maximising the SUMMED IoU of the
  matched pairs (`match="iou"`);
- predictions are relabelled through the matching and IoU = tp / (tp + fp + fn) per class, mIoU their mean, pixel
  accuracy the share of valid pixels whose relabelled id equals the class.
Where we differ, and why:
- both assert `preds_k == targets_k` for Hungarian matching (MaskDistill falls back to majority voting otherwise).
  Here the assignment is rectangular: with more predicted ids than classes the ids left unmatched count as wrong
  (their pixels are misses of their true class and false positives of none; the papers' relabelling starts from an
  all-zero array, which would silently call them background); with fewer ids, the classes left unmatched score IoU 0;
- a class absent from both the ground truth and the matched prediction gets IoU None and stays out of the mean (the
  papers count it as 0: with VOC val every class occurs, so the numbers agree there);
- `match="pixels"` maximises the matched pixel count instead (the trace of the matched confusion; this project's
  earlier rule, MaskDistill's `metric='acc'`).
"""
from __future__ import annotations

from typing import Iterable, Literal

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from pipeline.io import IGNORE

Match = Literal["iou", "pixels"]
MATCHES = ("iou", "pixels")


def confusion(pred: np.ndarray, gt: np.ndarray, n_pred: int, n_gt: int) -> np.ndarray:
    """Label maps of equal shape -> (n_pred, n_gt) int64 pixel counts; gt == 255 is skipped.

    A pred value of 255 (ignore) is counted as predicted class 0 (background), which is how an ignored pixel
    is used downstream; any other pred value outside 0..n_pred-1 is a ValueError naming it and the range, even
    where the ground truth is ignored (the map itself is wrong). Works on one image or a stack: the counts come
    from one np.bincount over int64 flat indices of what it is given (`Confusion` calls it image by image).
    """
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    gt = np.asarray(gt).reshape(-1).astype(np.int64)
    bad = (pred != IGNORE) & ((pred < 0) | (pred >= n_pred))
    if bad.any():
        raise ValueError(f"predicted label map holds id {int(pred[bad][0])}; predicted ids must be in "
                         f"0..{n_pred - 1} (n_pred = {n_pred}) or {IGNORE} (ignore, counted as background)")
    valid = gt != IGNORE
    pred, gt = pred[valid], gt[valid]
    if gt.size and (gt.min() < 0 or gt.max() >= n_gt):
        raise ValueError(f"ground truth holds class {int(gt.max() if gt.max() >= n_gt else gt.min())} but only "
                         f"{n_gt} classes are configured (0..{n_gt - 1}, {IGNORE} = ignore)")
    pred = np.where(pred == IGNORE, 0, pred)
    return np.bincount(pred * n_gt + gt, minlength=n_pred * n_gt).reshape(n_pred, n_gt)


def iou_table(conf: np.ndarray) -> np.ndarray:
    """(n_pred, n_gt) confusion -> (n_pred, n_gt) float IoU of every (predicted id, class) pair:
    conf[p, g] / (pixels predicted p + pixels of class g - conf[p, g]), over valid pixels; 0 where the union is
    empty (MaskDistill's / COMUS's `get_iou`: tp / max(tp + fp + fn, 1e-8))."""
    conf = np.asarray(conf, np.float64)
    union = conf.sum(1, keepdims=True) + conf.sum(0, keepdims=True) - conf
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, conf / union, 0.0)


def hungarian(conf: np.ndarray, match: Match) -> np.ndarray:
    """(n_pred, n_gt) confusion -> (n_pred,) gt class per predicted id (-1 where left unmatched).

    One one-to-one assignment for the whole dataset (scipy's linear_sum_assignment, rectangular when
    n_pred != n_gt: min(n_pred, n_gt) pairs) maximising either the summed IoU of the matched pairs
    (`match="iou"`, as MaskDistill and COMUS: see the module docstring) or the matched pixel count
    (`match="pixels"`); the stage passes params.yaml's `evaluate.match`.
    """
    if match == "iou":
        gain = iou_table(conf)
    elif match == "pixels":
        gain = np.asarray(conf)
    else:
        raise ValueError(f"match is {match!r}; it must be one of {', '.join(MATCHES)}")
    rows, cols = linear_sum_assignment(-gain)
    mapping = np.full(gain.shape[0], -1, np.int64)
    mapping[rows] = cols
    return mapping


def scores(conf: np.ndarray, mapping: np.ndarray) -> dict:
    """Confusion (n_pred, n_gt) and a pred->gt mapping -> {miou, pixel_acc, iou (per gt class)}.

    Every predicted id mapped to class g counts as g; an unmatched id (-1) counts as no class (its pixels are
    misses of their true class). Classes absent from both prediction and ground truth get IoU None and are left
    out of the mean.
    """
    n_gt = conf.shape[1]
    matched = np.zeros((n_gt, n_gt), np.int64)  # rows: mapped prediction, cols: gt
    for p, g in enumerate(mapping):
        if g >= 0:
            matched[g] += conf[p]
    tp = np.diag(matched).astype(np.float64)
    gt_count = conf.sum(0).astype(np.float64)
    pred_count = matched.sum(1).astype(np.float64)
    union = gt_count + pred_count - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    total = conf.sum()
    return {"miou": float(np.nanmean(iou)) if np.any(union > 0) else 0.0,
            "pixel_acc": float(tp.sum() / total) if total else 0.0,
            "iou": [None if np.isnan(v) else float(v) for v in iou]}


class Confusion:
    """A dataset-level confusion matrix accumulated image by image, so memory does not grow with the dataset.

        conf = Confusion(n_pred, n_gt)
        for name in names:
            conf.add(to_size(read(pred_of(name)), sizes[name]), read(gt_of(name)))
        out = conf.result("iou")

    `add(pred, gt)`: any two arrays of the same shape (one image at its ground truth's original size, or a stack);
    gt 255 is skipped, pred 255 counts as background 0, another pred id >= n_pred is a ValueError. `result(match)`:
    one Hungarian matching over the whole matrix, then {confusion, mapping, iou, miou, pixel_acc} (JSON-ready:
    lists, floats, None for a class absent everywhere).
    """

    def __init__(self, n_pred: int, n_gt: int):
        if int(n_pred) < 1 or int(n_gt) < 1:
            raise ValueError(f"Confusion needs n_pred >= 1 and n_gt >= 1, got {n_pred} and {n_gt}")
        self.n_pred, self.n_gt = int(n_pred), int(n_gt)
        self.matrix = np.zeros((self.n_pred, self.n_gt), np.int64)
        self.images = 0

    def add(self, pred: np.ndarray, gt: np.ndarray) -> "Confusion":
        pred, gt = np.asarray(pred), np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction of shape {pred.shape} vs ground truth of shape {gt.shape}: score at the "
                             "ground truth's size (resize the label map with metrics.to_size first)")
        return self.add_counts(confusion(pred, gt, self.n_pred, self.n_gt))

    def add_counts(self, counts: np.ndarray, images: int = 1) -> "Confusion":
        """Add an (n_pred, n_gt) matrix of pixel counts made elsewhere (`confusion` of `images` images, e.g. in a
        worker process): the same as `add` of those images."""
        counts = np.asarray(counts)
        if counts.shape != self.matrix.shape:
            raise ValueError(f"counts of shape {counts.shape}; this matrix is {self.matrix.shape}")
        self.matrix += counts
        self.images += images
        return self

    def result(self, match: Match) -> dict:
        mapping = hungarian(self.matrix, match)
        out = scores(self.matrix, mapping)
        out["mapping"] = mapping.tolist()
        out["confusion"] = self.matrix.tolist()
        return out


def evaluate_maps(preds: Iterable[np.ndarray], gts: Iterable[np.ndarray], n_pred: int, n_gt: int,
                  match: Match) -> dict:
    """Predicted maps and ground truth, image by image ((N, H, W) stacks or lists of (H_i, W_i) maps of matching
    shapes) -> scores plus the matching and confusion (`Confusion(...).add` per pair, `.result(match)`)."""
    conf = Confusion(n_pred, n_gt)
    for pred, gt in zip(preds, gts, strict=True):
        conf.add(pred, gt)
    return conf.result(match)


def to_size(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A (h, w) uint8 label map -> (H, W) by nearest neighbour (cv2.INTER_NEAREST, as MaskDistill's and COMUS's
    evaluation resize predictions to the ground truth): how a map made at the prepared size is scored at the
    ground truth's original size. Returned unchanged when it already has that size."""
    label = np.asarray(label)
    h, w = int(size[0]), int(size[1])
    if label.ndim != 2 or label.dtype != np.uint8:
        raise ValueError(f"to_size takes one (h, w) uint8 label map, got shape {label.shape} dtype {label.dtype}")
    if h < 1 or w < 1:
        raise ValueError(f"to_size: target size {(h, w)} must be at least 1 x 1")
    if label.shape == (h, w):
        return label
    return cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)


def warn_classes(k_plus_1: int, n_gt: int) -> str | None:
    """The results table's warning when the network's ids (cluster.k + 1, background included) differ in number
    from the ground-truth classes; None when they agree (the papers' setting: MaskDistill and COMUS match
    one-to-one only with as many clusters as classes)."""
    if k_plus_1 == n_gt:
        return None
    if k_plus_1 > n_gt:
        effect = (f"{k_plus_1 - n_gt} predicted id(s) stay unmatched and their pixels count as wrong, which "
                  "lowers the scores")
    else:
        effect = f"{n_gt - k_plus_1} class(es) stay unmatched and score IoU 0"
    return (f"warning: cluster.k + 1 = {k_plus_1} predicted ids (background included) but the ground truth has "
            f"{n_gt} classes: {effect}. The papers compared with use as many ids as classes "
            f"(set cluster.k: {n_gt - 1} for numbers that stand beside theirs).")


def results_table(summary: dict[str, dict[str, dict]], match: str, warning: str | None = None,
                  extra: dict | None = None, ap_instances: str = "COCO's instances, COCOeval") -> str:
    """evaluate's metrics ({split: {label map: {miou, pixel_acc, coverage}}}, evaluation split first) -> the markdown
    table of data/11_evaluate/table.md (and of the README, scripts/results_table.py): one row per split and label
    map, the matching rule, the class-count warning and, below it, the class-agnostic mask AP50 of the proposals and
    of the distilled masks when `extra` holds them (proposals_mask_ap50, distill_mask_ap50; `ap_instances` says
    against what)."""
    lines = ["| split | label map | mIoU | pixel acc | coverage |", "|---|---|---|---|---|"]
    lines += [f"| {split} | {key} | {v['miou']:.3f} | {v['pixel_acc']:.3f} | {v['coverage']:.3f} |"
              for split, rows in summary.items() for key, v in rows.items()]
    lines += ["", f"Hungarian matching by {match} over each row's dataset-level confusion matrix, at the ground "
              "truth's original size."]
    if warning:
        lines += ["", warning]
    shown = {"proposals_mask_ap50": "proposals", "distill_mask_ap50": "distilled masks"}
    aps = [f"{what} {'n/a' if extra[key] is None else f'{extra[key]:.3f}'}"
           for key, what in shown.items() if extra and key in extra]
    if aps:
        lines += ["", f"Class-agnostic mask AP50 on the training split ({ap_instances}): {', '.join(aps)}"]
    fgs = [f"{what} {extra[key]:.3f}" for key, what in (("proposals_fg_iou", "proposals"),
                                                       ("distill_fg_iou", "distilled masks"))
           if extra and extra.get(key) is not None]
    if fgs:
        lines += ["", f"Foreground IoU on the training split (each image's masks together vs ground truth > 0): "
                  f"{', '.join(fgs)}"]
    return "\n".join(lines)


def foreground_counts(pred_fg: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """Boolean foreground map(s) vs ground truth of the same shape (class > 0 is foreground, 255 skipped) ->
    (intersection, union) pixel counts, to pool over images of different sizes."""
    valid = gt != IGNORE
    g = (gt > 0) & valid
    p = pred_fg & valid
    return int(np.logical_and(p, g).sum()), int(np.logical_or(p, g).sum())


def foreground_iou(pred_fg: np.ndarray, gt: np.ndarray) -> float:
    """Boolean foreground maps (N, H, W) vs ground truth (N, H, W) (class > 0 is foreground, 255 skipped)
    -> IoU of the foreground over the whole set."""
    inter, union = foreground_counts(pred_fg, gt)
    return inter / union if union else 1.0

