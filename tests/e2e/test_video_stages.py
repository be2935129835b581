"""The prepare, pretrain, features and proposals stages (`python -m stages.<name>`) with motion masks on a tiny
generated video set."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import ROOT, run_stage, write_params
from pipeline import io

pytestmark = pytest.mark.slow

TINY = {
    "data": {"name": "synthetic_video", "image_size": 64},
    "video": {"synth_clips": 2, "synth_frames": 6, "stride": 2},
    "backbone": {"source": "random", "weights": "", "overrides": {"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}},
    "features": {"batch_size": 8},
    "proposals": {"refine_iters": 1, "sources": ["auto"]},
}


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("unseg_video")
    for name in ("pipeline", "stages"):
        shutil.copytree(ROOT / name, d / name, ignore=shutil.ignore_patterns("__pycache__"))
    params = write_params(d, **TINY)
    for stage in ("prepare", "pretrain", "features", "proposals"):
        run_stage(stage, d)
    return d, params


def test_prepare_writes_frames_and_which_are_consecutive(video_run):
    d, _ = video_run
    manifest = io.read_json(d / "data/01_prepare/manifest.json")
    assert manifest["videos"] == {f"clip_000{c}": [f"clip_000{c}__f0000{t}" for t in (0, 2, 4)] for c in range(2)}
    assert manifest["class_names"][1] == "disc" and manifest["has_labels"]
    assert (d / "data/01_prepare/gt/clip_0001__f00004.png").is_file()


def test_proposals_stage_puts_motion_masks_first_and_saliency_after(video_run):
    d, params = video_run
    table = io.read_json(d / "data/04_proposals/proposals.json")
    summary = io.read_json(d / "data/04_proposals/summary.json")
    assert summary["by_source"]["motion"] >= 4  # 6 frames with 1..3 moving objects each
    for name, masks in table.items():
        sources = [m["source"] for m in masks]
        assert sources == sorted(sources, key=["motion", "ncut"].index)  # auto: motion ranks first
        mask_map = io.read_label(d / "data/04_proposals/masks" / f"{name}.png")
        assert [int((mask_map == m["id"]).sum()) for m in masks] == [m["pixels"] for m in masks]
        assert (d / "data/04_proposals/motion" / f"{name}.jpg").is_file()
    on_objects = moving = 0
    for name, masks in table.items():
        gt = io.read_label(d / "data/01_prepare/gt" / f"{name}.png")
        mask_map = io.read_label(d / "data/04_proposals/masks" / f"{name}.png")
        m = np.isin(mask_map, [r["id"] for r in masks if r["source"] == "motion"])
        on_objects += int((gt[m] > 0).sum())
        moving += int(m.sum())
    assert on_objects > 0.8 * moving  # motion masks lie on the objects (measured 0.96 at 64 px)


def test_motion_on_still_images_is_a_clear_error_and_auto_takes_saliency_there(video_run, tmp_path):
    """[motion, ncut] on still images stops before any work, naming the setting; [auto] there is [saliency]."""
    d, params = video_run
    work = tmp_path / "still"
    shutil.copytree(d, work)
    params = dict(params, data=dict(params["data"], name="synthetic", synth_images=8),
                  proposals=dict(params["proposals"], sources=["motion", "ncut"]))
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_stage("prepare", work)
    out = subprocess.run([sys.executable, "-m", "stages.proposals"], cwd=work, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "proposals.sources' includes motion but data.name is 'synthetic'" in out.stderr
    params["proposals"]["sources"] = ["auto"]
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in ("features", "saliency", "proposals"):  # the still images' own features and maps
        run_stage(stage, work)
    summary = json.loads((work / "data" / "04_proposals" / "summary.json").read_text())
    assert list(summary["by_source"]) == ["saliency"]
