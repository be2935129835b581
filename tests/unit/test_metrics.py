import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from pipeline.evaluate import baselines, mask_ap, metrics


@pytest.mark.parametrize("match", ["iou", "pixels"])
def test_permuted_labels_score_perfectly_after_hungarian_matching(match):
    gt = np.array([[0, 0, 1, 1], [2, 2, 1, 0]], np.uint8)[None]
    perm = np.array([2, 0, 1], np.uint8)  # pred class = perm[gt]
    out = metrics.evaluate_maps(perm[gt], gt, 3, 3, match)
    assert out["miou"] == 1.0 and out["pixel_acc"] == 1.0
    assert out["mapping"] == [1, 2, 0]


def test_iou_matches_the_formula_and_ignore_is_skipped():
    gt = np.array([[0, 0, 1, 1, 255]], np.uint8)[None]
    pred = np.array([[0, 1, 1, 1, 0]], np.uint8)[None]
    out = metrics.evaluate_maps(pred, gt, 2, 2, "pixels")
    # class 0: tp 1, gt 2, pred 1 -> 1/2; class 1: tp 2, gt 2, pred 3 -> 2/3
    assert np.allclose(out["iou"], [1 / 2, 2 / 3])
    assert np.isclose(out["miou"], (1 / 2 + 2 / 3) / 2)
    assert np.isclose(out["pixel_acc"], 3 / 4)


@pytest.mark.parametrize("match", ["iou", "pixels"])
def test_unmatched_predicted_classes_count_as_wrong(match):
    gt = np.zeros((1, 2, 4), np.uint8)
    gt[0, :, 2:] = 1
    pred = np.array([[[0, 0, 1, 2], [0, 0, 1, 2]]], np.uint8)  # 3 clusters, 2 classes
    out = metrics.evaluate_maps(pred, gt, 3, 2, match)
    assert out["mapping"].count(-1) == 1
    assert np.isclose(out["pixel_acc"], 6 / 8)


def test_class_absent_everywhere_is_left_out_of_the_mean():
    gt = np.zeros((1, 2, 2), np.uint8)
    out = metrics.evaluate_maps(np.zeros_like(gt), gt, 3, 3, "pixels")
    assert out["iou"][1] is None and out["miou"] == 1.0


def test_foreground_iou():
    gt = np.array([[[0, 1, 1, 255]]], np.uint8)
    pred = np.array([[[True, True, False, True]]])
    assert np.isclose(metrics.foreground_iou(pred, gt), 1 / 3)
    assert metrics.foreground_counts(pred, gt) == (1, 3)  # the ignored pixel counts in neither
    other = np.array([[2, 0], [0, 255]], np.uint8)  # a second image of another size, pooled by counts
    assert metrics.foreground_counts(np.array([[True, True], [False, True]]), other) == (1, 2)


def test_matching_is_one_assignment_for_the_whole_dataset_not_one_per_image():
    """Image 1 predicts gt 0 as 0 and gt 1 as 1, image 2 the opposite. Each alone scores mIoU 1 after its own
    matching, but the dataset has one confusion matrix: pred 0 covers 2 pixels of gt 0 (image 1) and 2 of gt 1
    (image 2), pred 1 likewise -> [[2, 2], [2, 2]]. Any one-to-one matching gives each class tp 2, 4 gt pixels
    and 4 predicted pixels: IoU 2 / (4 + 4 - 2) = 1/3 per class, mIoU 1/3; pixel accuracy 4 / 8 = 1/2."""
    gt = np.array([[[0, 0, 1, 1]], [[0, 0, 1, 1]]], np.uint8)
    pred = np.array([[[0, 0, 1, 1]], [[1, 1, 0, 0]]], np.uint8)
    for i in range(2):
        assert metrics.evaluate_maps(pred[i:i + 1], gt[i:i + 1], 2, 2, "pixels")["miou"] == 1.0
    out = metrics.evaluate_maps(pred, gt, 2, 2, "pixels")
    assert out["confusion"] == [[2, 2], [2, 2]]
    assert np.allclose(out["iou"], [1 / 3, 1 / 3]) and np.isclose(out["miou"], 1 / 3)
    assert np.isclose(out["pixel_acc"], 1 / 2)


@pytest.mark.parametrize("match", ["iou", "pixels"])
def test_with_fewer_predicted_ids_than_classes_the_unmatched_class_scores_zero(match):
    """2 predicted ids, 3 classes. Confusion: pred 0 = [2, 0, 0], pred 1 = [0, 3, 1] -> pred 0 -> class 0,
    pred 1 -> class 1, class 2 unmatched. IoU: class 0 2 / 2 = 1; class 1 tp 3, gt 3, pred 4 -> 3 / 4;
    class 2 tp 0, gt 1, pred 0 -> 0 / 1 = 0 (in the mean: it occurs in the ground truth).
    mIoU (1 + 3/4 + 0) / 3 = 7/12; pixel accuracy 5 / 6. IoU matching agrees: pair IoUs pred 0: [1, 0, 0],
    pred 1: [0, 3/4, 1/4]."""
    gt = np.array([[[0, 0, 1, 1, 1, 2]]], np.uint8)
    pred = np.array([[[0, 0, 1, 1, 1, 1]]], np.uint8)
    out = metrics.evaluate_maps(pred, gt, 2, 3, match)
    assert out["mapping"] == [0, 1]
    assert np.allclose(out["iou"], [1.0, 3 / 4, 0.0]) and np.isclose(out["miou"], 7 / 12)
    assert np.isclose(out["pixel_acc"], 5 / 6)


@pytest.mark.parametrize("bad", [3, 7, 254])
def test_a_predicted_id_out_of_range_is_an_error_naming_it_and_the_range(bad):
    gt = np.array([[[0, 1, 2, 255]]], np.uint8)
    pred = np.array([[[0, 1, 2, 2]]], np.uint8)
    pred[0, 0, 1] = bad
    with pytest.raises(ValueError, match=rf"id {bad}\b.*0\.\.2"):
        metrics.evaluate_maps(pred, gt, 3, 3, "pixels")
    pred[0, 0, 1] = 1
    pred[0, 0, 3] = bad  # also where the ground truth is ignored: the map itself is wrong
    with pytest.raises(ValueError, match=rf"id {bad}\b.*0\.\.2"):
        metrics.evaluate_maps(pred, gt, 3, 3, "pixels")


def test_predicted_ignore_255_counts_as_background_not_an_error():
    gt = np.array([[[0, 1, 1]]], np.uint8)
    out = metrics.evaluate_maps(np.array([[[255, 1, 1]]], np.uint8), gt, 2, 2, "pixels")
    assert out["confusion"] == [[1, 0], [0, 2]] and out["miou"] == 1.0


def test_confusion_at_original_resolution_by_hand():
    """A label map made at the prepared size (2 x 2) is resized to the ground truth's original size (3 x 4) by
    nearest neighbour (rows 0 0 1, columns 0 0 1 1) and scored there:
        pred  0 0 1 1     gt  0 0 1 255
              0 0 1 1         0 1 1 1
              2 2 1 1         2 0 1 2
    pred 0 covers gt 0,0,0,1 -> [3, 1, 0]; pred 1 covers gt 1,(255 skipped),1,1,1,2 -> [0, 4, 1]; pred 2 covers
    gt 2,0 -> [1, 0, 1]; 11 valid pixels. Both matchings keep the identity (pixels 3 + 4 + 1 = 8 beats every
    other permutation; pair IoUs 3/5 + 4/6 + 1/3 likewise). IoU: class 0 tp 3, gt 4, pred 4 -> 3/5; class 1 tp 4,
    gt 5, pred 5 -> 4/6; class 2 tp 1, gt 2, pred 2 -> 1/3; mIoU 8/15; pixel accuracy 8/11."""
    prepared = np.array([[0, 1], [2, 1]], np.uint8)
    gt = np.array([[0, 0, 1, 255], [0, 1, 1, 1], [2, 0, 1, 2]], np.uint8)
    pred = metrics.to_size(prepared, gt.shape)
    assert pred.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 1, 1]]
    for match in ("iou", "pixels"):
        out = metrics.Confusion(3, 3).add(pred, gt).result(match)
        assert out["confusion"] == [[3, 1, 0], [0, 4, 1], [1, 0, 1]]
        assert out["mapping"] == [0, 1, 2]
        assert np.allclose(out["iou"], [3 / 5, 4 / 6, 1 / 3]) and np.isclose(out["miou"], 8 / 15)
        assert np.isclose(out["pixel_acc"], 8 / 11)
        json.dumps(out, allow_nan=False)
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(3, 4\).*to_size"):
        metrics.Confusion(3, 3).add(prepared, gt)  # a map at the prepared size is not scored against the original


def test_iou_matching_chooses_differently_from_pixel_matching():
    """Background (class 0) has 9 pixels, a small object (class 1) 2, another (class 2) 1:
        pred  0 0 0 0     gt  0 0 0 0
              0 0 1 1         0 0 0 0
              1 0 0 2         0 1 1 2
    Confusion: pred 0 = [6, 2, 0] (most of the background AND the whole small object), pred 1 = [3, 0, 0] (the
    rest of the background), pred 2 = [0, 0, 1].
    Pixel matching: identity 6 + 0 + 1 = 7 > swapping 0 and 1, 2 + 3 + 1 = 6: pred 0 -> background, and the
    small object gets pred 1, which never touches it. IoU: class 0 6 / (9 + 8 - 6) = 6/11, class 1 0, class 2 1;
    mIoU 17/33; pixel accuracy 7/12.
    IoU matching: pair IoUs pred 0-class 0 6/11, pred 0-class 1 2/8, pred 1-class 0 3/9, pred 1-class 1 0:
    identity 6/11 + 0 + 1 = 1.545 < swap 1/4 + 1/3 + 1 = 1.583, so pred 0 -> small object, pred 1 -> background.
    IoU: class 0 3/9 = 1/3, class 1 1/4, class 2 1; mIoU 19/36 (higher), pixel accuracy 6/12 (lower): IoU
    matching rewards covering a small class, pixel matching favours big classes."""
    gt = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 2]], np.uint8)
    pred = np.array([[0, 0, 0, 0], [0, 0, 1, 1], [1, 0, 0, 2]], np.uint8)
    conf = metrics.Confusion(3, 3).add(pred, gt)
    pixels, iou = conf.result("pixels"), conf.result("iou")
    assert pixels["confusion"] == iou["confusion"] == [[6, 2, 0], [3, 0, 0], [0, 0, 1]]
    assert pixels["mapping"] == [0, 1, 2]
    assert np.allclose(pixels["iou"], [6 / 11, 0, 1]) and np.isclose(pixels["miou"], 17 / 33)
    assert np.isclose(pixels["pixel_acc"], 7 / 12)
    assert iou["mapping"] == [1, 0, 2]
    assert np.allclose(iou["iou"], [1 / 3, 1 / 4, 1]) and np.isclose(iou["miou"], 19 / 36)
    assert np.isclose(iou["pixel_acc"], 6 / 12)
    assert np.allclose(metrics.iou_table(conf.matrix), [[6 / 11, 1 / 4, 0], [1 / 3, 0, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match="'majority'.*iou, pixels"):
        conf.result("majority")


def test_iou_matching_with_more_clusters_than_classes_leaves_the_extra_ones_wrong():
    """4 predicted ids, 2 classes: gt 0 0 0 0 1 1 1 | pred 0 0 0 3 1 1 2 -> confusion [[3, 0], [0, 2], [0, 1],
    [1, 0]]. Pair IoUs: pred 0-class 0 3/4, pred 3-class 0 1/4, pred 1-class 1 2/3, pred 2-class 1 1/3: pred 0 ->
    0, pred 1 -> 1, preds 2 and 3 unmatched. Their pixels are misses of their class and no class's false
    positives: class 0 tp 3, gt 4, pred 3 -> 3/4; class 1 tp 2, gt 3, pred 2 -> 2/3; pixel accuracy 5/7."""
    gt = np.array([[0, 0, 0, 0, 1, 1, 1]], np.uint8)
    pred = np.array([[0, 0, 0, 3, 1, 1, 2]], np.uint8)
    out = metrics.Confusion(4, 2).add(pred, gt).result("iou")
    assert out["confusion"] == [[3, 0], [0, 2], [0, 1], [1, 0]]
    assert out["mapping"] == [0, 1, -1, -1]
    assert np.allclose(out["iou"], [3 / 4, 2 / 3]) and np.isclose(out["miou"], (3 / 4 + 2 / 3) / 2)
    assert np.isclose(out["pixel_acc"], 5 / 7)


@pytest.mark.parametrize("bad", [4, 200, 254])
def test_confusion_add_names_an_out_of_range_id_and_the_range(bad):
    conf = metrics.Confusion(4, 2)
    conf.add(np.array([[0, 255]], np.uint8), np.array([[0, 1]], np.uint8))  # 255 = background, not an error
    with pytest.raises(ValueError, match=rf"id {bad}\b.*0\.\.3"):
        conf.add(np.array([[0, bad]], np.uint8), np.array([[0, 1]], np.uint8))
    assert conf.matrix.tolist() == [[1, 1], [0, 0], [0, 0], [0, 0]]  # the failed image added nothing


def test_confusion_accumulated_image_by_image_equals_one_big_confusion():
    """Two images of different sizes (3 x 4 and 5 x 2, as originals are): adding them one at a time gives the
    matrix of all their pixels counted at once, and the same scores."""
    rng = np.random.default_rng(0)
    preds = [rng.integers(0, 4, (3, 4)).astype(np.uint8), rng.integers(0, 4, (5, 2)).astype(np.uint8)]
    gts = [rng.integers(0, 3, (3, 4)).astype(np.uint8), rng.integers(0, 3, (5, 2)).astype(np.uint8)]
    gts[1][0, 0] = 255
    conf = metrics.Confusion(4, 3)
    for p, g in zip(preds, gts):
        conf.add(p, g)
    flat_p = np.concatenate([p.ravel() for p in preds])
    flat_g = np.concatenate([g.ravel() for g in gts])
    big = metrics.confusion(flat_p, flat_g, 4, 3)
    assert conf.matrix.tolist() == big.tolist() and big.sum() == 12 + 10 - 1
    assert conf.images == 2
    for match in ("iou", "pixels"):
        assert conf.result(match) == metrics.Confusion(4, 3).add(flat_p, flat_g).result(match)
        assert conf.result(match) == metrics.evaluate_maps(preds, gts, 4, 3, match)


def test_to_size_nearest_neighbour_exact_values():
    a = np.array([[1, 2], [3, 4]], np.uint8)
    assert metrics.to_size(a, (3, 3)).tolist() == [[1, 1, 2], [1, 1, 2], [3, 3, 4]]
    assert metrics.to_size(a, (3, 5)).tolist() == [[1, 1, 1, 2, 2], [1, 1, 1, 2, 2], [3, 3, 3, 4, 4]]
    assert metrics.to_size(a, (4, 2)).tolist() == [[1, 2], [1, 2], [3, 4], [3, 4]]
    b = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert metrics.to_size(b, (2, 2)).tolist() == [[0, 2], [4, 6]]  # shrinking picks floor(i * 3/2), floor(j * 2)
    assert metrics.to_size(b, (3, 4)) is b
    with pytest.raises(ValueError, match="uint8"):
        metrics.to_size(b.astype(np.int64), (4, 4))


def test_warn_classes():
    assert metrics.warn_classes(4, 4) is None
    more = metrics.warn_classes(6, 4)
    assert "cluster.k + 1 = 6" in more and "4 classes" in more and "2 predicted id(s) stay unmatched" in more
    assert "cluster.k: 3" in more
    fewer = metrics.warn_classes(3, 5)
    assert "2 class(es) stay unmatched and score IoU 0" in fewer and "cluster.k: 4" in fewer


def two_colour_images():
    """Two images of different sizes, each half red half blue (left/right), with a little noise."""
    rng = np.random.default_rng(1)
    ims = []
    for h, w in ((6, 8), (5, 7)):
        im = np.zeros((h, w, 3), np.uint8)
        im[:, : w // 2] = (200, 30, 30)
        im[:, w // 2:] = (30, 30, 200)
        ims.append(np.clip(im.astype(int) + rng.integers(-5, 6, im.shape), 0, 255).astype(np.uint8))
    return ims


def test_colour_baseline_fits_a_sample_and_predicts_each_image_at_its_size():
    ims = two_colour_images()
    model = baselines.fit_colour(ims, 2, seed=0, sample=40, n_init=1)  # 40 of the 83 pixels
    labels = [baselines.predict_colour(model, im) for im in ims]
    assert [lab.shape for lab in labels] == [(6, 8), (5, 7)] and all(lab.dtype == np.uint8 for lab in labels)
    for lab, im in zip(labels, ims):
        w = im.shape[1]
        assert len(np.unique(lab[:, : w // 2])) == 1 and len(np.unique(lab[:, w // 2:])) == 1
        assert lab[0, 0] != lab[0, -1]
    again = baselines.fit_colour(ims, 2, seed=0, sample=40, n_init=1)
    assert np.array_equal(again.cluster_centers_, model.cluster_centers_)  # deterministic with the seed
    with pytest.raises(TypeError, match="re-iterable"):
        baselines.fit_colour(iter(ims), 2, seed=0, sample=40, n_init=1)


def test_the_sample_is_the_draw_over_all_pixels_gathered_one_image_at_a_time():
    """_sample_rows(arrays, idx) == concatenation[idx] (in idx's order) without building the concatenation:
    the colour fit sees exactly the pixels a draw over the concatenated images would."""
    rng = np.random.default_rng(2)
    arrays = [rng.integers(0, 255, (h, w, 3)).astype(np.uint8) for h, w in ((3, 4), (1, 5), (4, 2))]
    flat = np.concatenate([a.reshape(-1, 3) for a in arrays])
    idx = rng.choice(len(flat), size=17, replace=False)
    got = baselines._sample_rows(arrays, idx, lambda a: a.reshape(-1, 3), len(flat))
    assert np.array_equal(got, flat[idx])
    assert np.array_equal(baselines._sample_rows(arrays, None, lambda a: a.reshape(-1, 3), len(flat)), flat)


def test_feature_baseline_predicts_each_grid_at_the_original_size():
    """Grids of different shapes (3 x 4 and 2 x 5 patches) of two token directions; each image's patch labels are
    upsampled by nearest neighbour to its original size (24 x 32 and 15 x 41, not a multiple of the grid)."""
    rng = np.random.default_rng(3)
    dirs = np.eye(8, dtype=np.float32)[:2] * 5
    grids, truth = [], []
    for h, w in ((3, 4), (2, 5)):
        t = (np.arange(h * w).reshape(h, w) % 2).astype(np.uint8)
        grids.append((dirs[t] + rng.normal(0, 0.1, (h, w, 8))).astype(np.float16))
        truth.append(t)
    for sample in (1000, 12):  # every token (22 <= 1000), then a seeded draw of 12 of the 22
        model = baselines.fit_features(grids, 2, seed=0, n_init=1, sample=sample)
        for grid, t, size in zip(grids, truth, ((24, 32), (15, 41))):
            lab = baselines.predict_features(model, grid, size)
            assert lab.shape == size and lab.dtype == np.uint8
            patch = np.where(t == t.flat[0], lab[0, 0], 1 - lab[0, 0]).astype(np.uint8)
            assert np.array_equal(lab, metrics.to_size(patch, size))  # the right clusters, upsampled nearest
        again = baselines.fit_features(grids, 2, seed=0, n_init=1, sample=sample)
        assert np.array_equal(again.cluster_centers_, model.cluster_centers_)


# ---------------------------------------------------------------- class-agnostic mask AP50 (COCOeval)

def components_ap50(images: list[tuple[np.ndarray, np.ndarray, list[float]]]) -> float | None:
    """(ground-truth class map, detection index map, scores of masks 1, 2, ...) per image -> mask_ap's AP50
    against the maps' 8-connected components, ground truth 255 left out, as the evaluate stage scores them."""
    insts = [(f"im{k}", gt.shape, mask_ap.component_instances(gt)) for k, (gt, _, _) in enumerate(images)]
    dets = {f"im{k}": mask_ap.detections(det, s, gt != 255) for k, (gt, det, s) in enumerate(images)}
    return mask_ap.ap50(mask_ap.ground_truth(insts), dets)


def test_instances_are_the_8_connected_components_of_each_class_ignore_left_out():
    gt = np.array([[1, 0, 0, 2, 2],
                   [0, 1, 0, 1, 255],
                   [0, 0, 0, 0, 0],
                   [1, 1, 0, 255, 255]], np.uint8)
    inst, n = mask_ap.instance_map(gt)
    # class 1: the diagonal pair is one component (8-connectivity), (1, 3) touches only class 2, (3, 0..1) a third;
    # class 2: one component; 255 is no instance
    assert n == 4
    assert inst.tolist() == [[1, 0, 0, 4, 4],
                             [0, 1, 0, 2, 0],
                             [0, 0, 0, 0, 0],
                             [3, 3, 0, 0, 0]]
    anns = mask_ap.component_instances(gt)
    assert [a["area"] for a in anns] == [2.0, 1.0, 2.0, 2.0] and all(a["iscrowd"] == 0 for a in anns)
    np.testing.assert_array_equal(mask_utils.decode(anns[2]["segmentation"]), inst == 3)


def test_ap50_of_two_instances_and_three_detections_by_hand():
    """Instances A (rows 0-1) and B (rows 4-5) of a 6 x 4 map. Detections: 0.9 on A (IoU 1), 0.8 on rows 2-3
    (IoU 0), 0.7 on B (IoU 1). Sorted: TP, FP, TP -> recall 0.5, 0.5, 1; precision 1, 1/2, 2/3, made
    non-increasing 1, 2/3, 2/3. COCO's 101 recall points: 0..0.50 (51 points) read precision 1, 0.51..1 (50 points)
    read 2/3. The mask ids' order does not matter, only their scores."""
    gt = np.zeros((6, 4), np.uint8)
    gt[0:2], gt[4:6] = 1, 2
    det = np.zeros((6, 4), np.uint8)
    det[0:2], det[2:4], det[4:6] = 1, 2, 3
    want = (51 * 1 + 50 * 2 / 3) / 101
    assert components_ap50([(gt, det, [0.9, 0.8, 0.7])]) == pytest.approx(want, abs=1e-12)
    assert components_ap50([(gt, det[::-1].copy(), [0.7, 0.8, 0.9])]) == pytest.approx(want, abs=1e-12)


def test_iou_threshold_is_inclusive_and_ignore_pixels_are_left_out():
    gt = np.zeros((4, 4), np.uint8)
    gt[0:2, 0:2] = 1  # 4 pixels
    det = np.zeros((4, 4), np.uint8)
    det[0:2, 0:4] = 1  # 8 pixels: IoU 4/8 = 0.5, matched (COCO: >= 0.5)
    assert components_ap50([(gt, det, [0.5])]) == pytest.approx(1.0)
    det[2, 0] = 1  # 9 pixels: IoU 4/9 < 0.5
    assert components_ap50([(gt, det, [0.5])]) == 0.0
    gt[2, 0] = 255  # ... unless that pixel is ignored
    assert components_ap50([(gt, det, [0.5])]) == pytest.approx(1.0)
    only_ignored = np.where(gt == 255, 2, det).astype(np.uint8)  # mask 2 lies on ignored pixels only:
    assert components_ap50([(gt, only_ignored, [0.5, 0.9])]) == pytest.approx(0.5)  # a false positive ranked first
    assert components_ap50([(gt, np.zeros_like(det), [])]) == 0.0  # no detection
    assert components_ap50([(np.zeros_like(gt), det, [0.5])]) is None  # no instance anywhere: no AP


def ap_fixture() -> list[tuple[np.ndarray, np.ndarray, list[float]]]:
    """Three 8 x 8 images, (ground-truth class map, detection index map, scores of masks 1, 2, ...): six instances
    A..F, eight detections; image 1: 0.9 on A (IoU 1), 0.6 on half of B (IoU 8/16 = 0.5, a match: >= 0.5), 0.3 a
    false positive, mask 4 scored but empty; image 2: 0.8 on C shifted by a column (IoU 12/20), 0.95 over D
    (IoU 9/16), 0.5 a false positive, E missed; image 3: 0.85 over a column of F (IoU 4/24) then 0.7 over the rest
    of F and the ignored rows below (IoU 12/18 over valid pixels, 12/26 over all: a match only as ignore is left
    out). Sorted: 0.95 TP, 0.9 TP, 0.85 FP, 0.8 TP, 0.7 TP, 0.6 TP, 0.5 FP, 0.3 FP."""
    gt1, det1 = np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)
    gt1[0:2, 0:4], gt1[4:8, 0:4] = 1, 2  # A, B
    det1[0:2, 0:4], det1[4:8, 0:2], det1[0:4, 5:8] = 1, 2, 3
    gt2, det2 = np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)
    gt2[0:4, 0:4], gt2[5:8, 5:8], gt2[0:2, 6:8] = 1, 2, 1  # C, D, E
    det2[0:4, 1:5], det2[4:8, 4:8], det2[7, 0:4] = 1, 2, 3
    gt3, det3 = np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)
    gt3[0:4, 0:4], gt3[4:6, 0:4] = 3, 255  # F, ignored rows
    det3[0:4, 3:6], det3[0:4, 0:3], det3[4:6, 0:4], det3[6, 0:2] = 1, 2, 2, 2
    return [(gt1, det1, [0.9, 0.6, 0.3, 0.2]), (gt2, det2, [0.8, 0.95, 0.5]), (gt3, det3, [0.85, 0.7])]



def test_mask_ap50_of_components_by_cocoeval_on_three_images():
    """Six instances, eight detections (`ap_fixture`): recall 1/6 and 2/6 at precision 1 (34 recall points), then
    3/6, 4/6, 5/6 at a precision made non-increasing to 5/6 (50 points), E never found (17 points read 0)."""
    assert components_ap50(ap_fixture()) == pytest.approx((34 * 1 + 50 * 5 / 6) / 101, abs=1e-12)
