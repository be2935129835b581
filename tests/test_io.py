import numpy as np
import pytest
from PIL import Image

from pipeline import io


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
    assert got.dtype == np.float16 and np.array_equal(got, np.stack(arrays))
    assert len(io.read_json(tmp_path / "index.json")["shards"]) == 3


def test_a_failed_atomic_write_leaves_neither_the_file_nor_a_temporary(tmp_path):
    (tmp_path / "old.json").write_text("{}")
    with pytest.raises(RuntimeError):
        with io.atomic_open(tmp_path / "old.json") as f:
            f.write(b"half")
            raise RuntimeError("killed")
    assert [p.name for p in tmp_path.iterdir()] == ["old.json"]
    assert (tmp_path / "old.json").read_text() == "{}"


def test_write_mask_labels_gives_each_mask_its_class_and_writes_an_overlay(tmp_path):
    from pipeline.report import labelmaps

    mask_map = np.zeros((6, 8), np.uint8)
    mask_map[1:3, 1:4] = 1
    mask_map[4:6, 5:8] = 2
    io.write_label(tmp_path / "proposals/masks/a.png", mask_map)
    io.write_label(tmp_path / "proposals/masks/b.png", mask_map)  # no entry in the classes: all background
    for name in ("a", "b"):
        io.write_image(tmp_path / f"prepare/images/{name}.png", np.full((6, 8, 3), 90, np.uint8))
    labelmaps.write_mask_labels(tmp_path / "prepare", tmp_path / "proposals", tmp_path / "out", ["a", "b"],
                                {"a": {1: 3, 2: io.IGNORE}}, "test")
    want = np.zeros((6, 8), np.uint8)
    want[1:3, 1:4] = 3
    want[4:6, 5:8] = io.IGNORE
    np.testing.assert_array_equal(io.read_label(tmp_path / "out/labels/a.png"), want)
    np.testing.assert_array_equal(io.read_label(tmp_path / "out/labels/b.png"), np.zeros((6, 8), np.uint8))
    assert io.read_image(tmp_path / "out/overlays/a.jpg").shape == (6, 8, 3)
