import numpy as np
import pytest

from conftest import section
from pipeline.method import cluster


def test_mask_embedding_is_the_coverage_weighted_mean_of_unit_features():
    tokens = np.zeros((1, 2, 2), np.float32)
    tokens[0, 0] = [3, 0]
    tokens[0, 1] = [0, 1]
    frac = np.array([[[1.0, 1.0]], [[1.0, 0.0]]], np.float32)
    emb = cluster.mask_embeddings(tokens, frac)
    assert np.allclose(emb[0], [1 / np.sqrt(2), 1 / np.sqrt(2)])
    assert np.allclose(emb[1], [1, 0])


@pytest.mark.parametrize("method", ["kmeans", "spectral"])
def test_two_separated_groups_get_two_clusters(method):
    rng = np.random.default_rng(0)
    a = rng.normal([5, 0, 0], 0.1, (20, 3))
    b = rng.normal([0, 5, 0], 0.1, (20, 3))
    emb = np.concatenate([a, b]).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels, centres, dist = cluster.cluster_embeddings(emb, section("cluster", k=2, method=method), seed=0)
    assert len(set(labels[:20])) == 1 and len(set(labels[20:])) == 1 and labels[0] != labels[20]
    assert np.allclose(np.linalg.norm(centres, axis=1), 1, atol=1e-5)
    assert np.all(dist < 0.05)


def test_more_clusters_than_masks_is_a_clear_error():
    with pytest.raises(cluster.ClusterError, match=r"'cluster\.k' is 5 but only 3 masks.*allowed values: 1\.\.3"):
        cluster.cluster_embeddings(np.eye(3, dtype=np.float32), section("cluster", k=5), 0)


def test_render_labels_maps_each_mask_to_its_class_and_keeps_background():
    mask_map = np.array([[0, 1, 2], [2, 0, 1]], np.uint8)
    out = cluster.render_labels(mask_map, np.array([3, 255], np.uint8))
    assert out.tolist() == [[0, 3, 255], [255, 0, 3]]
