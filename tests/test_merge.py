import numpy as np

from conftest import section
from pipeline.method import merge


def test_part_graph_counts_cooccurrence_and_adjacency():
    parts = np.array([[0, 1, -1], [0, 2, -1]])
    masks = np.array([[1, 1, 0], [1, 2, 0]])
    g = merge.part_graph([parts], [masks], 3, section("merge", weight_cooccur=1.0, weight_adjacent=0.0))
    # mask 1 holds parts {0, 1}: one co-occurrence pair (counted both ways, normalised to 1 over the matrix)
    assert set(g.edges()) == {(0, 1)} and np.isclose(g[0][1]["weight"], 0.5)
    g2 = merge.part_graph([parts], [masks], 3, section("merge", weight_cooccur=0.0, weight_adjacent=1.0))
    # horizontal pairs (0,1), (0,2); vertical pair (1,2): 3 adjacencies, each counted both ways -> 1/6 each
    assert set(g2.edges()) == {(0, 1), (0, 2), (1, 2)} and np.isclose(g2[1][2]["weight"], 1 / 6)


def test_louvain_finds_two_cliques_joined_by_a_weak_edge():
    import networkx as nx
    g = nx.Graph()
    for a, b in [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5)]:
        g.add_edge(a, b, weight=1.0)
    g.add_edge(2, 3, weight=0.01)
    comm = merge.communities(g, 1.0, seed=0)
    assert comm[0] == comm[1] == comm[2] != comm[3] == comm[4] == comm[5]


def test_community_class_is_the_majority_and_masks_relabel_on_agreement():
    cls = merge.community_classes(np.array([0, 0, 0, 1, 1]), np.array([2, 2, 1, 3, 3]), 2)
    assert cls.tolist() == [2, 3]
    new = merge.relabel_masks([np.array([3, 3, 2]), np.array([3, 2]), np.array([], int)], np.array([2, 2, 1]), 0.6)
    assert new.tolist() == [3, 2, 1]


def test_overcluster_gives_part_ids_in_range():
    x = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    parts = merge.overcluster(x, 7, seed=0)
    assert parts.shape == (200,) and parts.min() == 0 and parts.max() == 6


def three_blobs() -> tuple[np.ndarray, np.ndarray]:
    """150 features (D = 8) in three tight blobs around orthogonal directions, in random order, each point at its
    own length (overcluster compares directions) -> (features, blob of each point)."""
    rng = np.random.default_rng(0)
    blob = rng.permutation(np.arange(150) % 3)
    x = np.eye(8)[blob] + rng.normal(0, 0.02, (150, 8))
    return (x * rng.uniform(0.5, 5.0, (150, 1))).astype(np.float32), blob


def test_overcluster_puts_each_tight_blob_in_one_part_and_blobs_in_different_parts():
    x, blob = three_blobs()
    parts = merge.overcluster(x, 3, seed=0)
    ids = [set(parts[blob == b].tolist()) for b in range(3)]
    assert all(len(i) == 1 for i in ids), ids  # every blob's points share one part id
    assert len(set.union(*ids)) == 3  # and the three blobs get three different ids


def test_overclustering_splits_blobs_but_never_mixes_two_in_one_part():
    x, blob = three_blobs()
    parts = merge.overcluster(x, 6, seed=0)
    assert len(set(parts.tolist())) == 6
    for part in set(parts.tolist()):
        assert len(set(blob[parts == part].tolist())) == 1, part  # each part inside one blob


def test_mask_grid_keeps_patches_a_kept_mask_covers_most_and_at_least_half():
    frac = np.array([[[0.9, 0.4, 0.0], [0.5, 0.0, 0.0]],    # mask 0 (kept, global index 7)
                     [[0.1, 0.45, 0.0], [0.0, 1.0, 0.6]]],  # mask 1 (dropped, global index 8)
                    np.float32)
    grid = merge.mask_grid(frac, np.array([7, 8]), np.array([True, False]))
    # (0,0) and (1,0): mask 0 holds the most and >= 0.5 -> 7 + 1; (0,1): nobody reaches half; mask 1 is dropped
    assert grid.tolist() == [[8, 0, 0], [8, 0, 0]]
    assert merge.mask_grid(np.zeros((0, 2, 3), np.float32), np.zeros(0, np.int64), np.zeros(0, bool)).tolist() == [[0] * 3] * 2


def test_per_mask_groups_patch_values_by_mask_in_patch_order():
    groups = merge.per_mask(np.array([5, 6, 7, 8]), np.array([2, 0, 2, 0]), 4)
    assert [g.tolist() for g in groups] == [[6, 8], [], [5, 7], []]
    assert merge.per_mask(np.zeros(0, np.int64), np.zeros(0, np.int64), 0) == []


def test_refine_moves_a_mask_to_the_class_of_the_masks_whose_parts_it_shares():
    # Two images, each with masks of two looks (features A and B) side by side. Masks 0, 2 look like A and
    # have class 1; mask 1 looks like B with class 2; mask 3 looks like A but was clustered as class 2.
    rng = np.random.default_rng(0)
    a, b = np.eye(8)[0] * 10, np.eye(8)[1] * 10
    g0 = np.array([[1, 1, 2, 2], [1, 1, 2, 2]])  # masks 0 (left) and 1 (right)
    g1 = np.array([[3, 3, 4, 4], [3, 3, 4, 4]])  # masks 2 and 3
    feats = np.concatenate([np.stack([a if m in (1, 3, 4) else b for m in g.ravel()]) for g in (g0, g1)])
    feats = feats + rng.normal(0, 0.1, feats.shape)
    mask_of_patch = np.concatenate([g0.ravel(), g1.ravel()]) - 1
    cfg = section("merge", parts=2, resolution=1.0, min_agreement=0.5, weight_cooccur=1.0, weight_adjacent=0.0)
    res = merge.refine(feats, [g0, g1], mask_of_patch, np.array([1, 2, 1, 2]), cfg, seed=0)
    assert res.n_parts == 2 and res.part_community[0] != res.part_community[1]  # A parts and B parts apart
    assert res.new_class.tolist() == [1, 2, 1, 1]
    assert res.mask_community_share.tolist() == [1.0, 1.0, 1.0, 1.0]
    assert res.mask_community[0] == res.mask_community[2] == res.mask_community[3] != res.mask_community[1]
