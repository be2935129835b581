"""The held-out protocol end to end on small data: the hub path users with internet take (exercised offline), a generated
VOCdevkit fitted on train and scored on val through the whole DAG, and label isolation (prepare through train give
byte-identical outputs with the ground truth removed after prepare)."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from test_datasets_voc import palette_png
from test_e2e import DVC, repro_project

from conftest import write_params

pytestmark = pytest.mark.slow
STAGES = ["prepare", "pretrain", "features", "saliency", "proposals", "distill", "cluster", "pseudolabels", "filter", "merge",
          "train"]
# A 1-block ViT (patch 8, width 32) with random weights: the method stages' work stays tiny.
RANDOM_TINY = {"source": "random", "overrides": {"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}}


def stage(work, name: str, env: dict | None = None) -> str:
    """`python -m stages.<name>` in `work` (conftest's PYTHONPATH finds this checkout's code) -> its output."""
    out = subprocess.run([sys.executable, "-m", f"stages.{name}"], check=False, cwd=work, capture_output=True,
                         text=True, timeout=600, env=env or os.environ.copy())
    assert out.returncode == 0, f"stage {name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


# ---------------------------------------------------------------- 1. the hub path, offline

HUB_NAME = "vit_small_patch8_224.dino"
REVISION = "0123456789abcdef0123456789abcdef01234567"  # any 40 hex digits: refs/main names the snapshot


def fill_hf_cache(home) -> dict[str, torch.Tensor]:
    """A Hugging Face cache under `home` (an HF_HOME) as the hub leaves it after downloading timm/<HUB_NAME>:
    hub/models--timm--<name>/refs/main -> the revision, snapshots/<revision>/model.safetensors = a state dict of
    vit_small_patch8_224 with random values (seed 0). timm needs no config.json for a name it knows (checked)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = timm.create_model("vit_small_patch8_224", pretrained=False, num_classes=0).state_dict()
    state = {k: v.contiguous() for k, v in state.items()}
    repo = home / "hub" / f"models--timm--{HUB_NAME}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    (repo / "snapshots" / REVISION).mkdir(parents=True)
    save_file(state, str(repo / "snapshots" / REVISION / "model.safetensors"))
    return state


def test_hub_backbone_offline_from_a_local_hf_cache_on_non_square_images(tmp_path):
    """backbone.source hub with HF_HUB_OFFLINE=1: prepare, pretrain and features run on non-square images and the
    features are exactly those of the weights in the cache (recomputed here with timm from the same state dict).
    data.image_size 64, not 224 and not the issue's example 320: the smallest short side that keeps the check
    meaningful (8 x 12 and 11 x 8 patch grids, position embeddings resampled from 28 x 28) at a fraction of the
    time on a CPU."""
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    from pipeline import io
    from pipeline.backbone.factory import normalize, to_tensor

    home = tmp_path / "hf"
    state = fill_hf_cache(home)
    src = tmp_path / "photos" / "images"
    src.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, (h, w) in {"wide": (100, 150), "tall": (120, 90), "wide2": (100, 150)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(src / f"{name}.png")
    work = tmp_path / "work"
    size = 64
    write_params(work, data={"name": "folder", "root": str(src.parent), "image_size": size},
                 backbone={"source": "hub", "name": HUB_NAME, "overrides": {}, "hf_cache": str(home)},
                 features={"batch_size": 2})
    # Read when huggingface_hub is imported, so set before the stage's Python starts; no network is tried.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(home)}
    for name in ("prepare", "pretrain", "features"):
        stage(work, name, env)

    manifest = io.read_manifest(work / "data/01_prepare")
    assert manifest["names"] == ["tall", "wide", "wide2"]
    assert manifest["sizes"] == {"tall": [120, 90], "wide": [100, 150], "wide2": [100, 150]}
    names, tokens = io.read_shards(work / "data/03_features", "tokens")
    assert names == manifest["names"]
    model = timm.create_model("vit_small_patch8_224", pretrained=False, num_classes=0, dynamic_img_size=True,
                              img_size=size)
    model.load_state_dict(checkpoint_filter_fn(dict(state), model), strict=True)  # as timm's pretrained loading
    model.eval()
    for name, got in zip(names, tokens):
        image = io.read_image(work / "data/01_prepare/images" / f"{name}.png")
        h, w = image.shape[:2]
        assert min(h, w) == size and (h, w) == {"tall": (88, 64)}.get(name, (64, 96))
        assert got.shape == (h // 8, w // 8, 384) and got.dtype == np.float16
        with torch.no_grad():
            want = model.forward_features(normalize(to_tensor(image[None])))[0, 1:].reshape(h // 8, w // 8, -1)
        np.testing.assert_allclose(got.astype(np.float32), want.numpy().astype(np.float16).astype(np.float32),
                                   rtol=2e-3, atol=2e-3)


# ---------------------------------------------------------------- 2. a VOCdevkit through the whole DAG

VOC_TRAIN = {"2007_000032": (48, 72), "2007_000039": (72, 48), "2007_000063": (56, 80), "2007_000068": (64, 96),
             "2007_000121": (80, 56), "2007_000123": (60, 90), "2007_000129": (90, 60), "2007_000170": (50, 75)}
VOC_VAL = {"2007_000033": (54, 81), "2007_000042": (81, 54), "2007_000061": (66, 88), "2007_000175": (70, 100)}
VOC_TINY = {"data": {"name": "voc2012", "split": "train", "num_classes": 21, "image_size": 64},
            "evaluate": {"split": "val", "baseline_pixels": 2000, "baseline_kmeans_init": 1},
            "backbone": RANDOM_TINY, "features": {"batch_size": 8},
            "proposals": {"refine_iters": 1}, "cluster": {"k": 3, "n_init": 2}, "filter": {"folds": 2},
            "merge": {"parts": 8},
            "train": {"epochs": 1, "batch_size": 8, "decoder_dim": 32, "rounds": 1, "workers": 0}}


def write_vocdevkit(root, splits: dict[str, dict[str, tuple[int, int]]], seed: int = 0) -> None:
    """root/VOC2012 as the VOC 2012 tarball lays it out: per image a JPEG of its (H, W) (a smooth background and one
    or two objects, each a flat colour of its class with some noise) and its palette label at the same size (the
    objects' classes 1..20, a 1-pixel border of 255 around each, 0 elsewhere); ImageSets/Segmentation/<split>.txt."""
    voc = root / "VOC2012"
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (21, 3))
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    for split, images in splits.items():
        for name, (h, w) in images.items():
            yy, xx = np.mgrid[:h, :w]
            image = np.stack([60 + 60 * yy / h, 80 + 40 * xx / w, np.full((h, w), 90.0)], -1)
            label = np.zeros((h, w), np.uint8)
            for _ in range(rng.integers(1, 3)):
                cls = int(rng.integers(1, 21))
                oh, ow = int(rng.integers(h // 4, h // 2)), int(rng.integers(w // 4, w // 2))
                y, x = int(rng.integers(1, h - oh - 1)), int(rng.integers(1, w - ow - 1))
                label[y - 1:y + oh + 1, x - 1:x + ow + 1] = 255
                label[y:y + oh, x:x + ow] = cls
                image[y:y + oh, x:x + ow] = colours[cls]
            image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(voc / "JPEGImages" / f"{name}.jpg", quality=95)
            palette_png(voc / "SegmentationClass" / f"{name}.png", label)
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{n}\n" for n in images))


@pytest.fixture(scope="module")
def voc_repo(tmp_path_factory):
    """The real `dvc repro` of every stage in a temporary git repository, on a generated VOCdevkit of 8 train and 4
    val images of different non-square sizes: fits on train, scores val."""
    if DVC is None:
        pytest.skip("dvc is not installed (pip install -r requirements.txt)")
    base = tmp_path_factory.mktemp("voc")
    write_vocdevkit(base / "VOCdevkit", {"train": VOC_TRAIN, "val": VOC_VAL})
    d = base / "unseg"
    d.mkdir()
    return d, repro_project(d, {**VOC_TINY, "data": {**VOC_TINY["data"], "root": str(base / "VOCdevkit")}})


def test_vocdevkit_runs_the_whole_dag_fitting_on_train_and_scoring_val_at_the_original_size(voc_repo):
    from pipeline import io

    d, log = voc_repo
    for s in STAGES + ["evaluate", "bundle", "report"]:
        assert f"Running stage '{s}'" in log
    manifest = io.read_manifest(d / "data/01_prepare")
    assert manifest["names"] == list(VOC_TRAIN) and manifest["eval_names"] == list(VOC_VAL)
    assert manifest["sizes"] == {n: list(s) for n, s in {**VOC_TRAIN, **VOC_VAL}.items()}
    for name, (h, w) in {**VOC_TRAIN, **VOC_VAL}.items():  # both splits predicted, at the ground truth's size
        assert io.read_label(d / "data/10_train/predictions/labels" / f"{name}.png").shape == (h, w), name
        assert io.read_label(d / "data/01_prepare/gt" / f"{name}.png").shape == (h, w), name
        prepared = io.read_image(d / "data/01_prepare/images" / f"{name}.png").shape[:2]
        assert min(prepared) == 64 and prepared[0] % 8 == prepared[1] % 8 == 0 and \
            (prepared[0] > prepared[1]) == (h > w), (name, prepared)

    # Nothing of the val images was fitted on: the label-free stages saw the training split only.
    train = set(VOC_TRAIN)
    for folder in ("data/04_proposals/masks", "data/07_pseudolabels/labels", "data/08_filter/labels",
                   "data/09_merge/labels"):
        assert {p.stem for p in (d / folder).iterdir()} == train, folder
    shards = lambda f: [n for s in json.loads((f / "index.json").read_text())["shards"] for n in s["names"]]
    assert shards(d / "data/03_features") == list(VOC_TRAIN)
    assert shards(d / "data/03_features/eval") == list(VOC_VAL)  # for evaluate's feature baseline only
    assert list(json.loads((d / "data/04_proposals/proposals.json").read_text())) == list(VOC_TRAIN)
    for f in ("data/06_cluster/clusters.json", "data/08_filter/filter.json"):
        masks = json.loads((d / f).read_text())["masks"]
        assert masks and {m["image"] for m in masks} <= train, f

    metrics = json.loads((d / "data/11_evaluate/metrics.json").read_text())
    assert list(metrics) == ["eval", "train", "proposals_mask_ap50", "distill_mask_ap50",  # VOC's components
                                "proposals_fg_iou", "distill_fg_iou", "cluster_k"]
    assert list(metrics["eval"]) == ["network", "network + CRF", "baseline_colour_kmeans", "baseline_feature_kmeans"]
    assert list(metrics["train"]) == ["pseudolabels", "filter", "merge", "network", "network + CRF"]
    assert all(0 <= row["miou"] <= 1 for split in ("eval", "train") for row in metrics[split].values())
    assert all(0 <= metrics[k] <= 1 for k in ("proposals_mask_ap50", "distill_mask_ap50"))
    table = (d / "data/11_evaluate/table.md").read_text()
    assert "cluster.k + 1 = 4 predicted ids (background included) but the ground truth has 21 classes" in table


# ---------------------------------------------------------------- 3. label isolation

ISOLATION_TINY = {"data": {"synth_images": 16, "synth_eval_images": 4, "image_size": 64}, "backbone": RANDOM_TINY,
                  "features": {"batch_size": 8}, "proposals": {"refine_iters": 1}, "cluster": {"k": 3, "n_init": 2},
                  "filter": {"folds": 2}, "merge": {"parts": 8},
                  "train": {"epochs": 1, "batch_size": 8, "decoder_dim": 32, "rounds": 1, "workers": 0}}


def stage_outputs(work) -> dict[str, str]:
    """sha256 of every file pretrain .. train wrote (data/02_pretrain .. data/10_train) -> {relative path: digest};
    left out: data/10_train/timings.json (the seconds spent, not an output), which differs from run to run."""
    digests = {}
    for folder in sorted((work / "data").iterdir()):
        if folder.name < "02" or folder.name > "10_train":
            continue
        for p in sorted(folder.rglob("*")):
            rel = p.relative_to(work).as_posix()
            if p.is_file() and rel != "data/10_train/timings.json":
                digests[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return digests


def test_label_isolation_prepare_through_train_are_byte_identical_without_the_ground_truth(tmp_path):
    """Run prepare .. train, then copy data/01_prepare into a second project, delete its gt/ (the only place ground
    truth lives after prepare) and run pretrain .. train there: every output is byte-identical, so no stage before
    evaluate reads a label."""
    first, second = tmp_path / "with_gt", tmp_path / "without_gt"
    write_params(first, **ISOLATION_TINY)
    write_params(second, **ISOLATION_TINY)
    for name in STAGES:
        stage(first, name)
    assert len(list((first / "data/01_prepare/gt").iterdir())) == 20  # both splits had ground truth
    shutil.copytree(first / "data/01_prepare", second / "data/01_prepare")
    shutil.rmtree(second / "data/01_prepare/gt")
    (second / "data/01_prepare/gt_instances.json").unlink(missing_ok=True)  # COCO's instance masks (none here)
    for name in STAGES[1:]:
        stage(second, name)
    want, got = stage_outputs(first), stage_outputs(second)
    assert {p.split("/")[1] for p in want} == {"02_pretrain", "03_features", "03_saliency", "04_proposals", "05_distill", "06_cluster",
                                               "07_pseudolabels", "08_filter", "09_merge", "10_train"}
    assert any(p.startswith("data/10_train/predictions/labels/synth_eval_") for p in want)  # the held-out split too
    assert list(got) == list(want)
    assert [p for p in want if got[p] != want[p]] == []
