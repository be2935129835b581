"""Unsupervised segmentation metrics: confusion matrix, Hungarian matching of clusters to classes, mIoU."""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from pipeline.io import IGNORE


def confusion(pred: np.ndarray, gt: np.ndarray, n_pred: int, n_gt: int) -> np.ndarray:
    """Label maps of equal shape -> (n_pred, n_gt) int64 pixel counts; gt == 255 is skipped.

    A pred value of 255 (ignore) is counted as predicted class 0 (background), which is how an ignored pixel
    is used downstream; any other pred value outside 0..n_pred-1 is a ValueError.
    """
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    gt = np.asarray(gt).reshape(-1).astype(np.int64)
    bad = (pred != IGNORE) & ((pred < 0) | (pred >= n_pred))
    if bad.any():
        raise ValueError(f"predicted label map holds id {int(pred[bad][0])}; predicted ids must be in "
                         f"0..{n_pred - 1} (n_pred = {n_pred}) or {IGNORE} (ignore, counted as background)")
    valid = gt != IGNORE
    pred, gt = pred[valid], gt[valid]
    if gt.size and gt.max() >= n_gt:
        raise ValueError(f"ground truth holds class {gt.max()} but only {n_gt} classes are configured")
    pred = np.where(pred == IGNORE, 0, pred)
    return np.bincount(pred * n_gt + gt, minlength=n_pred * n_gt).reshape(n_pred, n_gt)


def hungarian(conf: np.ndarray) -> np.ndarray:
    """(n_pred, n_gt) confusion -> (n_pred,) gt class per predicted class (-1 where left unmatched).

    One-to-one matching maximising matched pixels (scipy's linear_sum_assignment).
    """
    rows, cols = linear_sum_assignment(-conf)
    mapping = np.full(conf.shape[0], -1, np.int64)
    mapping[rows] = cols
    return mapping


def scores(conf: np.ndarray, mapping: np.ndarray) -> dict:
    """Confusion (n_pred, n_gt) and a pred->gt mapping -> {miou, pixel_acc, iou (per gt class)}.

    Classes absent from both prediction and ground truth get IoU NaN and are left out of the mean.
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


def evaluate_maps(preds: np.ndarray, gts: np.ndarray, n_pred: int, n_gt: int) -> dict:
    """Predicted maps (N, H, W) and ground truth (N, H, W) -> scores plus the matching and confusion."""
    conf = confusion(preds, gts, n_pred, n_gt)
    mapping = hungarian(conf)
    out = scores(conf, mapping)
    out["mapping"] = mapping.tolist()
    out["confusion"] = conf.tolist()
    return out


def foreground_iou(pred_fg: np.ndarray, gt: np.ndarray) -> float:
    """Boolean foreground maps (N, H, W) vs ground truth (N, H, W) (class > 0 is foreground, 255 skipped)
    -> IoU of the foreground over the whole set."""
    valid = gt != IGNORE
    g = (gt > 0) & valid
    p = pred_fg & valid
    union = np.logical_or(p, g).sum()
    return float(np.logical_and(p, g).sum() / union) if union else 1.0
