"""MaskDistill-style filtering: score every mask's reliability without labels, keep the best per class.

`filter.score`: embedding (this project's reliability from the mask embeddings: closeness to the cluster centre and
an out-of-fold classifier's confidence), detector (MaskDistill: the class-agnostic detector's confidence in the mask,
ranked within its cluster) or both (the mean of the two within-cluster ranks)."""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from pipeline.config import FilterConfig


def within_class_rank(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(M,) values and (M,) class labels -> (M,) ranks in [0, 1] within each class (1 = largest)."""
    out = np.ones(len(values), np.float64)
    for c in np.unique(labels):
        idx = np.where(labels == c)[0]
        if len(idx) > 1:
            out[idx] = (rankdata(values[idx]) - 1) / (len(idx) - 1)
    return out


def classifier_confidence(emb: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> np.ndarray | None:
    """Out-of-fold probability a logistic regression on the embeddings gives each mask's own cluster -> (M,).

    None when some cluster has fewer than 2 members (no fold split possible).
    """
    classes, counts = np.unique(labels, return_counts=True)
    n_splits = min(folds, int(counts.min()))
    if len(classes) < 2 or n_splits < 2:
        return None
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    proba = cross_val_predict(LogisticRegression(max_iter=1000), emb, labels, cv=cv, method="predict_proba")
    col = np.searchsorted(classes, labels)
    return proba[np.arange(len(labels)), col]


def reliability(emb: np.ndarray, labels: np.ndarray, dist: np.ndarray, cfg: FilterConfig, seed: int) -> dict[str, np.ndarray]:
    """Embeddings (M, D), cluster labels (M,), distance to own centre (M,) -> {'score', 'distance_rank',
    'confidence'} each (M,); score = w * closeness rank + (1 - w) * confidence rank, within each class."""
    close = within_class_rank(-dist, labels)
    conf = classifier_confidence(emb, labels, cfg.folds, seed)
    if conf is None:
        return {"score": close, "distance_rank": close, "confidence": np.full(len(labels), np.nan)}
    score = cfg.weight_distance * close + (1 - cfg.weight_distance) * within_class_rank(conf, labels)
    return {"score": score, "distance_rank": close, "confidence": conf}


def combined_score(reliability: np.ndarray, detector: np.ndarray, labels: np.ndarray, how: str) -> np.ndarray:
    """(M,) embedding reliability, (M,) detector scores, (M,) cluster labels -> (M,) the score the filter keeps by:
    embedding: the reliability itself; detector: the within-cluster rank of the detector score (in [0, 1]); both:
    the mean of the within-cluster ranks of the two."""
    if how == "embedding":
        return reliability
    if np.isnan(detector).any():
        raise ValueError("filter.score needs every mask's detector score (distill.method maskrcnn)")
    rank = within_class_rank(detector, labels)
    return rank if how == "detector" else 0.5 * (rank + within_class_rank(reliability, labels))


def keep_mask(score: np.ndarray, labels: np.ndarray, keep: float) -> np.ndarray:
    """(M,) reliability and labels -> (M,) bool: the ceil(keep * n_c) most reliable masks of each class."""
    out = np.zeros(len(score), bool)
    for c in np.unique(labels):
        idx = np.where(labels == c)[0]
        n = int(np.ceil(keep * len(idx)))
        out[idx[np.argsort(-score[idx], kind="stable")[:n]]] = True
    return out
