import numpy as np
import pytest

from conftest import raw_params, section, write_params
from pipeline.config import ConfigError, parse_params
from pipeline.method import kmeans, leopart, merge


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


def fit_and_assign(x: np.ndarray, parts: int) -> np.ndarray:
    """Parts fitted on every row of x (seed 0), then every row assigned to its nearest part."""
    return merge.predict_parts(merge.fit_parts(x, parts, 0, "sklearn"), x)


def test_parts_fitted_on_the_rows_give_part_ids_in_range():
    x = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    parts = fit_and_assign(x, 7)
    assert parts.shape == (200,) and parts.min() == 0 and parts.max() == 6
    assert merge.predict_parts(merge.fit_parts(x, 7, 0, "sklearn"), x[:0]).tolist() == []  # an image without foreground


def three_blobs() -> tuple[np.ndarray, np.ndarray]:
    """150 features (D = 8) in three tight blobs around orthogonal directions, in random order, each point at its
    own length (the parts compare directions) -> (features, blob of each point)."""
    rng = np.random.default_rng(0)
    blob = rng.permutation(np.arange(150) % 3)
    x = np.eye(8)[blob] + rng.normal(0, 0.02, (150, 8))
    return (x * rng.uniform(0.5, 5.0, (150, 1))).astype(np.float32), blob


def test_parts_put_each_tight_blob_in_one_part_and_blobs_in_different_parts():
    x, blob = three_blobs()
    parts = fit_and_assign(x, 3)
    ids = [set(parts[blob == b].tolist()) for b in range(3)]
    assert all(len(i) == 1 for i in ids), ids  # every blob's points share one part id
    assert len(set.union(*ids)) == 3  # and the three blobs get three different ids


def test_overclustering_splits_blobs_but_never_mixes_two_in_one_part():
    x, blob = three_blobs()
    parts = fit_and_assign(x, 6)
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
    res = merge.refine(feats, [feats[:8], feats[8:]], [g0, g1], mask_of_patch, np.array([1, 2, 1, 2]), cfg,
                       0, "sklearn")
    assert res.n_parts == 2 and res.part_community[0] != res.part_community[1]  # A parts and B parts apart
    assert res.new_class.tolist() == [1, 2, 1, 1]
    assert res.mask_community_share.tolist() == [1.0, 1.0, 1.0, 1.0]
    assert res.mask_community[0] == res.mask_community[2] == res.mask_community[3] != res.mask_community[1]


# --- merge.method leopart (pipeline/method/leopart.py) ---

def test_cooccurrence_counts_pairs_at_distance_1_and_2_in_8_directions_hand_counted():
    part_map = np.array([[0, 0, 1, 1],
                         [0, 0, 1, 1],
                         [2, 2, -1, -1],
                         [2, 2, -1, -1]])
    # Ordered pairs (cell of a, cell of b at offset d * (dy, dx)), d in {1, 2}, 8 directions; the offsets from
    # block 0 to block 1 (rows 0-1, cols 2-3): (0, 1) x2, (0, 2) x4, (1, 1) x1, (-1, 1) x1 = 8 ((+-1, 2) and (0, 3)
    # are no offset); 0 to 2: the same by transposition = 8; 1 to 2: (1, -1) x1, (2, -2) x4 = 5. Pairs with -1
    # cells are not counted; a part next to itself is zeroed.
    counts = leopart.image_cooccurrence(part_map, 3)
    assert counts.tolist() == [[0, 8, 8], [8, 0, 5], [8, 5, 0]]
    second = np.full((4, 4), -1)
    second[0, :2] = [0, 1]  # one horizontal pair 0-1 (both ways)
    second[3, 3] = 3  # part 3 alone: nothing within distance 2 ((3, 2) and (3, 3) away are no offset), row stays 0
    assert leopart.image_cooccurrence(second, 4)[:2, :2].tolist() == [[0, 1], [1, 0]]
    # Leopart's order: per image row-normalised, summed, each row divided by the images where the part had a neighbour
    a = leopart.cooccurrence([np.where(part_map >= 0, part_map, -1), second], 4)
    expected = np.array([[0, (0.5 + 1) / 2, 0.5 / 2, 0],
                         [(8 / 13 + 1) / 2, 0, 5 / 13 / 2, 0],
                         [8 / 13, 5 / 13, 0, 0],
                         [0, 0, 0, 0]])
    np.testing.assert_allclose(a, expected)


def test_part_graph_keeps_edges_above_the_threshold_both_ways_with_the_smaller_weight():
    a = np.array([[0, 0.5, 0.05], [0.3, 0, 0.5], [0.2, 0.6, 0]])
    g = leopart.part_graph(a, 0.1)
    assert sorted(g.edges(data="weight")) == [(0, 1, 0.3), (1, 2, 0.5)] and g.number_of_nodes() == 3


def two_blocks():
    """Two 4-cliques joined by one weak edge, and node 8 without an edge."""
    import networkx as nx
    g = nx.Graph()
    g.add_nodes_from(range(9))
    for block in ((0, 1, 2, 3), (4, 5, 6, 7)):
        g.add_weighted_edges_from((i, j, 1.0) for i in block for j in block if i < j)
    g.add_edge(3, 4, weight=0.05)
    return g


def test_infomap_finds_the_two_blocks_and_leaves_a_node_without_edges_out():
    for preferred in (None, 2):
        m = leopart.infomap_modules(two_blocks(), 1.0, 5, seed=0, preferred=preferred)
        assert len(set(m[:4])) == 1 and len(set(m[4:8])) == 1 and m[0] != m[4] and m[8] == -1, (preferred, m)


def test_louvain_finds_the_two_blocks_too():
    m = leopart.louvain_modules(two_blocks(), 1.0, 3, seed=0)
    assert len(set(m[:4])) == 1 and len(set(m[4:8])) == 1 and m[0] != m[4] and m[8] == -1, m


def test_communities_are_ordered_by_size_and_extra_ones_fold_into_the_most_similar_kept_one():
    # modules of 5 parts: {0, 1}, {2}, {3}; part 4 has no edge -> a community of its own
    comm = leopart.order_communities(np.array([7, 7, 2, 5, -1]), size=np.array([1, 1, 10, 3, 4]))
    assert comm.tolist() == [3, 3, 0, 2, 1]  # by patches: {2}: 10, {4}: 4, {3}: 3, {0, 1}: 2
    assert leopart.order_communities(np.array([0, 1, 1, 0]), np.ones(4)).tolist() == [0, 1, 1, 0]  # tie: node 0 first
    e = np.eye(3)
    part_sum = np.stack([e[0] + 0.1 * e[2], e[0], e[1], e[1] * 2 + 0.2 * e[0], e[0] * 3])
    # k = 2: communities 0 ({2}, along e1) and 1 ({4}, along e0) kept; 2 ({3}, mostly e1) joins 0, 3 ({0, 1}) joins 1
    assert leopart.fold(comm, part_sum, 2).tolist() == [0, 1, 0, 1]
    assert leopart.fold(comm, part_sum, 4).tolist() == [0, 1, 2, 3]  # no more communities than classes: none folds


def test_pixel_labels_take_each_patch_class_inside_its_own_mask():
    mask_map = np.zeros((4, 6), np.uint8)  # a 2 x 3 grid of 2 x 2 px patches
    mask_map[:, :4] = 1  # mask 1: the patches of columns 0 and 1 ...
    mask_map[0, 4] = 1  # ... and one pixel of patch (0, 2), whose foreground patch is mask 2's
    mask_map[1:, 4:] = mask_map[0, 5] = 2  # mask 2: the rest of column 2 but pixel (3, 5)
    mask_map[3, 5] = 0
    owner = np.array([[1, 1, 2], [1, 0, 0]])  # the mask whose foreground patch a cell is (0: no foreground patch)
    patch_class = np.array([[1, 2, 1], [2, 0, 0]])
    lab = leopart.pixel_labels(mask_map, owner, patch_class, np.array([3, 4], np.uint8))
    # own foreground patch -> its class; elsewhere -> the mask's class (mask 1: 3, mask 2: 4); background 0
    assert lab.tolist() == [[1, 1, 2, 2, 3, 1], [1, 1, 2, 2, 1, 1],
                            [2, 2, 3, 3, 4, 4], [2, 2, 3, 3, 4, 0]]
    ignored = leopart.pixel_labels(mask_map, owner * (owner == 1), patch_class, np.array([3, 255], np.uint8))
    assert (ignored[mask_map == 2] == 255).all()  # a dropped mask (no foreground patches) stays ignored


def toy_looks(seed: int = 0):
    """Six images on a 4 x 6 patch grid (D = 8), one mask each at rows 1-2, columns 1-4, whose columns alternate
    two looks of its kind: kind A (images 0, 1) looks e0 / e1, kind B (2, 3) e2 / e3, kind C (4, 5) e4 / e5.
    -> (features of the foreground patches in image then row-major order, mask grids, mask index of each patch)."""
    rng = np.random.default_rng(seed)
    grids, feats, mask_of_patch = [], [], []
    for i in range(6):
        g = np.zeros((4, 6), np.int64)
        g[1:3, 1:5] = i + 1
        look = (2 * (i // 2) + (np.arange(6) + 1) % 2)[None].repeat(4, 0)  # column 1 -> first look, 2 -> second, ...
        feats.append(np.eye(8)[look[g > 0]] + rng.normal(0, 0.02, (8, 8)))
        grids.append(g)
        mask_of_patch += [i] * 8
    return np.concatenate(feats).astype(np.float32), grids, np.array(mask_of_patch)


def images_of(feats: np.ndarray) -> list[np.ndarray]:
    """toy_looks' foreground features (8 per image), image by image."""
    return [feats[8 * i:8 * (i + 1)] for i in range(len(feats) // 8)]


def test_leopart_splits_a_kmeans_class_that_holds_two_kinds():
    feats, grids, mask_of_patch = toy_looks()
    mask_cluster = np.array([0, 0, 0, 0, 1, 1])  # k-means put kinds A and B together in class 0, C in class 1
    for algorithm in ("infomap", "louvain"):
        cfg = section("merge", method="leopart", parts=6, pca_dim=8, edge_threshold=0.02, algorithm=algorithm)
        res, _ = leopart.communities_as_classes(feats, images_of(feats), grids, cfg, k=3, seed=0, backend="sklearn")
        assert res.n_parts == 6 and res.communities_found == 3 and res.communities_kept == 3, algorithm
        cls, share, split, by_cluster = leopart.mask_classes(res.class_of_patch, mask_of_patch, mask_cluster, 3)
        assert cls[0] == cls[1] != cls[2] == cls[3] != cls[4] == cls[5] != cls[0], (algorithm, cls)
        assert share.tolist() == [1.0] * 6 and not split.any()
        assert sorted(by_cluster[0].tolist()) == [0, 16, 16] and sorted(by_cluster[1].tolist()) == [0, 0, 16]


def test_leopart_folds_communities_beyond_k_and_keeps_the_largest():
    feats, grids, mask_of_patch = toy_looks()
    feats = np.concatenate([feats, feats[:16] * 1.0])  # kind A twice as common: images 6 and 7 copy images 0 and 1
    grids = grids + [np.where(g > 0, g + 6, 0) for g in grids[:2]]
    # Louvain: Infomap is told cluster.k as its preferred number of modules (as Leopart) and then joins two kinds
    cfg = section("merge", method="leopart", parts=6, pca_dim=8, edge_threshold=0.02, algorithm="louvain")
    res, _ = leopart.communities_as_classes(feats, images_of(feats), grids, cfg, k=2, seed=0, backend="sklearn")
    assert res.communities_found == 3 and res.communities_kept == 2
    assert res.community_patches.tolist() == [32, 16, 16] and res.community_kept[:2].tolist() == [0, 1]
    cls = res.class_of_patch
    assert set(cls[:16]) == {1} and set(cls.tolist()) == {1, 2}  # kind A is the largest community: class 1


def test_leopart_with_no_foreground_patch_finds_nothing():
    res, model = leopart.communities_as_classes(np.zeros((0, 8), np.float32), [np.zeros((0, 8), np.float32)],
                                                [np.zeros((2, 2), np.int64)], section("merge", method="leopart"), k=2,
                                                seed=0, backend="sklearn")
    assert res.n_parts == 0 and res.communities_found == 0 and res.class_of_patch.tolist() == [] and model is None
    assert res.class_means().shape[0] == 0


@pytest.mark.parametrize("key,value,pattern", [
    ("method", "infomap", r"'merge\.method' is 'infomap'; allowed values: majority, leopart"),
    ("algorithm", "leiden", r"'merge\.algorithm' is 'leiden'; allowed values: infomap, louvain"),
    ("edge_threshold", 1.0, r"'merge\.edge_threshold' is 1\.0; must be in \[0, 1\)"),
    ("markov_time", 0.0, r"'merge\.markov_time' is 0\.0; must be > 0"),
    ("trials", 0, r"'merge\.trials' is 0; must be >= 1"),
    ("pca_dim", 1, r"'merge\.pca_dim' is 1; must be >= 2"),
])
def test_bad_leopart_params_name_the_key_and_what_is_allowed(key, value, pattern):
    raw = raw_params()
    raw["merge"][key] = value
    with pytest.raises(ConfigError, match=pattern):
        parse_params(raw)


def test_leopart_needs_more_parts_than_classes():
    raw = raw_params()
    raw["merge"].update(method="leopart", parts=4)
    raw["cluster"]["k"] = 4
    pattern = r"'merge\.parts' is 4; must be > cluster\.k = 4 when merge\.method is leopart"
    with pytest.raises(ConfigError, match=pattern):
        parse_params(raw)
    raw["merge"]["method"] = "majority"  # majority has no such rule
    assert parse_params(raw).merge.parts == 4


def toy_stage_inputs(work, method: str) -> list[str]:
    """The merge stage's inputs for the toy_looks images (8 px patches: 32 x 48 px images): prepared images,
    features, proposals (mask 1 the toy mask; image 5 also has mask 2 on patch (0, 0), dropped by the filter),
    filter.json with kinds A and B in k-means class 0 and C in class 1; params with cluster.k 3."""
    from pipeline import io
    feats, grids, _ = toy_looks()
    rng, names, records, start = np.random.default_rng(1), [f"toy_{i}" for i in range(6)], [], 0
    writer = io.ShardWriter(work / "data/03_features", 512)
    for i, (name, g) in enumerate(zip(names, grids)):
        tokens = rng.normal(0, 0.02, (4, 6, 8)).astype(np.float32)
        tokens[g > 0] = feats[start:start + 8]
        start += 8
        writer.add(name, {"tokens": tokens.astype(np.float16)})
        io.write_image(work / "data/01_prepare/images" / f"{name}.png", rng.integers(0, 255, (32, 48, 3), np.uint8))
        mask_map = np.kron(g > 0, np.ones((8, 8), np.uint8)).astype(np.uint8)
        records.append({"image": name, "mask": 1, "cluster": int(i >= 4), "kept": True})
        if i == 5:
            mask_map[:8, :8] = 2
            records.append({"image": name, "mask": 2, "cluster": 1, "kept": False})
        io.write_label(work / "data/05_distill/masks" / f"{name}.png", mask_map)
    writer.close()
    io.write_json(work / "data/08_filter/filter.json", {"masks": records})
    io.write_json(work / "data/06_cluster/clusters.json", {"k": 3, "masks": records})  # the k later stages use
    write_params(work, cluster={"k": 3}, merge={"method": method, "parts": 6, "pca_dim": 8})
    return names


def test_merge_stage_majority_writes_one_class_per_mask(tmp_path, monkeypatch):
    from pipeline import io
    from pipeline.method.labelmaps import render_labels
    from stages import merge as stage
    names = toy_stage_inputs(tmp_path, "majority")
    monkeypatch.chdir(tmp_path)
    stage.main()
    info = io.read_json(tmp_path / "data/09_merge/merge.json")
    assert "method" not in info and set(info) == {"parts", "communities", "community_class", "masks_relabelled",
                                                  "part_community", "masks"}  # merge.json without leopart's keys
    assert (tmp_path / "data/09_merge/graph.png").exists()
    for name in names:
        recs = [r for r in info["masks"] if r["image"] == name]
        classes = np.array([r["merged_class"] if r["kept"] else 255 for r in recs], np.uint8)
        mask_map = io.read_label(tmp_path / "data/05_distill/masks" / f"{name}.png")
        written = io.read_label(tmp_path / "data/09_merge/labels" / f"{name}.png")
        assert (written == render_labels(mask_map, classes)).all()


def test_merge_stage_leopart_gives_the_two_kinds_of_one_kmeans_class_two_classes(tmp_path, monkeypatch):
    from pipeline import io
    from stages import merge as stage
    names = toy_stage_inputs(tmp_path, "leopart")
    monkeypatch.chdir(tmp_path)
    stage.main()
    info = io.read_json(tmp_path / "data/09_merge/merge.json")
    assert info["method"] == "leopart" and info["communities_found"] == 3 and info["communities_kept"] == 3
    assert (tmp_path / "data/09_merge/communities.png").exists()
    labels = [io.read_label(tmp_path / "data/09_merge/labels" / f"{n}.png") for n in names]
    inside = [np.unique(lab[8:24, 8:40]).tolist() for lab in labels]  # the toy mask: one class each
    assert all(len(v) == 1 for v in inside), inside
    a, b, c = inside[0][0], inside[2][0], inside[4][0]
    assert inside[1][0] == a != b == inside[3][0] != c == inside[5][0] != a  # A and B (k-means class 0) split
    assert (labels[5][:8, :8] == 255).all() and (labels[0][:8] == 0).all()  # dropped mask ignored, background 0


def test_foreground_holds_the_kept_masks_patches_and_finds_each_patchs_image_and_cell(tmp_path):
    from pipeline import io
    from pipeline.method import foreground
    names = toy_stage_inputs(tmp_path, "leopart")
    records = io.read_json(tmp_path / "data/08_filter/filter.json")["masks"]
    fg = foreground.select(tmp_path / "data/03_features", tmp_path / "data/05_distill", records, 48, seed=0)
    assert fg.names == names and [r["index"] for r in records] == list(range(7))
    assert fg.mask_of_patch.tolist() == [i for i in range(6) for _ in range(8)]  # mask 2 of image 5 is dropped
    assert fg.mask_grids[5][1:3, 1:5].tolist() == [[6] * 4] * 2 and fg.mask_grids[5].sum() == 48  # index 5 + 1
    assert fg.sample.complete and fg.sample.total == 48 and fg.starts.tolist() == [0, 8, 16, 24, 32, 40, 48]
    tokens = list(fg.tokens())
    assert [t.shape for t in tokens] == [(8, 8)] * 6
    np.testing.assert_array_equal(np.concatenate(tokens), fg.sample.rows())  # read again: the same tokens
    assert fg.locate(np.array([0, 9, 47])) == [(0, (1, 1)), (1, (1, 2)), (5, (2, 4))]  # row-major within an image
    assert [v.tolist() for v in fg.per_image(np.arange(48))][1] == list(range(8, 16))
    patch_class = np.repeat([1, 1, 2, 2, 3, 3], 8)
    items = list(fg.label_items(records, patch_class, np.array([1, 1, 2, 2, 3, 3, 255])))
    name, (owner, cls, mask_cls) = items[5]
    assert name == "toy_5" and owner[1:3, 1:5].tolist() == [[1] * 4] * 2 and owner.sum() == 8  # mask id 1 in toy_5
    assert cls[1:3, 1:5].tolist() == [[3] * 4] * 2 and (cls[owner == 0] == -1).all()
    assert mask_cls.tolist() == [3, 255] and mask_cls.dtype == np.uint8  # by mask id: 1, then the dropped 2


# ---------------------------------------------------------------- bounded memory (merge.max_tokens_in_memory)

def test_refine_on_the_whole_sample_assigns_image_by_image_and_a_small_sample_keeps_the_blobs_apart():
    """refine: parts fitted on a sample, tokens assigned image by image. With every token as the sample, each blob
    gets parts of its own (1, 3 and 2 of the 6); one mask per patch joins all parts in one community; with a
    30-token sample of the 150 the three blobs still get parts of their own."""
    x, blob = three_blobs()
    grids = [np.arange(1, 51).reshape(5, 10) + 50 * i for i in range(3)]  # 3 images, 50 patches, one mask per patch
    mask_of_patch = np.arange(150)
    cls = blob + 1
    cfg = section("merge", parts=6, min_agreement=0.5)
    got = merge.refine(x, (x[50 * i:50 * (i + 1)] for i in range(3)), grids, mask_of_patch, cls, cfg, 0, "sklearn")
    parts = np.concatenate([g.ravel() for g in got.part_grids])
    assert parts[:12].tolist() == [2, 1, 1, 3, 5, 5, 3, 2, 2, 1, 1, 1] and got.n_parts == 6
    assert {b: sorted(set(parts[blob == b].tolist())) for b in range(3)} == {0: [1], 1: [0, 3, 5], 2: [2, 4]}
    assert got.part_community.tolist() == [0] * 6 and got.community_class.tolist() == [1]
    assert got.new_class.tolist() == [1] * 150 and got.mask_community_share.tolist() == [1.0] * 150
    sample = kmeans.TokenSample(30, 0)
    for i in range(3):
        sample.add(x[50 * i:50 * (i + 1)])
    small = merge.refine(sample.rows(), (x[50 * i:50 * (i + 1)] for i in range(3)), grids, mask_of_patch, cls, cfg, 0,
                         "sklearn")
    parts = np.concatenate([g[g >= 0] for g in small.part_grids])
    assert all(len(set(blob[parts == q].tolist())) == 1 for q in set(parts.tolist()))  # no part mixes two blobs
    with pytest.raises(ValueError, match="149 foreground features for 150 patches"):
        merge.refine(x, [x[:149]], grids, mask_of_patch, cls, cfg, 0, "sklearn")


def test_leopart_on_the_whole_sample_assigns_image_by_image_and_a_small_sample_still_splits_the_kinds():
    feats, grids, mask_of_patch = toy_looks()
    cfg = section("merge", method="leopart", parts=6, pca_dim=8, edge_threshold=0.02, algorithm="louvain")
    images = images_of(feats)
    got, model = leopart.communities_as_classes(feats, images, grids, cfg, k=3, seed=0, backend="sklearn")
    assert model.n_parts == 6 and model.dim == 8
    assert got.part_of_patch.tolist() == [2, 5] * 8 + [0, 3] * 8 + [1, 4] * 8  # each column's look: a part
    assert got.class_of_patch.tolist() == [3] * 16 + [1] * 16 + [2] * 16
    assert got.community_kept.tolist() == [0, 1, 2] and got.part_community.tolist() == [0, 1, 2, 0, 1, 2]
    vectors = np.concatenate([model(f)[1] for f in images])
    want = np.zeros((6, 8))
    np.add.at(want, got.part_of_patch, vectors)
    np.testing.assert_array_equal(got.part_sum, want)  # each part's sum of its patches' unit vectors
    np.testing.assert_allclose(np.linalg.norm(got.part_sum, axis=1),
                               [7.36981, 7.32363, 7.43753, 6.96595, 6.76052, 7.08653], atol=1e-5)
    sample = kmeans.TokenSample(20, 0)
    for f in images:
        sample.add(f)
    small, _ = leopart.communities_as_classes(sample.rows(), images, grids, cfg, k=3, seed=0, backend="sklearn")
    cls, _, _, _ = leopart.mask_classes(small.class_of_patch, mask_of_patch, np.array([0, 0, 0, 0, 1, 1]), 3)
    assert cls[0] == cls[1] != cls[2] == cls[3] != cls[4] == cls[5] != cls[0], cls
    with pytest.raises(ValueError, match="40 foreground features for the 48 foreground cells"):
        leopart.communities_as_classes(feats, images[:5], grids, cfg, k=3, seed=0, backend="sklearn")


def test_projection_is_standardised_pca_to_unit_length():
    """fit_projection: StandardScaler, PCA (exact), Normalizer: the vectors are the standardised features' top
    principal components (up to the sign of each axis), each row scaled to unit length."""
    x = (np.random.default_rng(0).normal(size=(50, 6)) * [1, 2, 3, 4, 5, 0]).astype(np.float32)  # one constant column
    proj = leopart.fit_projection(x, 3)
    x64 = x.astype(np.float64)
    z = (x64 - x64.mean(0)) / np.where(x64.std(0) > 0, x64.std(0), 1)
    vals, vecs = np.linalg.eigh(z.T @ z / len(z))
    top = z @ vecs[:, ::-1][:, :3]
    want = top / np.linalg.norm(top, axis=1, keepdims=True)
    got = proj.transform(x64)
    np.testing.assert_allclose(np.abs(got), np.abs(want), atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-12)


def test_typical_patches_are_the_most_like_their_class_mean_one_per_image():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cls = rng.integers(1, 4, 40)
    x[7] = x[6]  # a tie inside an image: the first index wins
    means = np.stack([x[cls == c].mean(0) for c in (1, 2, 3)])
    got = leopart.typical_patches(((x[5 * i:5 * (i + 1)], cls[5 * i:5 * (i + 1)]) for i in range(8)), means, 3)
    assert [g.tolist() for g in got] == [[14, 9, 28], [25, 38, 12], [18, 21, 4]]
    for c, idx in enumerate(got, start=1):  # the formula: per image its best, then the best images
        score = x @ means[c - 1]
        best = [max(np.flatnonzero(cls[5 * i:5 * (i + 1)] == c) + 5 * i, key=lambda j: (score[j], -j), default=None)
                for i in range(8)]
        order = sorted((j for j in best if j is not None), key=lambda j: (-score[j], j))
        assert idx.tolist() == order[:3], c


def test_max_tokens_in_memory_must_hold_the_parts():
    raw = raw_params()
    raw["merge"].update(parts=60, max_tokens_in_memory=59)
    with pytest.raises(ConfigError, match=r"'merge\.max_tokens_in_memory' is 59; must be >= merge\.parts = 60"):
        parse_params(raw)


@pytest.mark.parametrize("method", ["majority", "leopart"])
def test_merge_stage_streaming_past_max_tokens_in_memory_writes_the_label_maps_of_the_in_memory_run(
        tmp_path, monkeypatch, method):
    """The toy's 48 foreground tokens with merge.max_tokens_in_memory 48 (all in memory) and 24 (parts fitted on a
    seeded sample of 24, every image's tokens assigned shard by shard): majority, the same label maps and classes,
    byte for byte; leopart, the same up to the names of its classes (its three equal communities are numbered by
    their parts, which a fit on another sample numbers differently)."""
    import yaml

    from pipeline import io
    from stages import merge as stage
    maps, classes = {}, {}
    for limit in (48, 24):
        work = tmp_path / str(limit)
        names = toy_stage_inputs(work, method)
        params = yaml.safe_load((work / "params.yaml").read_text())
        params["merge"].update(max_tokens_in_memory=limit, algorithm="louvain")
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        monkeypatch.chdir(work)
        stage.main()
        labels = work / "data/09_merge/labels"
        maps[limit] = [(labels / f"{n}.png").read_bytes() if method == "majority"
                       else io.read_label(labels / f"{n}.png") for n in names]
        classes[limit] = [r["merged_class"] for r in io.read_json(work / "data/09_merge/merge.json")["masks"]]
    if method == "majority":
        assert maps[48] == maps[24] and classes[48] == classes[24]
        return
    a, b = np.stack(maps[48]).ravel(), np.stack(maps[24]).ravel()
    rename = dict(set(zip(a.tolist(), b.tolist())))
    assert len(rename) == len(set(a.tolist())) == len(set(rename.values())) == 5  # a bijection: 0, 255 and 3 classes
    assert rename[0] == 0 and rename[255] == 255
    assert [rename[c] for c in classes[48]] == classes[24]
