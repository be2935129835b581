"""Two splits and the aspect-preserving resize of the prepare stage: the resize rule on exact sizes, square
images squashed as cv2 does, the synthetic evaluation stream, folder eval_fraction / eval_root, whole-video splits, label
isolation, the config checks, and the manifest the prepare stage writes."""
import csv
import hashlib

import cv2
import numpy as np
import pytest
import yaml

from conftest import ROOT, raw_params, run_prepare, section
from pipeline import io
from pipeline.config import ConfigError, load_params, parse_params, replace
from pipeline.data import datasets, synth, video

# ---------------------------------------------------------------- the resize rule

@pytest.mark.parametrize("hw,size,patch,want", [
    ((170, 230), 128, 8, (128, 176)),   # Weizmann-like 230x170 (W x H): 230 * 128 / 170 = 173.2 -> 22 patches
    ((230, 170), 128, 8, (176, 128)),   # the same, portrait
    ((360, 480), 160, 8, (160, 216)),   # CamVid 480x360 at 160: 213.3 -> 27 patches
    ((375, 500), 224, 16, (224, 304)),  # a VOC photo at 224, patch 16: 298.7 -> 19 patches
    ((3000, 4000), 32, 1, (32, 43)),    # patch 1: the nearest pixel, 42.67 -> 43
    ((100, 150), 100, 100, (100, 200)),  # exactly half way (1.5 patches) rounds up
    ((100, 149), 100, 100, (100, 100)),  # below half way rounds down
    ((20, 1000), 16, 8, (16, 800)),     # a thin strip keeps its aspect: 1000 * 16 / 20 = 800
    ((100, 100), 2, 8, (8, 8)),         # at least one patch
    ((128, 128), 128, 8, (128, 128)),   # square at image_size: unchanged
])
def test_prepared_size_short_side_to_image_size_sides_to_the_nearest_patch_multiple(hw, size, patch, want):
    assert datasets.prepared_size(*hw, size, patch) == want


def test_the_stretch_is_at_most_half_a_patch_and_the_short_side_is_image_size():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        h, w = (int(v) for v in rng.integers(16, 3000, 2))
        patch = int(rng.choice([1, 8, 14, 16]))
        size = patch * int(rng.integers(max(1, 32 // patch), 400 // patch + 1))
        ph, pw = datasets.prepared_size(h, w, size, patch)
        assert ph % patch == 0 and pw % patch == 0 and min(ph, pw) == size
        exact = np.array([h, w]) * size / min(h, w)
        assert np.all(np.abs(np.array([ph, pw]) - exact) <= patch / 2 + 1e-9), (h, w, size, patch)


def square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """cv2's resize of the whole image to size x size: area when shrinking, linear when growing."""
    interp = cv2.INTER_AREA if min(image.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


@pytest.mark.parametrize("side", [48, 128, 200, 517])
def test_a_square_image_is_resized_byte_for_byte_as_cv2_resizes_it_to_a_square(side):
    image = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    for patch in (1, 8, 16):
        np.testing.assert_array_equal(datasets.resize_image(image, 128, patch), square_resize(image, 128))


def test_resize_image_keeps_the_aspect_with_area_when_shrinking_and_linear_when_growing():
    image = np.random.default_rng(1).integers(0, 256, (170, 230, 3), dtype=np.uint8)
    out = datasets.resize_image(image, 128, 8)
    assert out.shape == (128, 176, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, cv2.resize(image, (176, 128), interpolation=cv2.INTER_AREA))
    small = image[:60, :90]
    np.testing.assert_array_equal(datasets.resize_image(small, 128, 8),
                                  cv2.resize(small, (192, 128), interpolation=cv2.INTER_LINEAR))  # 90*128/60 = 192


# ---------------------------------------------------------------- synthetic

def test_synthetic_training_images_are_the_seeds_generated_set_and_the_evaluation_images_a_second_stream():
    cfg = section("data")  # the default: 300 training + 100 evaluation images at 128
    assert (cfg.name, cfg.synth_images, cfg.synth_eval_images) == ("synthetic", 300, 100)
    train = list(datasets.load(cfg, 0))
    generated = synth.generate_dataset(0, 300, cfg.image_size, cfg.synth_max_objects)  # the training stream of seed 0
    assert [s.name for s in train] == [n for n, _, _ in generated]
    for s, (_, img, lab) in zip(train, generated):
        assert s.image.tobytes() == img.tobytes() and s.label.tobytes() == lab.tobytes() and s.size == (128, 128)
    held_out = list(datasets.load_eval(cfg, 0, "val"))
    assert [s.name for s in held_out] == [f"synth_eval_{i:05d}" for i in range(100)]
    seen = {s.image.tobytes() for s in train}
    assert not any(s.image.tobytes() in seen for s in held_out)  # disjoint
    again = list(datasets.load_eval(cfg, 0, ""))  # evaluate.split does not concern synthetic
    assert all(a.image.tobytes() == b.image.tobytes() for a, b in zip(held_out, again))  # reproducible
    other_seed = next(iter(datasets.load_eval(cfg, 1, "val")))
    assert other_seed.image.tobytes() != held_out[0].image.tobytes()
    assert list(datasets.load_eval(replace(cfg, synth_eval_images=0), 0, "val")) == []


# ---------------------------------------------------------------- folder

def write_folder(root, names, h=40, w=60, labels=True):
    for i, n in enumerate(names):
        rgb = np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
        io.write_image(root / "images" / f"{n}.png", rgb)
        if labels:
            io.write_label(root / "labels" / f"{n}.png", (np.arange(h * w).reshape(h, w) % 2).astype(np.uint8))


def folder_cfg(root, **kw):
    return section("data", **{"name": "folder", "root": str(root), "num_classes": 2, "image_size": 32, **kw})


NAMES = [f"img{i:02d}" for i in range(12)]  # eval_share: img05 0.14, img06 0.08, img09 0.04, img11 0.27, others > 0.3


def test_eval_share_is_the_first_four_bytes_of_sha1():
    for n in NAMES:
        assert datasets.eval_share(n) == int.from_bytes(hashlib.sha1(n.encode()).digest()[:4], "big") / 2 ** 32
    assert [n for n in NAMES if datasets.in_eval_split(n, 0.3)] == ["img05", "img06", "img09", "img11"]


def test_folder_eval_fraction_splits_by_name_deterministically_and_adding_images_moves_none(tmp_path):
    write_folder(tmp_path, NAMES)
    cfg = folder_cfg(tmp_path, eval_fraction=0.3)
    train = [s.name for s in datasets.load(cfg, 0)]
    held_out = [s.name for s in datasets.load_eval(cfg, 0, "val")]
    assert held_out == ["img05", "img06", "img09", "img11"]
    assert train == [n for n in NAMES if n not in held_out]
    assert [s.name for s in datasets.load_eval(cfg, 0, "val")] == held_out  # deterministic
    write_folder(tmp_path, NAMES + [f"new{i}" for i in range(20)])
    train2 = [s.name for s in datasets.load(cfg, 0)]
    held_out2 = [s.name for s in datasets.load_eval(cfg, 0, "val")]
    assert set(train) <= set(train2) and set(held_out) <= set(held_out2) and not set(train2) & set(held_out2)
    assert len(train2) + len(held_out2) == 32 and len(held_out2) > len(held_out)
    capped = folder_cfg(tmp_path, eval_fraction=0.3, max_images=2, max_eval_images=3)
    assert [s.name for s in datasets.load(capped, 0)] == train2[:2]
    assert [s.name for s in datasets.load_eval(capped, 0, "val")] == held_out2[:3]


def test_folder_without_an_evaluation_split_and_skip_notes_recorded_once(tmp_path):
    write_folder(tmp_path, NAMES[:3])
    (tmp_path / "images" / "notes.txt").write_text("x")
    skipped = []
    assert [s.name for s in datasets.load(folder_cfg(tmp_path), 0, skipped)] == NAMES[:3]
    assert list(datasets.load_eval(folder_cfg(tmp_path), 0, "val", skipped)) == []  # eval_fraction 0, eval_root ''
    skipped = []
    cfg = folder_cfg(tmp_path, eval_fraction=0.5)
    list(datasets.load(cfg, 0, skipped)), list(datasets.load_eval(cfg, 0, "val", skipped))
    assert [f.rsplit("/", 1)[-1] for f, _ in skipped] == ["notes.txt"]  # both parts scan the folder; noted once


def test_folder_eval_root_is_the_evaluation_split_with_ground_truth_at_the_original_size(tmp_path):
    write_folder(tmp_path / "train", ["a", "b"])
    write_folder(tmp_path / "val", ["c"], h=48, w=80)
    cfg = folder_cfg(tmp_path / "train", eval_root=str(tmp_path / "val"))
    assert [s.name for s in datasets.load(cfg, 0)] == ["a", "b"]
    [c] = datasets.load_eval(cfg, 0, "val")
    assert c.name == "c" and c.size == (48, 80) and c.image.shape == (32, 53, 3)  # 80 * 32 / 48 = 53.3
    np.testing.assert_array_equal(c.label, io.read_label(tmp_path / "val" / "labels" / "c.png"))
    with pytest.raises(io.InputError, match=r"val/images: folder not found \(data\.eval_root must hold"):
        list(datasets.load_eval(folder_cfg(tmp_path / "train", eval_root=str(tmp_path / "none" / "val")), 0, "val"))


# ---------------------------------------------------------------- config

def test_eval_root_and_eval_fraction_together_are_a_clear_error():
    with pytest.raises(ConfigError, match=r"'data\.eval_fraction' is 0\.2; must be 0 when data\.eval_root is set "
                                          r"\('/x/val'\): the evaluation split is either a second folder"):
        section("data", name="folder", root="/x/train", eval_root="/x/val", eval_fraction=0.2)
    with pytest.raises(ConfigError, match=r"'data\.eval_fraction' is 0\.95; must be in \[0, 0\.9\]"):
        section("data", eval_fraction=0.95)


def params_with(**sections):
    raw = raw_params()
    for name, values in sections.items():
        raw[name].update(values)
    return parse_params(raw)


def test_the_scored_split_must_be_held_out_from_the_fitted_one():
    voc = {"name": "voc2012", "root": "x", "num_classes": 21}
    assert params_with(data={**voc, "split": "train"}, evaluate={"split": "val"}).evaluate.split == "val"
    assert params_with(data={**voc, "split": "trainaug"}, evaluate={"split": "val"}).data.split == "trainaug"
    assert params_with(data={**voc, "split": "trainval"}, evaluate={"split": ""}).evaluate.split == ""
    for fit, score in (("val", "val"), ("trainval", "val"), ("trainaug", "train")):
        with pytest.raises(ConfigError, match=rf"'evaluate\.split' is '{score}'; shares images with data\.split "
                                              rf"'{fit}'; the scored split must be held out: fit on train or trainaug"):
            params_with(data={**voc, "split": fit}, evaluate={"split": score})
    with pytest.raises(ConfigError, match=r"'evaluate\.split' is 'test'; allowed values for voc2012: '' \(no "):
        params_with(data={**voc, "split": "train"}, evaluate={"split": "test"})
    coco = {"name": "coco", "root": "x", "num_classes": 81}
    assert params_with(data={**coco, "split": "train"}, evaluate={"split": "val"}).data.name == "coco"
    with pytest.raises(ConfigError, match=r"'evaluate\.split' is 'train'; shares images with data\.split 'train'; "
                                          r"the scored split must be held out: fit on train and score val"):
        params_with(data={**coco, "split": "train"}, evaluate={"split": "train"})
    assert params_with(evaluate={"split": "anything"}).evaluate.split == "anything"  # ignored by synthetic
    p = load_params(ROOT / "params.yaml")
    assert (p.data.split, p.evaluate.split, p.data.eval_root, p.data.eval_fraction, p.data.max_eval_images) == \
        ("train", "val", "", 0.0, 0)


def test_dvc_prepare_stage_depends_on_evaluate_split():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["prepare"]["params"] == ["seed", "data", "video", "evaluate.split", "workers"]


# ---------------------------------------------------------------- video

def test_synthetic_video_splits_by_whole_clips():
    data = section("data", name="synthetic_video", image_size=32, eval_fraction=0.3)
    vid = section("video", stride=2, synth_clips=4, synth_frames=4)
    train = list(video.load(data, vid, 0))
    held_out = list(video.load_eval(data, vid, 0))
    clips = lambda samples: sorted({s.name.rpartition("__")[0] for s in samples})  # noqa: E731
    assert clips(train) == ["clip_0000", "clip_0003"] and clips(held_out) == ["clip_0001", "clip_0002"]
    assert [s.name for s in held_out] == [f"clip_000{c}__f0000{t}" for c in (1, 2) for t in (0, 2)]
    whole = {s.name: s for s in video.load(section("data", name="synthetic_video", image_size=32), vid, 0)}
    assert sorted(whole) == sorted(s.name for s in train + held_out)  # every frame once, the clips unchanged
    assert all(np.array_equal(whole[s.name].image, s.image) for s in train + held_out)
    assert list(video.load_eval(section("data", name="synthetic_video", image_size=32), vid, 0)) == []


def test_video_folder_splits_by_whole_videos_with_eval_fraction_or_eval_root(tmp_path):
    for v in ("clip_0000", "clip_0001", "clip_0002", "clip_0003"):  # folders of frames, 20x30
        for i in range(3):
            io.write_image(tmp_path / "src" / v / f"{i:03d}.png", np.full((20, 30, 3), 10 * i, np.uint8))
    vid = section("video", stride=1)
    data = section("data", name="video", root=str(tmp_path / "src"), image_size=32, eval_fraction=0.3)
    train, held_out = list(video.load(data, vid, 0)), list(video.load_eval(data, vid, 0))
    assert {s.name[:9] for s in train} == {"clip_0000", "clip_0003"}
    assert {s.name[:9] for s in held_out} == {"clip_0001", "clip_0002"} and len(held_out) == 6
    assert all(s.image.shape == (32, 48, 3) and s.size == (20, 30) for s in train + held_out)
    io.write_image(tmp_path / "other" / "walk" / "000.png", np.zeros((20, 30, 3), np.uint8))
    data = section("data", name="video", root=str(tmp_path / "src"), image_size=32, eval_root=str(tmp_path / "other"))
    assert len(list(video.load(data, vid, 0))) == 12
    assert [s.name for s in video.load_eval(data, vid, 0)] == ["walk__f00000"]


# ---------------------------------------------------------------- the prepare stage

def test_prepare_writes_the_synthetic_splits_and_the_manifest(tmp_path, monkeypatch):
    m = run_prepare(tmp_path, monkeypatch, data={"synth_images": 8, "synth_eval_images": 3, "image_size": 64})
    out = tmp_path / "data" / "01_prepare"
    assert m["names"] == [f"synth_{i:05d}" for i in range(8)]
    assert m["eval_names"] == [f"synth_eval_{i:05d}" for i in range(3)]
    assert m["sizes"] == {n: [64, 64] for n in m["names"] + m["eval_names"]} and m["image_size"] == 64
    assert m["has_labels"] and m["eval_has_labels"] and m["labelled"] == m["names"] + m["eval_names"]
    for name, img, lab in synth.generate_dataset(0, 8, 64, 3):
        np.testing.assert_array_equal(io.read_image(out / "images" / f"{name}.png"), img)
        np.testing.assert_array_equal(io.read_label(out / "gt" / f"{name}.png"), lab)
    assert len(list((out / "images").iterdir())) == 11


def test_prepare_label_isolation_and_eval_fraction_in_the_manifest(tmp_path, monkeypatch):
    """A bad label (training or evaluation side) keeps its image in names / eval_names, out of `labelled`, with the
    reason in skipped.csv; eval_fraction splits by name; sizes are the originals; gt untouched."""
    src = tmp_path / "photos"
    write_folder(src, NAMES)
    io.write_label(src / "labels" / "img01.png", np.full((40, 60), 7, np.uint8))  # training side, class 7 > 1
    (src / "labels" / "img05.png").unlink()  # evaluation side, missing
    m = run_prepare(tmp_path / "work", monkeypatch, data={"name": "folder", "root": str(src), "num_classes": 2,
                                                          "image_size": 32, "eval_fraction": 0.3})
    out = tmp_path / "work" / "data" / "01_prepare"
    held_out = ["img05", "img06", "img09", "img11"]
    assert m["eval_names"] == held_out and m["names"] == [n for n in NAMES if n not in held_out]
    assert m["labelled"] == [n for n in m["names"] if n != "img01"] + ["img06", "img09", "img11"]
    assert not m["has_labels"] and not m["eval_has_labels"]
    assert m["sizes"] == {n: [40, 60] for n in NAMES}
    for n in NAMES:  # patch 8: 60 * 32 / 40 = 48 = 6 patches
        assert io.read_image(out / "images" / f"{n}.png").shape == (32, 48, 3)
    assert sorted(p.stem for p in (out / "gt").iterdir()) == sorted(m["labelled"])
    np.testing.assert_array_equal(io.read_label(out / "gt" / "img00.png"), io.read_label(src / "labels" / "img00.png"))
    with open(out / "skipped.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == [str(src / "labels" / "img01.png"), str(src / "labels" / "img05.png")]
    assert rows[0]["reason"] == (f"label left out of evaluation (its image is used): {src / 'labels' / 'img01.png'}: "
                                 "holds class 7 but data.num_classes is 2 (classes 0..1, 255 = ignore)")
    assert rows[1]["reason"].startswith("label left out of evaluation (its image is used): ")
    assert rows[1]["reason"].endswith("label file missing for image " + str(src / "images" / "img05.png"))


def test_prepare_refuses_a_name_in_both_splits(tmp_path, monkeypatch):
    write_folder(tmp_path / "train", ["a", "b"])
    write_folder(tmp_path / "val", ["b"])
    with pytest.raises(io.InputError, match=r"'b' is in both the training and the evaluation split"):
        run_prepare(tmp_path / "work", monkeypatch, data={"name": "folder", "root": str(tmp_path / "train"),
                                                          "eval_root": str(tmp_path / "val"), "num_classes": 2,
                                                          "image_size": 32})


def test_prepare_video_manifest_lists_the_training_videos_only(tmp_path, monkeypatch):
    m = run_prepare(tmp_path, monkeypatch, data={"name": "synthetic_video", "image_size": 32, "eval_fraction": 0.3},
                    video={"synth_clips": 4, "synth_frames": 4, "stride": 2})
    assert m["videos"] == {c: [f"{c}__f00000", f"{c}__f00002"] for c in ("clip_0000", "clip_0003")}
    assert m["eval_names"] == [f"clip_000{c}__f0000{t}" for c in (1, 2) for t in (0, 2)]
    assert m["has_labels"] and m["eval_has_labels"]


def test_synth_eval_stream_is_a_child_of_the_seed():
    assert synth.eval_stream(5).spawn_key == (synth.EVAL_STREAM,) and synth.eval_stream(5).entropy == 5
    a = synth.generate_dataset(synth.eval_stream(5), 2, 32, 2, "synth_eval")
    b = synth.generate_dataset(np.random.SeedSequence(5).spawn(2)[synth.EVAL_STREAM], 2, 32, 2, "synth_eval")
    assert [n for n, _, _ in a] == ["synth_eval_00000", "synth_eval_00001"]
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
