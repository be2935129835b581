import os

import numpy as np
import pytest
from PIL import Image

from pipeline import io
from pipeline.io import shards


def test_label_png_is_indexed_with_the_project_palette_and_round_trips(tmp_path):
    lab = np.random.default_rng(0).integers(0, 6, (9, 7)).astype(np.uint8)
    lab[0, 0] = io.IGNORE
    io.write_label(tmp_path / "a.png", lab)
    with Image.open(tmp_path / "a.png") as img:
        assert img.mode == "P"
        assert img.getpalette()[3:6] == list(io.palette()[1])
    assert np.array_equal(io.read_label(tmp_path / "a.png"), lab)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary file left behind


def test_palette_is_voc_colours():
    pal = io.palette()
    assert pal[1].tolist() == [128, 0, 0] and pal[2].tolist() == [0, 128, 0] and pal[255].tolist() == [255, 255, 255]


def test_corrupt_image_error_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(io.InputError, match="broken.jpg: not a readable image"):
        io.read_image(bad)


def test_greyscale_and_rgba_images_read_as_rgb(tmp_path):
    Image.fromarray(np.full((4, 5), 77, np.uint8), "L").save(tmp_path / "g.png")
    Image.fromarray(np.full((4, 5, 4), 9, np.uint8), "RGBA").save(tmp_path / "a.png")
    assert io.read_image(tmp_path / "g.png").shape == (4, 5, 3)
    assert io.read_image(tmp_path / "a.png")[0, 0].tolist() == [9, 9, 9]


def test_shards_stream_and_read_back_in_order(tmp_path):
    w = io.ShardWriter(tmp_path, shard_size=2)
    arrays = [np.full((2, 2, 3), i, np.float16) for i in range(5)]
    for i, a in enumerate(arrays):
        w.add(f"img{i}", {"tokens": a})
    w.close()
    names, got = io.read_shards(tmp_path, "tokens")
    assert names == [f"img{i}" for i in range(5)]
    assert len(got) == 5 and all(g.dtype == np.float16 and np.array_equal(g, a) for g, a in zip(got, arrays))
    assert len(io.read_json(tmp_path / "index.json")["shards"]) == 3


def test_ragged_shards_round_trip_arrays_of_different_shapes_exactly(tmp_path):
    """Feature grids of images of different sizes: every array comes back with its own shape, dtype and values,
    in writing order, over several shards; iter_shards yields each shard's names with a list of its arrays."""
    rng = np.random.default_rng(0)
    grids = [(6, 10), (10, 6), (8, 8), (6, 10), (1, 3), (12, 7), (5, 5)]
    arrays = [{"tokens": rng.normal(size=(h, w, 4)).astype(np.float16),
               "keys": rng.normal(size=(h, w, 3)).astype(np.float16)} for h, w in grids]
    w = io.ShardWriter(tmp_path, shard_size=3)
    for i, a in enumerate(arrays):
        w.add(f"img{i}", a)
    w.close()
    index = io.read_json(tmp_path / "index.json")
    assert [s["names"] for s in index["shards"]] == [["img0", "img1", "img2"], ["img3", "img4", "img5"], ["img6"]]
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["shard_000.npz", "shard_001.npz", "shard_002.npz"]
    for key in ("tokens", "keys"):
        names, got = io.read_shards(tmp_path, key)
        assert names == [f"img{i}" for i in range(len(grids))]
        assert [g.shape for g in got] == [a[key].shape for a in arrays]
        for g, a in zip(got, arrays):
            assert g.dtype == np.float16 and np.array_equal(g, a[key])
    shards = list(io.iter_shards(tmp_path, "keys"))
    assert [n for n, _ in shards] == [s["names"] for s in index["shards"]]
    assert [len(a) for _, a in shards] == [3, 3, 1] and isinstance(shards[0][1], list)
    other = io.ShardWriter(tmp_path / "other", 2)
    other.add("a", {"tokens": arrays[0]["tokens"]})
    with pytest.raises(ValueError, match="keys"):  # every image needs the same keys
        other.add("b", {"keys": arrays[0]["keys"]})


def test_shard_arrays_read_the_named_images_a_shard_at_a_time(tmp_path, monkeypatch):
    """io.ShardArrays: the named images' arrays (a subset, any order) equal read_shards'; read in writing order,
    each shard is loaded once and only one is held; re-iterable; an image without features is an InputError."""
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(h, 4, 3)).astype(np.float16) for h in (2, 3, 2, 5, 1)]
    w = io.ShardWriter(tmp_path, shard_size=2)
    for i, a in enumerate(arrays):
        w.add(f"img{i}", {"tokens": a})
    w.close()
    loads = []
    real_load = np.load
    monkeypatch.setattr(shards.np, "load",
                        lambda path, *a, **k: loads.append(os.path.basename(path)) or real_load(path, *a, **k))
    lazy = io.ShardArrays(tmp_path, "tokens", ["img0", "img1", "img3", "img4"])
    assert len(lazy) == 4 and not loads  # nothing read yet
    for _ in range(2):  # re-iterable
        got = list(lazy)
        for g, i in zip(got, (0, 1, 3, 4)):
            assert g.dtype == np.float16 and np.array_equal(g, arrays[i])
    assert loads == ["shard_000.npz", "shard_001.npz", "shard_002.npz"] * 2
    assert len(lazy._arrays) == 1  # only the last shard's arrays are held (its one image)
    assert np.array_equal(lazy.get("img2"), arrays[2]) and np.array_equal(lazy[0], arrays[0])
    with pytest.raises(io.InputError, match="no 'tokens' array for 1 images"):
        io.ShardArrays(tmp_path, "tokens", ["img0", "nope"])


def test_original_sizes_and_eval_names_read_the_manifest(tmp_path):
    io.write_image(tmp_path / "images" / "a.png", np.zeros((16, 24, 3), np.uint8))
    io.write_image(tmp_path / "images" / "b.png", np.zeros((8, 8, 3), np.uint8))
    manifest = {"names": ["a", "b"], "eval_names": [], "sizes": {"a": [33, 50], "b": [8, 9]}}
    assert io.original_sizes(tmp_path, manifest, ["b", "a"]) == {"b": (8, 9), "a": (33, 50)}
    with pytest.raises(io.InputError, match=r"manifest\.json: no size for 1 images, e\.g\. \['c'\]"):
        io.original_sizes(tmp_path, manifest, ["a", "c"])
    assert io.eval_names(manifest) == [] and io.eval_names({"eval_names": ["c"]}) == ["c"]
    got = io.read_image_list(tmp_path, ["a", "b"])
    assert [g.shape for g in got] == [(16, 24, 3), (8, 8, 3)]
    with pytest.raises(ValueError, match="read_image_list"):
        io.read_images(tmp_path, ["a", "b"])


def test_a_failed_atomic_write_leaves_neither_the_file_nor_a_temporary(tmp_path):
    (tmp_path / "old.json").write_text("{}")
    with pytest.raises(RuntimeError):
        with io.atomic_open(tmp_path / "old.json") as f:
            f.write(b"half")
            raise RuntimeError("killed")
    assert [p.name for p in tmp_path.iterdir()] == ["old.json"]
    assert (tmp_path / "old.json").read_text() == "{}"


def test_write_mask_labels_gives_each_mask_its_class_and_writes_an_overlay(tmp_path):
    from pipeline.method import labelmaps

    mask_map = np.zeros((6, 8), np.uint8)
    mask_map[1:3, 1:4] = 1
    mask_map[4:6, 5:8] = 2
    io.write_label(tmp_path / "proposals/masks/a.png", mask_map)
    io.write_label(tmp_path / "proposals/masks/b.png", mask_map)  # no entry in the classes: all background
    for name in ("a", "b"):
        io.write_image(tmp_path / f"prepare/images/{name}.png", np.full((6, 8, 3), 90, np.uint8))
    labelmaps.write_mask_labels(tmp_path / "prepare", tmp_path / "proposals", tmp_path / "out", ["a", "b"],
                                {"a": {1: 3, 2: io.IGNORE}}, "test", workers=1)
    want = np.zeros((6, 8), np.uint8)
    want[1:3, 1:4] = 3
    want[4:6, 5:8] = io.IGNORE
    np.testing.assert_array_equal(io.read_label(tmp_path / "out/labels/a.png"), want)
    np.testing.assert_array_equal(io.read_label(tmp_path / "out/labels/b.png"), np.zeros((6, 8), np.uint8))
    assert io.read_image(tmp_path / "out/overlays/a.jpg").shape == (6, 8, 3)


def test_write_maps_writes_each_label_map_and_its_overlay_at_the_map_size(tmp_path):
    """io.write_maps: labels/<name>.png holds the map exactly; overlays/<name>.jpg is io.overlay of the image
    (resized to the map when their sizes differ): half the class colour inside, full colour on the border, the
    border ring outside drawn in the background's colour (black), the image elsewhere."""
    lab = np.zeros((8, 10), np.uint8)
    lab[2:6, 2:8] = 1
    image = np.full((4, 5, 3), 100, np.uint8)  # half the map's size: resized to 8 x 10 first
    io.write_maps(tmp_path / "out", ["a"], [lab], [image])
    np.testing.assert_array_equal(io.read_label(tmp_path / "out/labels/a.png"), lab)
    want = io.overlay(np.full((8, 10, 3), 100, np.uint8), lab)
    assert [want[3, 4].tolist(), want[2, 2].tolist(), want[1, 1].tolist(), want[0, 0].tolist()] == \
        [[114, 50, 50], [128, 0, 0], [0, 0, 0], [100, 100, 100]]
    io.write_image(tmp_path / "want.jpg", want)
    assert (tmp_path / "out/overlays/a.jpg").read_bytes() == (tmp_path / "want.jpg").read_bytes()
    assert io.colorize(lab)[2, 2].tolist() == [128, 0, 0] and io.colorize(lab)[0, 0].tolist() == [0, 0, 0]


def test_names_yaml_names_some_classes_and_rejects_bad_ids(tmp_path):
    (tmp_path / "names.yaml").write_text("1: sky\n2: ' road '\n")
    assert io.read_names(tmp_path / "names.yaml", 3) == {1: "sky", 2: "road"}
    assert io.class_names(tmp_path / "names.yaml", 4) == {0: "background", 1: "sky", 2: "road", 3: "class_3"}
    (tmp_path / "bad.yaml").write_text("3: sea\n")
    with pytest.raises(io.InputError, match=r"bad\.yaml: class id 3 is not one of 0\.\.2"):
        io.read_names(tmp_path / "bad.yaml", 3)
    (tmp_path / "empty_name.yaml").write_text("1: ''\n")
    with pytest.raises(io.InputError, match=r"class 1's name must be a non-empty string"):
        io.read_names(tmp_path / "empty_name.yaml", 3)
    with pytest.raises(io.InputError, match=r"missing\.yaml: not a readable names file"):
        io.read_names(tmp_path / "missing.yaml", 3)


def test_the_projects_names_yaml_names_no_class_yet():
    from conftest import ROOT

    assert io.read_names(ROOT / io.NAMES, 255) == {}
