"""The `folder` dataset: images/ with nested subfolders, optional labels/ at the same relative paths."""
import numpy as np
import pytest
from PIL import Image

from conftest import section
from pipeline import io
from pipeline.data import datasets

SIZE = 32


def write(root, rel, label_value):
    """images/<rel>.png (random colours) and labels/<rel>.png: left half 0, right half `label_value`, one 255 pixel."""
    rng = np.random.default_rng(len(rel))
    img = root / "images" / f"{rel}.png"
    img.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(img)
    lab = np.zeros((SIZE, SIZE), np.uint8)
    lab[:, SIZE // 2:] = label_value
    lab[0, 0] = 255
    (root / "labels" / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(lab, mode="L").save(root / "labels" / f"{rel}.png")
    return lab


def cfg(root, **kw):
    return section("data", **{"name": "folder", "root": str(root), "num_classes": 3, "image_size": SIZE, **kw})


def test_folder_reads_nested_images_with_labels_at_the_same_relative_path(tmp_path):
    want = {"top": write(tmp_path, "top", 1), "a__x": write(tmp_path, "a/x", 2), "a__b__y": write(tmp_path, "a/b/y", 1)}
    samples = list(datasets.load(cfg(tmp_path), 0))
    assert [s.name for s in samples] == ["a__b__y", "a__x", "top"]  # sorted by relative path
    for name, image, label, size in samples:
        assert image.shape == (SIZE, SIZE, 3) and size == (SIZE, SIZE)
        np.testing.assert_array_equal(label, want[name])
        np.testing.assert_array_equal(image, io.read_image(tmp_path / "images" / f"{name.replace('__', '/')}.png"))


def test_folder_without_labels_yields_none_and_max_images_takes_the_first(tmp_path):
    write(tmp_path, "a/x", 1)
    write(tmp_path, "b", 1)
    for p in sorted((tmp_path / "labels").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (tmp_path / "labels").rmdir()
    samples = list(datasets.load(cfg(tmp_path, max_images=1), 0))
    assert [(s.name, s.label) for s in samples] == [("a__x", None)]


@pytest.mark.parametrize("mode", ["error", "skip"])
def test_folder_label_with_a_class_beyond_num_classes_keeps_its_image_and_is_recorded(tmp_path, mode):
    """Label isolation: in either data.on_bad_image mode the image is used and only its label is left out."""
    write(tmp_path, "a", 5)
    want_b = write(tmp_path, "b", 2)
    skipped = []
    samples = list(datasets.load(cfg(tmp_path, on_bad_image=mode), 0, skipped))
    assert [s.name for s in samples] == ["a", "b"]
    assert samples[0].label is None and samples[0].image.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(samples[1].label, want_b)
    assert skipped == [(str(tmp_path / "labels" / "a.png"),
                        f"label left out of evaluation (its image is used): {tmp_path / 'labels' / 'a.png'}: holds "
                        "class 5 but data.num_classes is 3 (classes 0..2, 255 = ignore)")]
