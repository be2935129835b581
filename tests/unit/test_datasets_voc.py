"""PASCAL VOC 2012 loader on a tiny VOCdevkit built in a temporary folder."""
import numpy as np
import pytest
from PIL import Image

from conftest import palette_png, run_prepare, section
from pipeline import io
from pipeline.config import ConfigError
from pipeline.data import datasets, voc

SIZE = 32


def hand_label(seed):
    """Background, an aeroplane (1) square, a person (15) square, a 1-pixel border (255) around the person."""
    lab = np.zeros((SIZE, SIZE), np.uint8)
    lab[2:10, 3:12] = 1
    lab[15:27, 14 + seed:28] = 255
    lab[16:26, 15 + seed:27] = 15
    return lab


@pytest.fixture
def devkit(tmp_path):
    """tmp/VOCdevkit/VOC2012 with 3 images: a, b in train, c in val; SegmentationClassAug for a, b, c, d."""
    root = tmp_path / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(0)
    labels = {}
    for k, name in enumerate(["2007_000001", "2007_000002", "2008_000003", "2009_000004"]):
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
        labels[name] = hand_label(k)
        if name != "2009_000004":
            palette_png(root / "SegmentationClass" / f"{name}.png", labels[name])
        aug = np.where(labels[name] == 255, 0, labels[name]).astype(np.uint8)  # SBD labels: greyscale, no border
        aug[0, 0] = 7  # a cat pixel that only the Aug label has
        (root / "SegmentationClassAug").mkdir(exist_ok=True)
        Image.fromarray(aug, mode="L").save(root / "SegmentationClassAug" / f"{name}.png")
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2007_000001\n2007_000002\n")
    (sets / "val.txt").write_text("2008_000003\n")
    (sets / "trainval.txt").write_text("2007_000001\n2007_000002\n2008_000003\n")
    return tmp_path / "VOCdevkit", labels


def cfg(root, split="val", **kw):
    return section("data", name="voc2012", root=str(root), split=split, num_classes=21, image_size=SIZE, **kw)


def test_voc_palette_labels_decode_to_class_ids_with_border_ignored(devkit):
    root, labels = devkit
    samples = list(datasets.load(cfg(root, "train"), 0))
    assert [s[0] for s in samples] == ["2007_000001", "2007_000002"]
    for name, image, label, size in samples:
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8 and size == (SIZE, SIZE)
        np.testing.assert_array_equal(label, labels[name])
        assert set(np.unique(label)) == {0, 1, 15, 255}
        assert label[20, 20] == 15 and label[15, 20] == 255 and label[5, 5] == 1 and label[30, 1] == 0


def test_voc_val_split_and_root_given_as_parent_of_vocdevkit(devkit):
    root, labels = devkit
    samples = list(datasets.load(cfg(root.parent, "val"), 0))
    assert [s[0] for s in samples] == ["2008_000003"]
    np.testing.assert_array_equal(samples[0][2], labels["2008_000003"])


def test_voc_image_is_resized_and_its_label_keeps_the_original_size(devkit):
    root, labels = devkit
    (name, image, label, size), = datasets.load(section("data", name="voc2012", root=str(root), split="val",
                                                        num_classes=21, image_size=2 * SIZE), 0)
    assert image.shape == (2 * SIZE, 2 * SIZE, 3) and size == (SIZE, SIZE)
    np.testing.assert_array_equal(label, labels[name])  # not resized: scored at the original size


def test_voc_trainaug_is_every_aug_label_outside_val(devkit):
    root, labels = devkit
    samples = list(datasets.load(cfg(root, "trainaug"), 0))
    assert [s[0] for s in samples] == ["2007_000001", "2007_000002", "2009_000004"]
    for name, _, label, _ in samples:
        want = np.where(labels[name] == 255, 0, labels[name])
        want[0, 0] = 7
        np.testing.assert_array_equal(label, want)


def test_voc_trainaug_file_takes_precedence(devkit):
    root, _ = devkit
    (root / "VOC2012" / "ImageSets" / "Segmentation" / "trainaug.txt").write_text("2009_000004\n")
    assert [s[0] for s in datasets.load(cfg(root, "trainaug"), 0)] == ["2009_000004"]


def test_voc_max_images_keeps_the_first(devkit):
    root, _ = devkit
    assert [s[0] for s in datasets.load(cfg(root, "trainval", max_images=2), 0)] == ["2007_000001", "2007_000002"]


def test_voc_rgb_coloured_label_decodes_through_the_colour_map(tmp_path):
    lab = hand_label(0)
    lab[0, :4] = [20, 0, 8, 255]
    Image.fromarray(voc.voc_palette()[lab]).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(voc.read_label(tmp_path / "rgb.png"), lab)


def test_voc_unknown_colour_or_class_is_an_error_naming_the_file(tmp_path):
    rgb = voc.voc_palette()[hand_label(0)]
    rgb[3, 3] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "bad.png")
    with pytest.raises(io.InputError, match=r"bad\.png.*\(1, 2, 3\)"):
        voc.read_label(tmp_path / "bad.png")
    lab = hand_label(0)
    lab[0, 0] = 21
    palette_png(tmp_path / "big.png", lab)
    with pytest.raises(io.InputError, match=r"big\.png.*21"):
        voc.read_label(tmp_path / "big.png")


def test_voc_missing_folder_says_where_to_put_it(tmp_path):
    with pytest.raises(io.InputError, match=r"VOC2012/JPEGImages.*data\.download=true"):
        list(datasets.load(cfg(tmp_path / "nowhere"), 0))


def test_voc_trainaug_without_aug_labels_is_a_clear_error(devkit):
    root, _ = devkit
    for p in (root / "VOC2012" / "SegmentationClassAug").iterdir():
        p.unlink()
    (root / "VOC2012" / "SegmentationClassAug").rmdir()
    with pytest.raises(io.InputError, match="SegmentationClassAug"):
        list(datasets.load(cfg(root, "trainaug"), 0))


def test_voc_config_checks_split_and_class_count():
    with pytest.raises(ConfigError, match="data.num_classes"):
        section("data", name="voc2012", root="x", num_classes=5)
    with pytest.raises(ConfigError, match="data.split"):
        section("data", name="voc2012", root="x", num_classes=21, split="test")
    assert datasets.class_names(cfg("x"))[15] == "person" and len(voc.CLASS_NAMES) == 21


def test_voc_fits_on_train_and_holds_out_val(devkit):
    root, labels = devkit
    c = cfg(root, "train")
    assert [s.name for s in datasets.load(c, 0)] == ["2007_000001", "2007_000002"]
    held_out = list(datasets.load_eval(c, 0, "val"))
    assert [s.name for s in held_out] == ["2008_000003"]
    np.testing.assert_array_equal(held_out[0].label, labels["2008_000003"])
    assert list(datasets.load_eval(c, 0, "")) == []  # evaluate.split '': no evaluation split
    assert [s.name for s in datasets.load_eval(cfg(root, "val", max_eval_images=1), 0, "train")] == \
        ["2007_000001"]  # data.max_eval_images caps the evaluation split


def test_voc_prepare_stage_writes_both_splits_and_gt_at_the_original_size(devkit, tmp_path, monkeypatch):
    """A VOCdevkit with a non-square val image: prepare fits on train, holds out val, ground truth untouched."""
    root, labels = devkit
    voc_root = root / "VOC2012"
    wide = np.random.default_rng(3).integers(0, 255, (SIZE, 48, 3), dtype=np.uint8)  # 48x32 (W x H)
    Image.fromarray(wide).save(voc_root / "JPEGImages" / "2008_000003.jpg")
    wide_label = np.zeros((SIZE, 48), np.uint8)
    wide_label[4:20, 30:44] = 15
    wide_label[0, :] = 255
    palette_png(voc_root / "SegmentationClass" / "2008_000003.png", wide_label)
    m = run_prepare(tmp_path, monkeypatch, data={"name": "voc2012", "root": str(root), "split": "train",
                                                 "num_classes": 21, "image_size": SIZE}, evaluate={"split": "val"})
    prep = tmp_path / "data" / "01_prepare"
    assert m["names"] == ["2007_000001", "2007_000002"] and m["eval_names"] == ["2008_000003"]
    assert m["has_labels"] and m["eval_has_labels"] and m["labelled"] == m["names"] + m["eval_names"]
    assert m["sizes"] == {"2007_000001": [SIZE, SIZE], "2007_000002": [SIZE, SIZE], "2008_000003": [SIZE, 48]}
    assert io.read_image(prep / "images" / "2008_000003.png").shape == (SIZE, 48, 3)  # 32 short side, 48 = 6 patches
    np.testing.assert_array_equal(io.read_label(prep / "gt" / "2008_000003.png"), wide_label)
    for n in m["names"]:
        np.testing.assert_array_equal(io.read_label(prep / "gt" / f"{n}.png"), labels[n])

