"""Bad input files: each gives a clear InputError naming the file, or (data.on_bad_image: skip) a recorded skip;
a bad label never removes its image (label isolation): the label alone is left out and recorded."""
import csv
import hashlib
import io as pyio
import os
import re

import numpy as np
import pytest
from PIL import Image

from conftest import run_prepare, section
from pipeline import io
from pipeline.config import DataConfig
from pipeline.data import datasets


def png_bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = pyio.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


# ---------------------------------------------------------------- single files

def test_zero_byte_file_is_named_as_empty(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(io.InputError, match=r"empty\.jpg: empty file \(0 bytes\)"):
        io.read_image(tmp_path / "empty.jpg")
    with pytest.raises(io.InputError, match=r"empty\.jpg: empty file"):
        io.read_label(tmp_path / "empty.jpg")


def truncated(fmt: str) -> bytes:
    data = png_bytes(Image.fromarray(rgb(64, 64)), fmt)
    return data[:len(data) // 2]


@pytest.mark.parametrize("name,content,reason", [
    ("cut.png", truncated("PNG"), r"not a readable image, corrupt or truncated"),
    ("cut.jpg", truncated("JPEG"), r"not a readable image, corrupt or truncated"),
    ("notes.png", b"hello", r"not a readable image \(not an image format"),
    ("gone.png", None, r"image file not found"),  # no file at all
], ids=["truncated png", "truncated jpeg", "text named png", "missing"])
def test_an_unreadable_image_file_is_an_input_error_naming_it_and_why(tmp_path, name, content, reason):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(io.InputError, match=re.escape(name) + ": " + reason):
        io.read_image(tmp_path / name)


def test_every_pixel_format_reads_as_rgb_with_the_right_values(tmp_path):
    Image.fromarray(np.full((4, 5), 77, np.uint8), "L").save(tmp_path / "grey.png")
    Image.fromarray(np.array([[0, 1000], [2000, 4000]], np.uint16)).save(tmp_path / "deep.png")  # 16-bit greyscale
    pal = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pal.save(tmp_path / "pal.png", transparency=0)
    Image.new("CMYK", (3, 2), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    bw = Image.new("1", (2, 1), 0)
    bw.putpixel((0, 0), 1)
    bw.save(tmp_path / "bw.png")
    assert io.read_image(tmp_path / "grey.png")[0, 0].tolist() == [77, 77, 77]
    deep = io.read_image(tmp_path / "deep.png")[..., 0]
    assert deep.tolist() == [[0, 64], [128, 255]]  # 16-bit range stretched to 8 bits
    p = io.read_image(tmp_path / "pal.png")
    assert p[0, 1].tolist() == [200, 100, 50] and p[0, 0].tolist() == [10, 20, 30]  # alpha dropped, colours kept
    c = io.read_image(tmp_path / "cmyk.jpg")
    assert c.shape == (2, 3, 3) and c.min() >= 250  # no ink = white
    assert io.read_image(tmp_path / "bw.png")[0].tolist() == [[255] * 3, [0] * 3]


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((10, 20, 3), np.uint8)
    a[:, :10] = (255, 0, 0)  # left half red, right half blue
    a[:, 10:] = (0, 0, 255)
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    out = io.read_image(tmp_path / "rot.jpg")
    assert out.shape == (20, 10, 3)  # portrait after rotation
    assert out[2, 5, 0] > 200 and out[17, 5, 2] > 200  # the left half is now on top


def test_huge_image_is_refused_as_too_large_not_a_crash(tmp_path, monkeypatch):
    Image.fromarray(rgb(40, 40)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL refuses above 2x this: a decompression bomb
    with pytest.raises(io.InputError, match=r"big\.png: image too large to decode safely"):
        io.read_image(tmp_path / "big.png")


def test_label_modes(tmp_path):
    Image.fromarray(rgb(3, 3)).save(tmp_path / "colour.png")
    with pytest.raises(io.InputError, match=r"colour\.png: label must be a single-channel.*got mode RGB"):
        io.read_label(tmp_path / "colour.png")
    Image.fromarray(np.array([[0, 3], [255, 1]], np.uint16)).save(tmp_path / "deep.png")
    assert io.read_label(tmp_path / "deep.png").tolist() == [[0, 3], [255, 1]]
    Image.fromarray(np.array([[0, 300]], np.uint16)).save(tmp_path / "over.png")
    with pytest.raises(io.InputError, match=r"over\.png: label holds values 0\.\.300"):
        io.read_label(tmp_path / "over.png")


# ---------------------------------------------------------------- folders

def make_folder(root, labels: bool = True):
    """A messy image folder: 2 good images with labels and one of each bad kind -> {name: reason pattern}."""
    (root / "images" / "sub").mkdir(parents=True)
    (root / "labels" / "sub").mkdir(parents=True)

    def good(rel: str, h: int = 40, w: int = 50, label_hw=None, max_class: int = 1):
        Image.fromarray(rgb(h, w)).save(root / "images" / rel)
        lab = np.random.default_rng(1).integers(0, max_class + 1, label_hw or (h, w)).astype(np.uint8)
        if labels:
            io.write_label((root / "labels" / rel).with_suffix(".png"), lab)

    good("a.jpg")
    good("sub/b.png")
    good("sub__b.png")  # flattens to the same name as sub/b.png
    good("c.jpg")
    (root / "images" / "c.png").write_bytes((root / "images" / "c.jpg").read_bytes())  # c.jpg and c.png: same name
    good("tiny.png", 5, 5)
    good("wrongsize.png", label_hw=(20, 20))
    good("manyclasses.png", max_class=9)
    Image.fromarray(rgb(40, 50)).save(root / "images" / "nolabel.png")
    (root / "images" / "zero.jpg").write_bytes(b"")
    (root / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (root / "images" / "notes.txt").write_text("shot list")
    (root / "images" / ".DS_Store").write_bytes(b"\0\1")
    (root / "images" / "._a.jpg").write_bytes(b"\0\5\x16\7")  # macOS AppleDouble: hidden, not an image
    return {"sub__b.png": r"flattens to the name 'sub__b' that .*sub/b\.png already has",
            "c.png": r"flattens to the name 'c' that .*c\.jpg already has",
            "tiny.png": r"image is 5x5 pixels, smaller than data\.min_image_side \(16\)",
            "wrongsize.png": r"^label left out of evaluation \(its image is used\): .*labels/wrongsize\.png: label is "
                             r"20x20, its image .*wrongsize\.png is 50x40",
            "manyclasses.png": r"^label left out of evaluation \(its image is used\): .*labels/manyclasses\.png: "
                               r"holds class 9 but data\.num_classes is 2",
            "nolabel.png": r"^label left out of evaluation \(its image is used\): .*labels/nolabel\.png: label file "
                           r"missing for image",
            "zero.jpg": r"empty file \(0 bytes\)",
            "broken.jpg": r"not a readable image",
            "notes.txt": r"not an image file extension \(\.txt\), ignored",
            ".DS_Store": r"hidden file, ignored",
            "._a.jpg": r"hidden file, ignored"}


def folder_cfg(root, **kw) -> DataConfig:
    return section("data", name="folder", root=str(root), image_size=32, num_classes=2, **kw)


LABEL_LEFT_OUT = ("manyclasses", "nolabel", "wrongsize")  # images kept, their labels left out of evaluation


def test_skip_mode_keeps_the_good_images_and_records_every_bad_file_with_its_reason(tmp_path):
    expected = make_folder(tmp_path)
    skipped: list = []
    samples = list(datasets.folder(folder_cfg(tmp_path, on_bad_image="skip"), skipped))
    assert [s.name for s in samples] == ["a", "c", "manyclasses", "nolabel", "sub__b", "wrongsize"]
    for name, image, label, size in samples:
        assert image.shape == (32, 40, 3) and size == (40, 50)  # short side 40 -> 32, aspect kept: 50 -> 40
        if name in LABEL_LEFT_OUT:
            assert label is None
        else:  # ground truth at the original size
            assert label.shape == (40, 50) and label.max() <= 1
    assert [os.path.basename(f) for f, r in skipped if r.startswith("label left out")] == \
        ["manyclasses.png", "nolabel.png", "wrongsize.png"]
    assert all(f"labels{os.sep}" in f for f, r in skipped if r.startswith("label left out"))  # the label file is named
    reasons = {os.path.basename(f): r for f, r in skipped}
    assert set(reasons) == set(expected)
    for name, pattern in expected.items():
        assert re.search(pattern, reasons[name]), (name, reasons[name])


def test_error_mode_stops_at_the_first_bad_file_naming_it(tmp_path):
    make_folder(tmp_path)
    with pytest.raises(io.InputError, match=r"c\.png: flattens to the name 'c'.*set data\.on_bad_image: skip"):
        list(datasets.folder(folder_cfg(tmp_path, on_bad_image="error")))


def test_each_label_problem_alone_keeps_the_image_even_in_error_mode_and_records_the_label(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(rgb(40, 40)).save(tmp_path / "images" / "x.png")
    cfg = folder_cfg(tmp_path, on_bad_image="error")
    lpath = tmp_path / "labels" / "x.png"

    def one() -> tuple:
        skipped: list = []
        [(name, image, label, size)] = list(datasets.folder(cfg, skipped))
        assert name == "x" and image.shape == (32, 32, 3) and size == (40, 40)
        return label, skipped

    def left_out(reason: str) -> None:
        label, skipped = one()
        assert label is None and len(skipped) == 1 and skipped[0][0] == str(lpath)
        assert re.fullmatch(r"label left out of evaluation \(its image is used\): " + reason, skipped[0][1]), skipped

    left_out(rf"{re.escape(str(lpath))}: label file missing for image .*images/x\.png")
    io.write_label(lpath, np.zeros((40, 41), np.uint8))
    left_out(r".*labels/x\.png: label is 41x40, its image .*x\.png is 40x40")
    io.write_label(lpath, np.full((40, 40), 2, np.uint8))
    left_out(r".*labels/x\.png: holds class 2 but data\.num_classes is 2 \(classes 0\.\.1, 255 = ignore\)")
    lpath.write_text("not a png")
    left_out(r".*labels/x\.png: not a readable label \(not an image format PIL knows\)")
    lab = np.full((40, 40), 255, np.uint8)
    lab[0, 0] = 1
    io.write_label(lpath, lab)  # 255 (ignore) is always allowed
    label, skipped = one()
    np.testing.assert_array_equal(label, lab)
    assert not skipped


def test_empty_and_imageless_folders_are_clear_errors(tmp_path):
    with pytest.raises(io.InputError, match="images: folder not found"):
        list(datasets.folder(folder_cfg(tmp_path)))
    (tmp_path / "images").mkdir()
    with pytest.raises(io.InputError, match=r"images: no images found \(expected jpg/"):
        list(datasets.folder(folder_cfg(tmp_path)))
    (tmp_path / "images" / "readme.md").write_text("x")
    with pytest.raises(io.InputError, match=r"no images found .*1 other files ignored, e\.g\. .*readme\.md"):
        list(datasets.folder(folder_cfg(tmp_path)))


def test_a_very_large_image_is_read_and_resized(tmp_path):
    (tmp_path / "images").mkdir()
    big = np.zeros((3000, 4000, 3), np.uint8)
    big[:1500] = (200, 10, 10)  # top half red
    Image.fromarray(big).save(tmp_path / "images" / "big.png", compress_level=1)
    [(name, image, label, size)] = list(datasets.folder(folder_cfg(tmp_path)))
    assert image.shape == (32, 43, 3) and label is None and size == (3000, 4000)  # 4000 * 32 / 3000 = 42.7 -> 43
    assert image[4, 21].tolist() == [200, 10, 10] and image[28, 21].tolist() == [0, 0, 0]


# ---------------------------------------------------------------- the prepare stage

def tree_digest(root) -> dict:
    """Every file under root -> (sha256, size, mtime_ns): what must not change."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_prepare_writes_a_skip_report_and_never_touches_the_input_folder(tmp_path, monkeypatch):
    src = tmp_path / "photos"
    expected = make_folder(src)
    os.chmod(src / "images" / "a.jpg", 0o444)  # read-only input is fine: it is only ever read
    before = tree_digest(src)
    work = tmp_path / "work"
    work.mkdir()
    run_prepare(work, monkeypatch, data=dict(name="folder", root=str(src), image_size=32, num_classes=2, on_bad_image="skip"))
    assert tree_digest(src) == before
    out = work / "data" / "01_prepare"
    with open(out / "skipped.csv") as f:
        rows = list(csv.DictReader(f))
    assert {os.path.basename(r["file"]) for r in rows} == set(expected)
    assert all(r["reason"] for r in rows)
    manifest = io.read_manifest(out)
    names = ["a", "c", "manyclasses", "nolabel", "sub__b", "wrongsize"]
    assert manifest["names"] == names and manifest["skipped"] == len(expected)
    assert manifest["labelled"] == ["a", "c", "sub__b"] and not manifest["has_labels"]  # 3 labels left out
    assert manifest["eval_names"] == [] and not manifest["eval_has_labels"]
    assert manifest["sizes"] == {n: [40, 50] for n in names}
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{n}.png" for n in names]
    assert sorted(p.name for p in (out / "gt").iterdir()) == ["a.png", "c.png", "sub__b.png"]
    for n in names:  # patch 8 (the default backbone): 50 * 32 / 40 = 40 = 5 patches
        assert io.read_image(out / "images" / f"{n}.png").shape == (32, 40, 3)
    gt_a = io.read_label(out / "gt" / "a.png")  # ground truth untouched, at the original size
    np.testing.assert_array_equal(gt_a, io.read_label(src / "labels" / "a.png"))


def test_prepare_in_error_mode_names_the_file_and_still_writes_the_report(tmp_path, monkeypatch):
    src = tmp_path / "photos"
    make_folder(src)
    before = tree_digest(src)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(io.InputError, match=r"c\.png: flattens"):
        run_prepare(work, monkeypatch, data=dict(name="folder", root=str(src), image_size=32, num_classes=2, on_bad_image="error"))
    assert tree_digest(src) == before
    assert (work / "data" / "01_prepare" / "skipped.csv").is_file()


def test_prepare_fails_clearly_when_every_image_is_skipped(tmp_path, monkeypatch):
    src = tmp_path / "photos"
    (src / "images").mkdir(parents=True)
    (src / "images" / "a.jpg").write_bytes(b"")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(io.InputError, match=r"every image was left out; see .*skipped\.csv"):
        run_prepare(work, monkeypatch, data=dict(name="folder", root=str(src), image_size=32, num_classes=2))


def test_prepare_rejects_an_unknown_backbone_name_before_reading_any_image(tmp_path, monkeypatch):
    from pipeline.config import ConfigError
    with pytest.raises(ConfigError, match=r"'backbone\.name' is 'vit_tiny_patch16_2244'.*did you mean vit_tiny_patch16_224"):
        run_prepare(tmp_path, monkeypatch, backbone={"name": "vit_tiny_patch16_2244"})
    assert not (tmp_path / "data").exists()


def test_max_images_counts_good_images_only(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"")  # sorted first, bad
    for n in ("b", "c", "d"):
        Image.fromarray(rgb(20, 20)).save(tmp_path / "images" / f"{n}.png")
    skipped: list = []
    names = [s[0] for s in datasets.folder(folder_cfg(tmp_path, max_images=2), skipped)]
    assert names == ["b", "c"] and [os.path.basename(f) for f, _ in skipped] == ["a.jpg"]
