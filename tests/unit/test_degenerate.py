"""Degenerate data is handled on purpose: no salient object, an empty cluster, a filter that would drop
everything, no foreground to merge, a class absent from the ground truth. No crash, no NaN."""
import json
import warnings

import numpy as np
import torch

from conftest import section
from pipeline.evaluate import metrics
from pipeline.method import cluster, filtering, labelmaps, merge, proposals
from pipeline.train import loop


def test_an_image_with_no_salient_object_gets_no_proposal_and_an_all_background_label_map():
    feats = np.ones((8, 8, 16), np.float32)  # every patch alike: any cut is arbitrary (contrast ~1e-16)
    feats += 1e-4 * np.random.default_rng(0).normal(size=feats.shape).astype(np.float32)
    cfg = section("proposals", refine="none")
    assert proposals.patch_proposals(feats, cfg) == []
    mask_map, kept = proposals.pixel_masks(np.full((64, 64, 3), 90, np.uint8), [], 8, cfg)
    assert kept == [] and not mask_map.any()
    assert not labelmaps.render_labels(mask_map, np.zeros(0, np.uint8)).any()


def test_min_score_zero_keeps_a_proposal_of_any_positive_contrast():
    f = np.zeros((10, 10, 8), np.float32)
    f[..., 0] = 1
    f[3:7, 2:6] = 0
    f[3:7, 2:6, 1] = 1
    assert len(proposals.patch_proposals(f, section("proposals", refine="none", min_score=0.0))) == 1
    assert proposals.patch_proposals(f, section("proposals", refine="none", min_score=1.5)) == []  # contrast is 1.0


def test_identical_embeddings_leave_clusters_empty_without_nan():
    emb = np.tile(np.array([[1, 0, 0]], np.float32), (6, 1))  # 6 masks, one distinct point, k = 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns: fewer distinct clusters than k
        labels, centres, dist = cluster.cluster_embeddings(emb, section("cluster", k=3, n_init=2), 0)
    empty = [c for c in range(3) if not (labels == c).any()]
    assert empty and all(not centres[c].any() for c in empty)  # an empty cluster keeps a zero centre
    assert np.isfinite(dist).all() and np.isfinite(centres).all()
    rel = filtering.reliability(emb, labels, dist, section("filter"), 0)
    keep = filtering.keep_mask(rel["score"], labels, 0.8)
    assert np.isfinite(rel["score"]).all()
    for c in set(labels.tolist()):
        assert keep[labels == c].any()


def test_a_filter_that_would_drop_everything_keeps_the_best_mask_of_each_cluster():
    labels = np.array([0, 0, 0, 1, 1, 2])
    score = np.array([0.2, 0.9, 0.5, 0.1, 0.3, 0.0])
    keep = filtering.keep_mask(score, labels, 1e-6)  # ceil(keep * n) >= 1 for every non-empty cluster
    assert keep.tolist() == [False, True, False, False, True, True]


def test_singleton_clusters_fall_back_to_closeness_with_confidence_recorded_as_missing():
    emb = np.eye(3, dtype=np.float32)
    labels = np.array([0, 1, 2])
    rel = filtering.reliability(emb, labels, np.zeros(3, np.float32), section("filter", folds=5), 0)
    assert np.isnan(rel["confidence"]).all() and np.isfinite(rel["score"]).all()  # the stage writes null


def test_no_foreground_patch_to_merge_leaves_every_mask_class_unchanged():
    # two images, two masks (classes 1 and 3) that cover no patch by half: no foreground patch, no feature
    grids = [np.zeros((4, 4), np.int64), np.zeros((3, 5), np.int64)]
    res = merge.refine(np.zeros((0, 8), np.float32), [np.zeros((0, 8), np.float32)] * 2, grids, np.zeros(0, np.int64),
                       np.array([1, 3]), section("merge", parts=10), 0, "sklearn")
    assert res.n_parts == 1  # one empty part, so the graph and Louvain still have a node
    assert [g.tolist() for g in res.part_grids] == [[[-1] * 4] * 4, [[-1] * 5] * 3]
    assert list(res.graph.nodes) == [0] and res.graph.number_of_edges() == 0
    assert res.part_community.tolist() == [0] and res.community_class.tolist() == [0]
    assert res.new_class.tolist() == [1, 3]  # unchanged
    assert res.mask_community.tolist() == [-1, -1] and res.mask_community_share.tolist() == [0.0, 0.0]


def test_a_class_absent_from_the_ground_truth_gives_no_nan():
    gt = np.array([[[0, 0, 1, 1]]], np.uint8)  # 3 configured classes, class 2 never occurs
    pred = np.array([[[0, 2, 1, 1]]], np.uint8)
    out = metrics.evaluate_maps(pred, gt, 3, 3, "pixels")
    # class 2 is absent from the ground truth but a cluster is matched to it: its pixel is a false positive,
    # IoU 0 (tp 0 / union 1); class 0: tp 1 / union 2; class 1: 2 / 2
    assert out["mapping"] == [0, 1, 2] and out["iou"] == [0.5, 1.0, 0.0] and np.isclose(out["miou"], 0.5)
    absent_both = metrics.evaluate_maps(np.array([[[0, 0, 1, 1]]], np.uint8), gt, 3, 3, "pixels")
    assert absent_both["iou"] == [1.0, 1.0, None] and absent_both["miou"] == 1.0  # left out of the mean
    json.dumps(out, allow_nan=False)  # the metrics files hold no NaN


def test_ground_truth_that_is_all_ignore_scores_zero_not_nan():
    gt = np.full((2, 3, 3), 255, np.uint8)
    out = metrics.evaluate_maps(np.zeros_like(gt), gt, 3, 2, "pixels")
    assert out["miou"] == 0.0 and out["pixel_acc"] == 0.0 and out["iou"] == [None, None]
    json.dumps(out, allow_nan=False)


def test_a_batch_whose_pseudo_labels_are_all_ignore_gives_zero_loss_not_nan():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss, valid = loop.pixel_loss(logits, torch.full((2, 4, 4), 255, dtype=torch.long))
    (loss / valid.clamp(min=1)).backward()
    assert loss.item() == 0.0 and valid.item() == 0.0 and torch.isfinite(logits.grad).all()
