import numpy as np
import pytest

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


def test_matching_is_one_assignment_for_the_whole_dataset_not_one_per_image():
    """Image 1 predicts gt 0 as 0 and gt 1 as 1, image 2 the opposite. Each alone scores mIoU 1 after its own
    matching, but the dataset has one confusion matrix: pred 0 covers 2 pixels of gt 0 (image 1) and 2 of gt 1
    (image 2), pred 1 likewise -> [[2, 2], [2, 2]]. Any one-to-one matching gives each class tp 2, 4 gt pixels
    and 4 predicted pixels: IoU 2 / (4 + 4 - 2) = 1/3 per class, mIoU 1/3; pixel accuracy 4 / 8 = 1/2."""
    gt = np.array([[[0, 0, 1, 1]], [[0, 0, 1, 1]]], np.uint8)
    pred = np.array([[[0, 0, 1, 1]], [[1, 1, 0, 0]]], np.uint8)
    for i in range(2):
        assert metrics.evaluate_maps(pred[i:i + 1], gt[i:i + 1], 2, 2)["miou"] == 1.0
    out = metrics.evaluate_maps(pred, gt, 2, 2)
    assert out["confusion"] == [[2, 2], [2, 2]]
    assert np.allclose(out["iou"], [1 / 3, 1 / 3]) and np.isclose(out["miou"], 1 / 3)
    assert np.isclose(out["pixel_acc"], 1 / 2)


def test_with_fewer_predicted_ids_than_classes_the_unmatched_class_scores_zero():
    """2 predicted ids, 3 classes. Confusion: pred 0 = [2, 0, 0], pred 1 = [0, 3, 1] -> pred 0 -> class 0,
    pred 1 -> class 1, class 2 unmatched. IoU: class 0 2 / 2 = 1; class 1 tp 3, gt 3, pred 4 -> 3 / 4;
    class 2 tp 0, gt 1, pred 0 -> 0 / 1 = 0 (in the mean: it occurs in the ground truth).
    mIoU (1 + 3/4 + 0) / 3 = 7/12; pixel accuracy 5 / 6."""
    gt = np.array([[[0, 0, 1, 1, 1, 2]]], np.uint8)
    pred = np.array([[[0, 0, 1, 1, 1, 1]]], np.uint8)
    out = metrics.evaluate_maps(pred, gt, 2, 3)
    assert out["mapping"] == [0, 1]
    assert np.allclose(out["iou"], [1.0, 3 / 4, 0.0]) and np.isclose(out["miou"], 7 / 12)
    assert np.isclose(out["pixel_acc"], 5 / 6)


@pytest.mark.parametrize("bad", [3, 7, 254])
def test_a_predicted_id_out_of_range_is_an_error_naming_it_and_the_range(bad):
    gt = np.array([[[0, 1, 2, 255]]], np.uint8)
    pred = np.array([[[0, 1, 2, 2]]], np.uint8)
    pred[0, 0, 1] = bad
    with pytest.raises(ValueError, match=rf"id {bad}\b.*0\.\.2"):
        metrics.evaluate_maps(pred, gt, 3, 3)
    pred[0, 0, 1] = 1
    pred[0, 0, 3] = bad  # also where the ground truth is ignored: the map itself is wrong
    with pytest.raises(ValueError, match=rf"id {bad}\b.*0\.\.2"):
        metrics.evaluate_maps(pred, gt, 3, 3)


def test_predicted_ignore_255_counts_as_background_not_an_error():
    gt = np.array([[[0, 1, 1]]], np.uint8)
    out = metrics.evaluate_maps(np.array([[[255, 1, 1]]], np.uint8), gt, 2, 2)
    assert out["confusion"] == [[1, 0], [0, 2]] and out["miou"] == 1.0
