import numpy as np

from pipeline import merge
from pipeline.config import MergeConfig


def test_part_graph_counts_cooccurrence_and_adjacency():
    parts = np.array([[0, 1, -1], [0, 2, -1]])
    masks = np.array([[1, 1, 0], [1, 2, 0]])
    g = merge.part_graph([parts], [masks], 3, MergeConfig(weight_cooccur=1.0, weight_adjacent=0.0))
    # mask 1 holds parts {0, 1}: one co-occurrence pair (counted both ways, normalised to 1 over the matrix)
    assert set(g.edges()) == {(0, 1)} and np.isclose(g[0][1]["weight"], 0.5)
    g2 = merge.part_graph([parts], [masks], 3, MergeConfig(weight_cooccur=0.0, weight_adjacent=1.0))
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
