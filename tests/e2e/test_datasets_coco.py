"""COCO 2017 loader on a tiny COCO layout written in a temporary folder, and mask AP50 against COCO instances."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import section, write_params
from pipeline import io
from pipeline.config import ConfigError
from pipeline.data import coco, datasets
from pipeline.evaluate import mask_ap

pytestmark = pytest.mark.slow  # one test runs the prepare stage as a process
SIZE = 32
MISSING = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}  # COCO's unused category ids
CAT_IDS = [c for c in range(1, 91) if c not in MISSING]  # the 80 real ones: 1..90 with gaps


def rect(x0, y0, x1, y1):
    """A polygon covering pixels x0..x1-1, y0..y1-1 (pycocotools rasterises [x0, x1) x [y0, y1))."""
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def uncompressed_rle(mask):
    """(H, W) bool -> COCO's uncompressed RLE (column-major runs, starting with zeros), as in crowd annotations."""
    flat = mask.T.reshape(-1).astype(np.uint8)
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return {"counts": [int(c) for c in counts], "size": list(mask.shape)}


def crowd_mask():
    m = np.zeros((SIZE, SIZE), bool)
    m[20:30, 18:31] = True
    m[25, 18] = False  # not a rectangle: checks the RLE decoding pixel by pixel
    return m


@pytest.fixture
def coco_root(tmp_path):
    """annotations/instances_val2017.json (80 categories, polygons + an RLE crowd) and val2017/*.jpg."""
    rng = np.random.default_rng(0)
    (tmp_path / "val2017").mkdir()
    images = []
    for img_id in (139, 285, 632):
        name = f"{img_id:012d}.jpg"
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(tmp_path / "val2017" / name)
        images.append({"id": img_id, "file_name": name, "height": SIZE, "width": SIZE})
    anns = [
        {"image_id": 139, "category_id": 1, "segmentation": rect(2, 2, 16, 16), "area": 196.0, "iscrowd": 0},   # person
        {"image_id": 139, "category_id": 18, "segmentation": rect(10, 10, 20, 18), "area": 80.0, "iscrowd": 0},  # dog, on top
        {"image_id": 139, "category_id": 1, "segmentation": uncompressed_rle(crowd_mask()), "area": 129.0, "iscrowd": 1},
        {"image_id": 139, "category_id": 90, "segmentation": rect(24, 22, 28, 26), "area": 16.0, "iscrowd": 0},  # in crowd
        {"image_id": 632, "category_id": 13, "segmentation": rect(0, 0, 8, 4), "area": 32.0, "iscrowd": 0},     # stop sign
    ]
    for k, a in enumerate(anns, start=1):
        a.update(id=k, bbox=[0, 0, 1, 1])
    cats = [{"id": c, "name": f"cat{c}", "supercategory": "x"} for c in CAT_IDS]
    cats[0]["name"] = "person"
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": cats}))
    # train2017: a wide 48x32 (W x H) image with a person, and a square one without annotations
    (tmp_path / "train2017").mkdir()
    train_images = []
    for img_id, (h, w) in ((9, (SIZE, 48)), (25, (SIZE, SIZE))):
        name = f"{img_id:012d}.jpg"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / "train2017" / name)
        train_images.append({"id": img_id, "file_name": name, "height": h, "width": w})
    train_anns = [{"id": 1, "image_id": 9, "category_id": 1, "segmentation": rect(30, 4, 46, 20), "area": 256.0,
                   "iscrowd": 0, "bbox": [30, 4, 16, 16]}]
    (tmp_path / "annotations" / "instances_train2017.json").write_text(json.dumps(
        {"images": train_images, "annotations": train_anns, "categories": cats}))
    datasets.coco_index.cache_clear()
    return tmp_path


def expected_139():
    want = np.zeros((SIZE, SIZE), np.uint8)
    want[2:16, 2:16] = 1                # person -> 1
    want[10:18, 10:20] = 17             # dog, COCO id 18 -> 17 (ids 12 is unused)
    want[crowd_mask()] = 255            # crowd ignored
    want[22:26, 24:28] = 80             # toothbrush, COCO id 90 -> 80, labelled inside the crowd
    return want


def cfg(root, **kw):
    return section("data", **{"name": "coco", "root": str(root), "split": "val", "num_classes": 81, "image_size": SIZE,
                              **kw})


def test_coco_semantic_maps_pixel_by_pixel(coco_root):
    samples = list(datasets.load(cfg(coco_root), 0))
    assert [s[0] for s in samples] == ["000000000139", "000000000285", "000000000632"]
    np.testing.assert_array_equal(samples[0][2], expected_139())
    np.testing.assert_array_equal(samples[1][2], np.zeros((SIZE, SIZE), np.uint8))  # no annotations: background
    want = np.zeros((SIZE, SIZE), np.uint8)
    want[0:4, 0:8] = 12  # stop sign, COCO id 13 -> 12
    np.testing.assert_array_equal(samples[2][2], want)
    assert samples[0][1].shape == (SIZE, SIZE, 3)


def test_coco_max_images_and_class_names(coco_root):
    c = cfg(coco_root, max_images=1)
    assert [s[0] for s in datasets.load(c, 0)] == ["000000000139"]
    names = datasets.class_names(c)
    assert len(names) == 81 and names[0] == "background" and names[1] == "person" and names[80] == "cat90"


def test_coco_missing_annotations_say_where_they_go(tmp_path):
    datasets.coco_index.cache_clear()
    with pytest.raises(io.InputError, match=r"annotations/instances_val2017\.json.*val2017"):
        list(datasets.load(cfg(tmp_path), 0))


def test_coco_config_needs_81_classes_and_a_coco_split():
    with pytest.raises(ConfigError, match="data.num_classes"):
        section("data", name="coco", root="x", num_classes=21)
    with pytest.raises(ConfigError, match="data.split"):
        section("data", name="coco", root="x", num_classes=81, split="trainaug")


def test_instances_keep_masks_crowd_and_categories_at_the_original_size(coco_root):
    gt = datasets.coco_instances(cfg(coco_root, image_size=2 * SIZE))  # image_size changes nothing here
    assert [im["file_name"] for im in gt["images"]] == ["000000000139.png", "000000000285.png", "000000000632.png"]
    assert all((im["height"], im["width"]) == (SIZE, SIZE) for im in gt["images"])
    anns = [a for a in gt["annotations"] if a["image_id"] == 1]
    assert [(a["category_id"], a["iscrowd"]) for a in anns] == [(1, 0), (18, 0), (1, 1), (90, 0)]
    from pycocotools import mask as mask_utils
    crowd = mask_utils.decode(anns[2]["segmentation"]).astype(bool)
    np.testing.assert_array_equal(crowd, crowd_mask())
    assert anns[0]["area"] == 196


def square_gt(masks, crowd=()):
    """Hand-made COCO gt on one 32x32 image: non-crowd `masks` and crowd `crowd`, all category 1."""
    anns = []
    for m, c in [(m, 0) for m in masks] + [(m, 1) for m in crowd]:
        rle = coco.encode(m)
        anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": 1, "iscrowd": c, "segmentation": rle,
                     "area": float(m.sum()), "bbox": [0, 0, 1, 1]})
    return {"images": [{"id": 1, "file_name": "a.png", "height": SIZE, "width": SIZE}], "annotations": anns,
            "categories": [{"id": 1, "name": "thing"}]}


def box(y0, y1, x0, x1):
    m = np.zeros((SIZE, SIZE), bool)
    m[y0:y1, x0:x1] = True
    return m


def coco_ap50(gt: dict, maps: dict[str, np.ndarray], scores: dict[str, list[float]]) -> float | None:
    """mask_ap's AP50 of index maps {name: (H, W)} scored {name: [score of mask 1, ...]} against COCO instances,
    as the evaluate stage scores COCO (every pixel kept: crowd regions are COCOeval's to ignore)."""
    return mask_ap.ap50(gt, {n: mask_ap.detections(m, scores[n], None) for n, m in maps.items()})


def test_mask_ap50_perfect_half_and_wrong():
    a, b = box(0, 10, 0, 10), box(15, 30, 15, 30)
    gt = square_gt([a, b])
    assert coco_ap50(gt, {"a": (a * 1 + b * 2).astype(np.uint8)}, {"a": [0.9, 0.8]}) == pytest.approx(1.0)
    # recall reaches 0.5 at precision 1: 51 of COCO's 101 recall points -> 51 / 101
    assert coco_ap50(gt, {"a": a.astype(np.uint8)}, {"a": [0.9]}) == pytest.approx(51 / 101)
    off = {"a": box(0, 10, 6, 16).astype(np.uint8)}  # IoU with a = 40 / 160 < 0.5
    assert coco_ap50(gt, off, {"a": [0.9]}) == 0.0
    assert mask_ap.ap50(gt, {}) == 0.0


def test_evaluate_scores_a_mask_folder_at_the_original_size_by_its_ids_scores(tmp_path):
    """scoring.score_image on one image: a folder's masks (prepared at 16 px, scored at the ground truth's 32 px)
    with the scores of proposals.json by mask id (listed out of order): the right mask scored higher -> AP50 1."""
    from pipeline.evaluate import scoring

    a = box(0, 16, 0, 16)
    gt = square_gt([a])
    io.write_label(tmp_path / "prepare/gt/a.png", a.astype(np.uint8))
    small = np.zeros((16, 16), np.uint8)
    small[0:8, 0:8], small[8:16, 8:16] = 1, 2  # mask 1 on a, mask 2 on b (no instance)
    io.write_label(tmp_path / "masks/masks/a.png", small)

    def ap(table: dict) -> float | None:
        r = scoring.score_image(("a", None, {"masks": scoring.mask_scores(table, "a")}), tmp_path / "prepare", {},
                                2, 2, None, None, {"masks": tmp_path / "masks"}, components=False)
        return mask_ap.ap50(gt, {"a": r["masks"]["masks"][2]})

    assert ap({"a": [{"id": 2, "score": 0.2}, {"id": 1, "score": 0.9}]}) == pytest.approx(1.0)
    assert ap({"a": [{"id": 2, "score": 0.9}, {"id": 1, "score": 0.2}]}) == pytest.approx(0.5)  # FP first: 1/2


def test_mask_ap50_ignores_detections_on_crowd_regions():
    a, crowd = box(0, 10, 0, 10), box(15, 30, 15, 30)
    gt = square_gt([a], crowd=[crowd])
    assert coco_ap50(gt, {"a": (a * 1 + crowd * 2).astype(np.uint8)}, {"a": [0.5, 0.9]}) == pytest.approx(1.0)
    assert mask_ap.ap50(square_gt([], crowd=[crowd]), {}) is None


def test_coco_fits_on_train_and_holds_out_val_capped_by_max_eval_images(coco_root):
    c = cfg(coco_root, split="train", max_images=1, max_eval_images=2)
    [wide] = datasets.load(c, 0)
    assert wide.name == "000000000009" and wide.size == (SIZE, 48) and wide.image.shape == (SIZE, 48, 3)
    want = np.zeros((SIZE, 48), np.uint8)
    want[4:20, 30:46] = 1  # the person, at the original size
    np.testing.assert_array_equal(wide.label, want)
    assert [s.name for s in datasets.load_eval(c, 0, "val")] == ["000000000139", "000000000285"]
    assert list(datasets.load_eval(c, 0, "")) == []


def test_prepare_stage_writes_coco_maps_instances_and_manifest(coco_root, tmp_path):
    """Fit on train2017, score val2017: both prepared, the instances (the proposals' AP50) of the training split,
    everything at the original size."""
    work = tmp_path / "work"
    work.mkdir()
    write_params(work, data={"name": "coco", "root": str(coco_root), "num_classes": 81, "image_size": SIZE,
                             "split": "train"}, evaluate={"split": "val"})
    out = subprocess.run([sys.executable, "-m", "stages.prepare"], cwd=work,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    prep = work / "data" / "01_prepare"
    manifest = json.loads((prep / "manifest.json").read_text())
    assert manifest["names"] == ["000000000009", "000000000025"] and manifest["has_labels"]
    assert manifest["eval_names"] == ["000000000139", "000000000285", "000000000632"] and manifest["eval_has_labels"]
    assert manifest["sizes"]["000000000009"] == [SIZE, 48] and manifest["sizes"]["000000000139"] == [SIZE, SIZE]
    assert manifest["gt_instances"] == "gt_instances.json" and manifest["class_names"][1] == "person"
    np.testing.assert_array_equal(io.read_label(prep / "gt" / "000000000139.png"), expected_139())
    assert io.read_label(prep / "gt" / "000000000009.png").shape == (SIZE, 48)
    assert io.read_image(prep / "images" / "000000000009.png").shape == (SIZE, 48, 3)
    gt = json.loads((prep / "gt_instances.json").read_text())
    assert [(im["file_name"], im["height"], im["width"]) for im in gt["images"]] == \
        [("000000000009.png", SIZE, 48), ("000000000025.png", SIZE, SIZE)]
    assert len(gt["annotations"]) == 1 and gt["annotations"][0]["area"] == 256 and len(gt["categories"]) == 80
