"""The report stage (`python -m stages.report`) on a tiny fake data folder, and the page it writes in a real headless
Chromium."""
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import yaml

from conftest import ROOT, run_stage
from pipeline import io
from pipeline.report import inspect, viz

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"


def _fake_project(d, journey_images=("b",)):
    """Every file the report stage reads, for 3 images of 32 px with 2 proposals each, metrics with 5 rows, class 2
    named in names.yaml, bundle galleries of classes 1 and 2; journey_images None keeps params.yaml's own
    report.journey_images."""
    rng = np.random.default_rng(0)
    names = ["a", "b", "c"]
    shutil.copy(ROOT / "params.yaml", d / "params.yaml")
    params = yaml.safe_load((d / "params.yaml").read_text())
    params["report"].update(gallery_size=2, tile_size=32, confusion_rows=50)
    if journey_images is not None:
        params["report"]["journey_images"] = list(journey_images)
    (d / "params.yaml").write_text(yaml.safe_dump(params))
    data = d / "data"
    props = np.zeros((32, 32), np.uint8)
    props[2:12, 2:12], props[16:30, 14:30] = 1, 2
    records, table = [], {}
    for j, n in enumerate(names):
        io.write_image(data / "01_prepare/images" / f"{n}.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        io.write_label(data / "01_prepare/gt" / f"{n}.png", np.minimum(props, 2))
        io.write_label(data / "04_proposals/masks" / f"{n}.png", props)
        io.write_label(data / "05_distill/masks" / f"{n}.png", props)  # distill.method none: the same masks
        table[n] = [{"id": 1, "score": 0.9}, {"id": 2, "score": 0.6}]
        for m in (1, 2):
            records.append({"image": n, "mask": m, "cluster": m - 1, "distance": 0.1 * j + 0.05 * m,
                            "kept": j < 2, "reliability": 0.9 - 0.2 * j, "confidence": 0.5,
                            "merged_class": m, "community": (m - 1) if j < 2 else None,
                            "community_share": 0.9 if j < 2 else None})
        lab = props.copy()
        for folder in ("07_pseudolabels/labels", "08_filter/labels", "09_merge/labels", "10_train/predictions/labels"):
            io.write_label(data / folder / f"{n}.png", lab)
    io.write_json(data / "01_prepare/manifest.json", {"names": names, "eval_names": [], "image_size": 32,
                                                     "sizes": {n: [32, 32] for n in names}, "labelled": names,
                                                     "num_classes": 3, "class_names": ["background", "disc", "square"],
                                                     "has_labels": True})
    io.write_json(data / "04_proposals/proposals.json", table)
    io.write_json(data / "05_distill/proposals.json", {n: [{**m, "detector_score": None} for m in v] for n, v in table.items()})
    io.write_json(data / "05_distill/summary.json", {"method": "none"})
    io.write_json(data / "06_cluster/clusters.json", {"k": 2, "masks": records})
    io.write_json(data / "09_merge/merge.json", {"community_class": [1, 2], "part_community": [0, 1], "masks": records})
    (data / "10_train/live/plots/metrics/train").mkdir(parents=True)
    (data / "10_train/live/plots/metrics/train/loss.tsv").write_text("timestamp\tstep\tloss\n0\t0\t1.0\n0\t1\t0.5\n")
    splits = {"eval": ["network", "network round 2"], "train": ["pseudolabels", "filter", "merge", "network"]}
    io.write_json(data / "11_evaluate/metrics.json", {s: {r: {"miou": 0.1 * i, "pixel_acc": 0.5} for i, r in enumerate(rows)}
                                                      for s, rows in splits.items()})
    io.write_json(data / "11_evaluate/per_class.json", {s: {r: {"background": 0.5, "disc": 0.2, "square": None}
                                                            for r in rows} for s, rows in splits.items()})
    conf = [[10, 1, 0], [0, 5, 2], [1, 0, 7]]
    io.write_json(data / "11_evaluate/details.json", {s: {r: {"mapping": [0, 2, 1], "confusion": conf} for r in rows}
                                                      for s, rows in splits.items()})
    viz.save_confusion(data / "11_evaluate/confusion.png", np.array(conf), ["p0", "p1", "p2"], ["b", "d", "s"], "c")
    (d / "names.yaml").write_text("2: round thing\n")
    for c in (1, 2):
        io.write_image(data / "11_bundle/classes" / f"{c}.png", np.full((8, 16, 3), 40 * c, np.uint8))
    return data


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    _fake_project(d)
    run_stage("report", d)
    return d / "data/12_report"


def test_report_stage_writes_page_journeys_galleries_and_plot_tables(built):
    assert sorted(p.name for p in (built / "journey").iterdir()) == ["b.png"]
    assert sorted(p.name for p in (built / "galleries").iterdir()) == ["clusters.png", "communities.png", "filter.png"]
    page = (built / "report.html").read_text()
    assert "network round 2 (eval)" in page and "merge (train)" in page and 'id="metrics"' in page
    assert "src=\"http" not in page and "src=\"file" not in page  # self-contained
    # 2 class galleries, confusion, curves, journey, 3 galleries
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) == 2 + 1 + 1 + 1 + 3
    classes = re.search(r'<table id="classes">.*?</table>', page, re.S).group(0)
    assert "<th>0</th><td>background</td><td>background</td><td>(no pixels)</td>" in classes
    assert "<th>2</th><td>round thing</td><td>disc</td><td><img" in classes and "names.yaml" in page
    assert [r["label_map"] for r in json.loads((built / "plots/miou.json").read_text())] == [
        "network (eval)", "network round 2 (eval)", "pseudolabels (train)", "filter (train)", "merge (train)",
        "network (train)"]
    assert len(json.loads((built / "plots/confusion.json").read_text())) == 50


def test_default_params_draw_journeys_of_the_first_images_of_any_dataset(tmp_path):
    # params.yaml's report section as shipped must fit a dataset whose names are not synth_*, e.g. a folder.
    _fake_project(tmp_path, journey_images=None)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["report"]["journey_count"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run_stage("report", tmp_path)
    assert sorted(p.name for p in (tmp_path / "data/12_report/journey").iterdir()) == ["a.png", "b.png"]


def test_unknown_journey_image_is_a_clear_error(tmp_path, monkeypatch, capsys):
    _fake_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert inspect.main(["nope", "-o", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "e.g. a, b, c" in err and not (tmp_path / "out.png").exists()
    assert inspect.main(["c", "-o", str(tmp_path / "out.png")]) == 0
    assert io.read_image(tmp_path / "out.png").shape[1] > 8 * 100  # eight panels side by side


@pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"{CHROMIUM} not found: install Debian's chromium "
                    "(apt-get install -y chromium; .ci/run does) to check the page in a real browser")
def test_report_renders_table_and_every_image_in_headless_chromium(built, tmp_path):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
           (built / "report.html").as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    dom = out.stdout
    assert out.returncode == 0 and "<table" in dom, out.stderr[-2000:]
    n_img = len(re.findall(r"<img ", dom))
    assert n_img == 8 and f'data-images-ok="{n_img}"' in dom, re.findall(r"<body[^>]*>", dom)
    metrics_table = re.search(r'<table id="metrics">.*?</table>', dom, re.S).group(0)
    assert metrics_table.count("<tr>") == 1 + 6  # header, 2 evaluation-split rows, 4 training-split rows
    assert "network round 2 (eval)" in metrics_table and "merge (train)" in metrics_table


def test_dense_mode_report_shows_cluster_maps_and_a_gallery_per_class(tmp_path):
    # the fake project's 3 images of 32 px, their left and right halves two kinds of 8-px patches (4 x 4 tokens);
    # the real cluster (dense, k 2) and pseudolabels stages, then the report
    data = _fake_project(tmp_path, journey_images=("a", "b"))
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["cluster"].update(mode="dense", k=2, n_init=2, fit_sample=100, gallery_per_cluster=2)
    params["merge"]["method"] = "none"
    params["crf"]["workers"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    rng = np.random.default_rng(0)
    kinds = rng.normal(size=(2, 16))
    writer = io.ShardWriter(data / "03_features", 2)
    for n in ("a", "b", "c"):
        tok = np.where(np.arange(4)[None, :, None] < 2, kinds[0], kinds[1]) + 0.1 * rng.normal(size=(4, 4, 16))
        writer.add(n, {"tokens": tok.astype(np.float16)})
    writer.close()
    io.write_json(data / "09_merge/merge.json", {"method": "none", "masks": []})  # the merge stage's, in dense mode
    for stage in ("cluster", "pseudolabels", "report"):
        run_stage(stage, tmp_path)
    out = data / "12_report"
    maps = io.read_image(out / "dense_maps.png")
    assert maps.shape[0] > 2 * 100 and maps.shape[1] > 3 * 100  # a row per journey image, three pictures each
    gallery = io.read_image(out / "galleries" / "dense classes.png")
    assert gallery.shape == io.read_image(data / "06_cluster/gallery.png").shape  # a row per class, 2 tiles each
    assert gallery.shape[:2] == (2 * (64 + 2), 2 * (64 + 2))
    page = (out / "report.html").read_text()
    assert "Dense cluster maps" in page and "Gallery: dense classes" in page and "one row per class" in page
    assert "Gallery: clusters" not in page  # no masks in dense mode
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) == 2 + 1 + 1 + 2 + 1 + 1  # 2 classes'
    # galleries, conf, curves, 2 journeys, the dense maps, the dense gallery
