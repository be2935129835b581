import numpy as np
import pytest
import torch

from conftest import raw_params, run_prepare, section, tiny_backbone, write_params
from pipeline import io
from pipeline.backbone import factory as bb
from pipeline.config import ConfigError, parse_params
from pipeline.method import cluster, embed, labelmaps, proposals
from pipeline.method.vectors import unit_rows


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


def blobs(n_blobs: int, per: int = 15, dim: int = 12, spread: float = 0.15, seed: int = 0) -> np.ndarray:
    """`n_blobs` tight groups of unit vectors around orthogonal directions: (n_blobs * per, dim) float32."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(np.eye(dim)[i] * 3, spread, (per, dim)) for i in range(n_blobs)])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("rule", ["davies_bouldin", "silhouette", "eigengap"])
@pytest.mark.parametrize("n_blobs", [3, 5])
def test_auto_k_finds_the_number_of_separated_blobs(rule, n_blobs):
    cfg = section("cluster", k="auto", k_rule=rule, k_min=2, k_max=8, n_init=3)
    k, scores = cluster.choose_k(blobs(n_blobs), cfg, seed=0)
    assert k == n_blobs and sorted(scores) == list(range(2, 9))
    assert scores[k] == max(scores.values())


def test_eigengap_counts_the_zero_eigenvalues_of_disconnected_groups_and_can_choose_one():
    ev = cluster.eigengaps(blobs(4), 10, 6)  # 4 groups, 15 points each, 10 neighbours: 4 components
    np.testing.assert_allclose(ev[:4], 0, atol=1e-6)
    assert ev[4] > 0.1
    cfg = section("cluster", k="auto", k_rule="eigengap", k_min=1, k_max=6)
    assert cluster.choose_k(blobs(1, per=40), cfg, 0)[0] == 1  # one group: the first gap (lambda_2 - 0) is the largest
    assert cluster.choose_k(blobs(4), cfg, 0)[0] == 4


def test_auto_k_with_too_few_masks_is_a_clear_error():
    cfg = section("cluster", k="auto", k_min=3, k_max=8)
    with pytest.raises(cluster.ClusterError, match=r"'cluster\.k' is auto but only 3 masks.*k_min = 3 needs at least 4"):
        cluster.choose_k(blobs(3, per=1), cfg, 0)
    assert max(cluster.choose_k(blobs(3, per=2), cfg, 0)[1]) == 5  # k_max clipped to the masks - 1


def test_render_labels_maps_each_mask_to_its_class_and_keeps_background():
    mask_map = np.array([[0, 1, 2], [2, 0, 1]], np.uint8)
    out = labelmaps.render_labels(mask_map, np.array([3, 255], np.uint8))
    assert out.tolist() == [[0, 3, 255], [255, 0, 3]]


# ---------------------------------------------------------------- crop embeddings (cluster.embedding crop_cls)

def test_crop_box_grows_by_the_margin_and_clips_at_the_image_border():
    mask = np.zeros((10, 12), bool)
    mask[2:6, 1:9] = True  # box rows 2..5 (h 4), cols 1..8 (w 8)
    assert embed.crop_box(mask, 0.0) == (2, 1, 6, 9)
    assert embed.crop_box(mask, 0.25) == (1, 0, 7, 11)  # 1 row, 2 columns each side; the left one clipped at 0
    corner = np.zeros((10, 12), bool)
    corner[7:10, 9:12] = True  # h 3, w 3 in the bottom-right corner
    assert embed.crop_box(corner, 0.5) == (5, 7, 10, 12)  # int(1.5 + 0.5) = 2 each side, clipped at 10 and 12


def test_grey_background_replaces_exactly_the_outside_mask_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    mask = np.zeros((10, 12), bool)
    mask[3:7, 2:5] = True
    mask[4, 5] = True
    box = (2, 1, 8, 7)
    inside = mask[2:8, 1:7]
    expected = image[2:8, 1:7].astype(np.float32) / 255
    assert np.array_equal(embed.cut(image, mask, box, "keep"), expected)
    grey = embed.cut(image, mask, box, "grey")
    assert np.array_equal(grey[inside], expected[inside])
    assert np.array_equal(grey[~inside], np.tile(np.float32(bb.MEAN), ((~inside).sum(), 1)))


def test_whitened_embeddings_have_identity_covariance_then_unit_norm():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)) @ rng.normal(size=(8, 8)) + 3.0  # correlated, off-centre
    w = embed.whiten(x, 5, seed=0)
    assert w.shape == (50, 5)
    assert np.allclose(w.mean(0), 0, atol=1e-5)
    assert np.allclose(np.cov(w, rowvar=False), np.eye(5), atol=1e-4)
    assert np.allclose(np.linalg.norm(unit_rows(w), axis=1), 1, atol=1e-6)
    assert embed.whiten(x[:4], 64, seed=0).shape == (4, 3)  # capped at masks - 1 (and at D)
    assert np.array_equal(embed.whiten(x, 0, seed=0), x.astype(np.float32))  # 0 = no whitening


def toy_masks(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """n grey 48 x 56 images, each with a red square (kind 0) or a green disc (kind 1) of random size and place
    -> images, mask maps (the object is mask 1), kinds (n,)."""
    rng = np.random.default_rng(seed)
    images, maps, kinds = [], [], np.arange(n) % 2
    yy, xx = np.mgrid[:48, :56]
    for kind in kinds:
        r = int(rng.integers(6, 12))
        cy, cx = int(rng.integers(r, 48 - r)), int(rng.integers(r, 56 - r))
        obj = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r) if kind == 0 else (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        image = np.full((48, 56, 3), 128, np.uint8) + rng.integers(0, 20, (48, 56, 3), dtype=np.uint8)
        image[obj] = (200, 30, 30) if kind == 0 else (30, 200, 30)
        images.append(image)
        maps.append(obj.astype(np.uint8))
    return images, maps, kinds


@pytest.mark.parametrize("token", ["cls", "mean"])
def test_crop_features_have_the_backbone_width_and_batching_does_not_change_them(token):
    model = tiny_backbone()  # patch 8, width 32
    images, maps, _ = toy_masks(5)
    two = maps[0].copy()
    two[:6, :6] = 2  # a second mask in the first image
    maps[0] = two

    def crops():
        for image, m in zip(images, maps):
            yield from embed.mask_crops(image, m, range(1, int(m.max()) + 1), 32, 0.1, "grey")
    whole = embed.crop_features(model, crops(), 64, torch.device("cpu"), token)
    assert whole.shape == (6, 32) and whole.dtype == np.float32
    for bs in (1, 4):
        assert np.allclose(embed.crop_features(model, crops(), bs, torch.device("cpu"), token), whole, atol=1e-5)
    one = next(embed.mask_crops(images[1], maps[1], [1], 32, 0.1, "grey"))
    tokens = model.forward_features(bb.normalize(one[None]))
    direct = tokens[0, 0] if token == "cls" else tokens[0, model.num_prefix_tokens:].mean(0)
    assert np.allclose(whole[2], direct.detach().numpy(), atol=1e-5)


@pytest.mark.parametrize("background", ["keep", "grey"])
def test_crop_cls_separates_two_obviously_different_mask_kinds(background):
    model = tiny_backbone()
    images, maps, kinds = toy_masks(24)
    crops = (c for image, m in zip(images, maps) for c in embed.mask_crops(image, m, [1], 32, 0.1, background))
    # whitened to 2 dims: the kind and one more; with 4 of 24 masks' dims whitening lifts noise to the kind's
    # variance and k-means splits 22 of 24 right (measured), a reason to keep whiten_dim well below the mask count
    emb = unit_rows(embed.whiten(embed.crop_features(model, crops, 8, torch.device("cpu"), "cls"), 2, 0))
    labels, _, _ = cluster.cluster_embeddings(emb, section("cluster", k=2), seed=0)
    assert len(set(labels[kinds == 0])) == 1 and len(set(labels[kinds == 1])) == 1 and labels[0] != labels[1]


def test_crop_size_must_be_a_multiple_of_the_patch_when_crop_cls_is_on():
    raw = raw_params()
    raw["cluster"].update(embedding="crop_cls", crop_size=60)
    with pytest.raises(ConfigError, match=r"'cluster\.crop_size' is 60; must be a multiple of the backbone's patch "
                                          r"size 8 when cluster\.embedding is crop_cls, e\.g\. 56"):
        parse_params(raw)
    raw["cluster"]["embedding"] = "tokens"  # unused: no check
    assert parse_params(raw).cluster.crop_size == 60
    with pytest.raises(ValueError, match=r"'cluster\.crop_size' is 60; must be a multiple of the backbone's patch "
                                         r"size 8, e\.g\. 56"):
        embed.check_crop_size(tiny_backbone(), 60)  # a backbone whose patch size params.yaml does not tell


def test_cluster_stage_tokens_are_the_pooled_tokens_and_crop_cls_feeds_the_filter(tmp_path, monkeypatch):
    from stages import cluster as cluster_stage
    from stages import distill, features, filter, pretrain
    from stages import proposals as proposals_stage

    tiny = {"source": "random", "overrides": {"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}}
    sections = dict(data={"synth_images": 10, "synth_eval_images": 0, "image_size": 64}, backbone=tiny,
                    proposals={"sources": ["ncut"], "refine": "none", "min_score": 0.0}, cluster={"k": 2, "n_init": 2},
                    filter={"folds": 2})
    run_prepare(tmp_path, monkeypatch, **sections)
    for stage in (pretrain, features, proposals_stage, distill, cluster_stage):
        stage.main()
    table = io.read_json(tmp_path / "data/05_distill/proposals.json")
    names, tokens = io.read_shards(tmp_path / "data/03_features", "tokens")
    expected = np.concatenate([cluster.mask_embeddings(t, proposals.patch_fractions(
        io.read_label(tmp_path / f"data/05_distill/masks/{n}.png"), len(table[n]), t.shape[:2]))
        for n, t in zip(names, tokens) if table[n]])
    assert np.array_equal(io.read_npz(tmp_path / "data/06_cluster/embeddings.npz")["embeddings"], expected)

    write_params(tmp_path, **{**sections, "cluster": {"k": 2, "n_init": 2, "embedding": "crop_cls", "whiten_dim": 4}})
    cluster_stage.main()
    emb = io.read_npz(tmp_path / "data/06_cluster/embeddings.npz")["embeddings"]
    assert emb.shape == (len(expected), min(4, len(expected) - 1))
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    filter.main()
    assert len(io.read_json(tmp_path / "data/08_filter/filter.json")["masks"]) == len(expected)


def test_unit_rows_scale_each_row_to_length_one_and_keep_zero_rows_and_the_dtype():
    x = np.array([[3, 4, 0], [0, 0, 0], [1e-3, 0, 0]], np.float32)
    got = unit_rows(x)
    assert got.dtype == np.float32 and got.tolist() == [[0.6000000238418579, 0.800000011920929, 0], [0, 0, 0], [1, 0, 0]]
    rows = np.random.default_rng(0).normal(size=(50, 7))
    np.testing.assert_array_equal(unit_rows(rows), rows / np.linalg.norm(rows, axis=1, keepdims=True))  # bit for bit
