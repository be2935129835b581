"""cluster.mode dense (pipeline/method/dense.py): every patch clustered, the pseudo-labels the cluster maps
upsampled and CRF-refined; the mode switch's checks."""
import numpy as np
import pytest

from conftest import raw_params, section
from pipeline import io
from pipeline.config import ConfigError, parse_params
from pipeline.method import dense


def two_region_set(root, n=3, side=32, patch=8, dim=16):
    """n images, left half dark red, right half light blue, and token grids whose left and right patches hold two
    different vectors plus noise -> (prepare folder, features folder, left-half mask (side, side))."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=dim), rng.normal(size=dim)
    image = np.zeros((side, side, 3), np.uint8)
    image[:, :side // 2] = (150, 20, 20)
    image[:, side // 2:] = (60, 160, 230)
    g = side // patch
    writer = io.ShardWriter(root / "features", 2)
    for i in range(n):
        io.write_image(root / "prepare" / "images" / f"im{i}.png", image)
        tok = np.where(np.arange(g)[None, :, None] < g // 2, a, b) + 0.1 * rng.normal(size=(g, g, dim))
        writer.add(f"im{i}", {"tokens": tok.astype(np.float16)})
    writer.close()
    left = np.zeros((side, side), bool)
    left[:, :side // 2] = True
    return root / "prepare", root / "features", left


@pytest.mark.parametrize("features", ["tokens", "tokens_colour", "stego"])
@pytest.mark.parametrize("crf", [True, False])
def test_dense_pseudolabels_of_a_two_region_image_are_the_two_regions(tmp_path, features, crf):
    prepare, feats, left = two_region_set(tmp_path)
    cfg = section("cluster", mode="dense", k=2, dense_features=features, n_init=2, fit_sample=100, stego_steps=20,
                  stego_batch=2, stego_samples=3, stego_knn=1)
    res = dense.cluster_dense(feats, prepare, tmp_path / "cluster", cfg, 2, seed=0, per_class=2)
    assert sorted(res.sizes) == [24, 24]  # 3 images x 16 patches, half each
    names = ["im0", "im1", "im2"]
    dense.write_labels(prepare, tmp_path / "cluster", tmp_path / "pseudo", names, section("crf") if crf else None, 1)
    for name in names:
        lab = io.read_label(tmp_path / "pseudo" / "labels" / f"{name}.png")
        assert lab.shape == left.shape
        assert len(np.unique(lab[left])) == 1 and len(np.unique(lab[~left])) == 1
        assert {int(lab[left][0]), int(lab[~left][0])} == {1, 2}  # classes 1..k, no background 0
        assert (tmp_path / "pseudo" / "overlays" / f"{name}.jpg").is_file()
    assert res.top_images[0] and dense.class_gallery(prepare, tmp_path / "cluster", res.top_images, 2).ndim == 3


def test_patch_colours_are_patch_means():
    image = np.zeros((4, 4, 3), np.uint8)
    image[0, 0] = (255, 0, 0)  # one pixel of the top-left 2 x 2 patch
    out = dense.patch_colours(image, (2, 2))
    assert out.shape == (2, 2, 3) and out[0, 0].tolist() == [0.25, 0, 0] and out[1, 1].tolist() == [0, 0, 0]


def test_probabilities_are_a_softmax_of_alpha_times_cosine():
    centres = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    p = dense.probabilities(np.array([[2.0, 0.0]], np.float32), centres, (1, 1), alpha=2.0)
    want = np.exp([2.0, 0.0]) / np.exp([2.0, 0.0]).sum()
    assert p.shape == (2, 1, 1) and np.allclose(p[:, 0, 0], want)


def dense_params(**sections):
    raw = raw_params()
    raw["cluster"]["mode"] = "dense"
    raw["merge"]["method"] = "none"
    for name, values in sections.items():
        raw[name].update(values)
    return parse_params(raw)


def test_dense_mode_loads_with_merge_none():
    assert dense_params().cluster.mode == "dense"


@pytest.mark.parametrize("sections,key,value", [
    ({"distill": {"method": "maskrcnn"}}, "distill.method", "'maskrcnn'"),
    ({"distill": {"method": "maskrcnn"}, "filter": {"score": "detector"}}, "filter.score", "'detector'"),
    ({"merge": {"method": "leopart"}}, "merge.method", "'leopart'"),
    ({"merge": {"method": "majority"}}, "merge.method", "'majority'"),
    ({"cluster": {"k": "auto"}}, "cluster.k", "'auto'"),
    ({"cluster": {"method": "spectral"}}, "cluster.method", "'spectral'"),
])
def test_dense_mode_rejects_what_needs_masks_naming_both_keys(sections, key, value):
    with pytest.raises(ConfigError) as e:
        dense_params(**sections)
    assert f"'{key}' is {value}" in str(e.value) and "cluster.mode is 'dense'" in str(e.value)


def test_dense_stages_cluster_to_merge_in_process(tmp_path, monkeypatch):
    from conftest import write_params
    from stages import cluster, filter as filter_stage, merge, pseudolabels

    prepare, feats, left = two_region_set(tmp_path / "src")
    work = tmp_path / "work"
    names = ["im0", "im1", "im2"]
    for name in names:
        io.write_image(work / "data/01_prepare/images" / f"{name}.png", io.read_image(prepare / "images" / f"{name}.png"))
    io.write_json(work / "data/01_prepare/manifest.json", {"names": names, "eval_names": []})
    (work / "data").mkdir(exist_ok=True)
    feats.rename(work / "data/03_features")
    write_params(work, cluster={"mode": "dense", "k": 2, "n_init": 2, "fit_sample": 100}, merge={"method": "none"},
                 crf={"workers": 1})
    monkeypatch.chdir(work)
    for stage in (cluster, pseudolabels, filter_stage, merge):
        stage.main()
    info = io.read_json(work / "data/06_cluster/clusters.json")
    assert info["k"] == 2 and info["mode"] == "dense" and info["masks"] == [] and sorted(info["sizes"]) == [24, 24]
    assert io.cluster_k(work / "data/06_cluster") + 1 == 3  # the train stage's classes: 0 (never given), 1, 2
    assert (work / "data/06_cluster/gallery.png").is_file()
    for name in names:
        lab = io.read_label(work / "data/07_pseudolabels/labels" / f"{name}.png")
        assert {int(lab[left][0]), int(lab[~left][0])} == {1, 2} and len(np.unique(lab)) == 2
        for folder in ("08_filter", "09_merge"):  # passed on unchanged
            f = f"labels/{name}.png"
            assert (work / "data" / folder / f).read_bytes() == (work / "data/07_pseudolabels" / f).read_bytes()
    assert io.read_json(work / "data/09_merge/merge.json") == {"method": "none", "masks": []}
