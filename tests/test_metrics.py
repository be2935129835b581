import numpy as np

from pipeline.evaluate import metrics


def test_permuted_labels_score_perfectly_after_hungarian_matching():
    gt = np.array([[0, 0, 1, 1], [2, 2, 1, 0]], np.uint8)[None]
    perm = np.array([2, 0, 1], np.uint8)  # pred class = perm[gt]
    out = metrics.evaluate_maps(perm[gt], gt, 3, 3)
    assert out["miou"] == 1.0 and out["pixel_acc"] == 1.0
    assert out["mapping"] == [1, 2, 0]


def test_iou_matches_the_formula_and_ignore_is_skipped():
    gt = np.array([[0, 0, 1, 1, 255]], np.uint8)[None]
    pred = np.array([[0, 1, 1, 1, 0]], np.uint8)[None]
    out = metrics.evaluate_maps(pred, gt, 2, 2)
    # class 0: tp 1, gt 2, pred 1 -> 1/2; class 1: tp 2, gt 2, pred 3 -> 2/3
    assert np.allclose(out["iou"], [1 / 2, 2 / 3])
    assert np.isclose(out["miou"], (1 / 2 + 2 / 3) / 2)
    assert np.isclose(out["pixel_acc"], 3 / 4)


def test_unmatched_predicted_classes_count_as_wrong():
    gt = np.zeros((1, 2, 4), np.uint8)
    gt[0, :, 2:] = 1
    pred = np.array([[[0, 0, 1, 2], [0, 0, 1, 2]]], np.uint8)  # 3 clusters, 2 classes
    out = metrics.evaluate_maps(pred, gt, 3, 2)
    assert out["mapping"].count(-1) == 1
    assert np.isclose(out["pixel_acc"], 6 / 8)


def test_class_absent_everywhere_is_left_out_of_the_mean():
    gt = np.zeros((1, 2, 2), np.uint8)
    out = metrics.evaluate_maps(np.zeros_like(gt), gt, 3, 3)
    assert out["iou"][1] is None and out["miou"] == 1.0


def test_foreground_iou():
    gt = np.array([[[0, 1, 1, 255]]], np.uint8)
    pred = np.array([[[True, True, False, True]]])
    assert np.isclose(metrics.foreground_iou(pred, gt), 1 / 3)
