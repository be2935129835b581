import numpy as np

from conftest import section
from pipeline.method import filtering, labelmaps


def test_within_class_rank_is_zero_to_one_per_class():
    v = np.array([3.0, 1.0, 2.0, 10.0, 5.0])
    lab = np.array([0, 0, 0, 1, 1])
    assert np.allclose(filtering.within_class_rank(v, lab), [1, 0, 0.5, 1, 0])


def test_keep_mask_keeps_the_top_fraction_of_each_class():
    score = np.array([0.9, 0.1, 0.5, 0.3, 0.8, 0.7])
    lab = np.array([0, 0, 0, 0, 1, 1])
    keep = filtering.keep_mask(score, lab, 0.5)
    assert keep.tolist() == [True, False, True, False, True, False]


def test_an_outlier_mask_is_the_least_reliable_of_its_cluster():
    rng = np.random.default_rng(0)
    a = rng.normal([1, 0, 0], 0.05, (15, 3))
    b = rng.normal([0, 1, 0], 0.05, (15, 3))
    outlier = np.array([[0.45, 0.55, 0.0]])  # assigned to cluster 0 but sits between
    emb = np.concatenate([a, outlier, b]).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.array([0] * 16 + [1] * 15)
    centre0 = emb[:16].mean(0) / np.linalg.norm(emb[:16].mean(0))
    centre1 = emb[16:].mean(0) / np.linalg.norm(emb[16:].mean(0))
    dist = 1 - np.sum(emb * np.where(labels[:, None] == 0, centre0, centre1), axis=1)
    rel = filtering.reliability(emb, labels, dist, section("filter", folds=3), seed=0)
    assert np.argmin(rel["score"][:16]) == 15
    assert rel["confidence"][15] < np.median(rel["confidence"][:15])


def test_classes_by_image_gives_each_images_masks_their_class():
    records = [{"image": "a", "mask": 2}, {"image": "b", "mask": 1}, {"image": "a", "mask": 1}]
    assert labelmaps.classes_by_image(records, [3, 255, 1]) == {"a": {2: 3, 1: 1}, "b": {1: 255}}
