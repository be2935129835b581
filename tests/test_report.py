"""The report stage's library (galleries, journey, HTML) and the page itself in a real headless Chromium."""
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import ROOT
from pipeline import io
from pipeline.method import merge
from pipeline.report import inspect, viz
from pipeline.report import page as report

CHROMIUM = "/usr/bin/chromium"


def test_colorize_is_the_voc_palette_with_white_ignore():
    rgb = viz.colorize(np.array([[0, 1, 2, 3, 255]], np.uint8))
    assert rgb[0].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [255, 255, 255]]


def test_typical_members_orders_and_never_repeats_a_member():
    values = np.array([0.5, 0.1, 0.9, 0.3, 0.7])
    groups = np.array([0, 0, 0, 1, 0])
    most, least = report.typical_members(values, groups, 0, 2)
    assert most.tolist() == [1, 0] and least.tolist() == [2, 4]
    most, least = report.typical_members(values, groups, 0, 3)
    assert most.tolist() == [1, 0, 4] and least.tolist() == [2]
    most, least = report.typical_members(values, groups, 0, 2, smaller_is_typical=False)
    assert most.tolist() == [2, 4] and least.tolist() == [1, 0]


def test_majority_share_gives_each_mask_its_community_and_share():
    top, share = merge.majority_share([np.array([2, 2, 1]), np.array([], np.int64), np.array([0])])
    assert top.tolist() == [2, -1, 0]
    assert np.allclose(share, [2 / 3, 0.0, 1.0])


def test_gt_is_recoloured_to_the_matched_prediction_class():
    gt = np.array([[0, 1, 2, 3, 255]], np.uint8)
    out = report.gt_in_prediction_colours(gt, mapping=[0, 2, -1, 1], n_pred=4)
    assert out.tolist() == [[0, 3, 1, 4 + 3, 255]]


def test_confusion_rows_follow_the_pixel_counts():
    conf = np.array([[6, 0], [1, 3]])
    rows = report.confusion_rows(conf, ["p0", "p1"], ["g0", "g1"], 10)
    pairs = [(r["predicted"], r["actual"]) for r in rows]
    assert [pairs.count(k) for k in [("p0", "g0"), ("p0", "g1"), ("p1", "g0"), ("p1", "g1")]] == [6, 0, 1, 3]
    rows = report.confusion_rows(conf, ["p0", "p1"], ["g0", "g1"], 7)  # 4.2 0 .7 2.1 -> largest remainder
    pairs = [(r["predicted"], r["actual"]) for r in rows]
    assert len(rows) == 7 and pairs.count(("p1", "g0")) == 1 and pairs.count(("p0", "g0")) == 4


def test_table_shows_whatever_rows_and_columns_are_present():
    t = report.table_html({"merge": {"miou": 0.5}, "network round 2": {"miou": 0.25, "rounds": 2}}, "label map", "m")
    assert "<th>network round 2</th><td>0.250</td><td>2</td>" in t
    assert "<th>merge</th><td>0.500</td><td></td>" in t
    assert t.count("<tr>") == 3


def test_final_row_is_the_headline_splits_network_row_else_its_last_non_baseline_label_map():
    details = {"eval": {"network": {"mapping": []}, "network + CRF": {"mapping": []},
                        "network round 2": {"mapping": []}, "baseline_colour_kmeans": {"mapping": []}},
               "train": {"pseudolabels": {"mapping": []}, "merge": {"mapping": []}}}
    assert inspect.final_row(details) == ("eval", "network")  # what the journey draws, not the CRF's maps
    assert inspect.final_row({"train": details["train"]}) == ("train", "merge")  # no evaluation split, no network
    assert inspect.final_row({}) is None


def test_split_rows_name_each_row_with_its_split_in_order():
    metrics = {"eval": {"network": {"miou": 0.4}, "baseline_colour_kmeans": {"miou": 0.2}},
               "train": {"merge": {"miou": 0.3}}, "proposals_mask_ap50": 0.5}
    assert list(report.split_rows(metrics)) == ["network (eval)", "baseline_colour_kmeans (eval)", "merge (train)"]
    assert report.miou_rows(metrics)[0] == {"label_map": "network (eval)", "miou": 0.4}


def test_journey_panels_say_what_each_stage_did_to_each_mask():
    img = np.full((32, 32, 3), 100, np.uint8)
    props = np.zeros((32, 32), np.uint8)
    props[2:10, 2:10], props[20:30, 20:30] = 1, 2
    masks = [{"mask": 1, "score": 0.91, "cluster": 0, "distance": 0.2, "kept": True, "reliability": 0.8,
              "merged_class": 3, "community": 0},
             {"mask": 2, "score": 0.4, "cluster": 1, "distance": 0.7, "kept": False, "reliability": 0.1,
              "merged_class": 2, "community": None}]
    lab = np.where(props == 1, 1, np.where(props == 2, 2, 0)).astype(np.uint8)
    panels = report.journey_panels(img, props, masks, lab, lab, lab, None, None)
    notes = {p.title: [n[2] for n in p.notes] for p in panels}
    assert notes["proposals (contrast score)"] == ["#1 0.91", "#2 0.40"]
    assert notes["cluster (distance to centre)"] == ["1: d 0.20", "2: d 0.70"]
    assert notes["filtered (reliability)"] == ["kept 0.80", "dropped 0.10"]
    assert notes["merged (community)"] == ["1->3 c0"]  # the dropped mask takes no part in merging
    assert "network prediction" not in notes and len(panels) == 6
    x, y = panels[1].notes[0][:2]
    assert props[int(y), int(x)] == 1  # the note sits on its mask
    # distill.method maskrcnn: the proposals (their own map and scores) first, then the detector's masks
    raw = np.zeros((32, 32), np.uint8)
    raw[0:12, 0:12] = 1
    panels = report.journey_panels(img, props, masks, lab, lab, lab, None, None, (raw, {1: 0.55}))
    notes = {p.title: [n[2] for n in p.notes] for p in panels}
    assert [p.title for p in panels[:4]] == ["image", "proposals (contrast score)", "distilled (detector score)",
                                             "cluster (distance to centre)"]
    assert notes["proposals (contrast score)"] == ["#1 0.55"] and notes["distilled (detector score)"] == ["#1 0.91", "#2 0.40"]


def test_journey_figure_shows_the_legend_colours():
    lab = np.zeros((32, 32), np.uint8)
    lab[8:24, 8:24] = 1
    legend = report.class_legend(3, [0, 2, 1], ["background", "disc", "square"])
    assert [name for name, _ in legend] == ["0 background ~ background", "1 cluster 1 ~ square",
                                            "2 cluster 2 ~ disc", "255 ignored"]
    pic = report.journey_figure([report.Panel("a", viz.colorize(lab))], legend, "t")
    colours = {tuple(c) for c in pic.reshape(-1, 3)}
    for _, c in legend[1:3]:
        assert tuple(int(v) for v in c) in colours


def test_read_curves_reads_dvclive_tsv(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "loss.tsv").write_text("timestamp\tstep\tloss\n1\t0\t2.5\n2\t1\t1.5\n")
    curves = inspect.read_curves(tmp_path)
    assert list(curves) == ["train/loss"] and curves["train/loss"][1].tolist() == [2.5, 1.5]
    assert inspect.read_curves(tmp_path / "absent") == {}


# ---------------------------------------------------------------- a tiny fake data folder, the real stage on it

def _fake_project(d, journey_images=("b",)):
    """Every file the report stage reads, for 3 images of 32 px with 2 proposals each, metrics with 5 rows;
    journey_images None keeps params.yaml's own report.journey_images."""
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
    return data


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    _fake_project(d)
    out = subprocess.run([sys.executable, "-m", "stages.report"], cwd=d, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return d / "data/12_report"


def test_report_stage_writes_page_journeys_galleries_and_plot_tables(built):
    assert sorted(p.name for p in (built / "journey").iterdir()) == ["b.png"]
    assert sorted(p.name for p in (built / "galleries").iterdir()) == ["clusters.png", "communities.png", "filter.png"]
    page = (built / "report.html").read_text()
    assert "network round 2 (eval)" in page and "merge (train)" in page and 'id="metrics"' in page
    assert "src=\"http" not in page and "src=\"file" not in page  # self-contained
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) == 1 + 1 + 1 + 3  # conf, curves, journey, 3 galleries
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
    out = subprocess.run([sys.executable, "-m", "stages.report"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
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
    assert n_img == 6 and f'data-images-ok="{n_img}"' in dom, re.findall(r"<body[^>]*>", dom)
    metrics_table = re.search(r'<table id="metrics">.*?</table>', dom, re.S).group(0)
    assert metrics_table.count("<tr>") == 1 + 6  # header, 2 evaluation-split rows, 4 training-split rows
    assert "network round 2 (eval)" in metrics_table and "merge (train)" in metrics_table


def test_mask_crop_tile_centres_the_mask_in_colour_and_greys_the_rest():
    img = np.zeros((64, 64, 3), np.uint8)
    img[..., 0] = 200  # red everywhere
    mask = np.zeros((64, 64), bool)
    mask[40:50, 10:20] = True
    tile = report.mask_crop_tile(img, mask, np.array([0, 0, 255], np.uint8), 32)
    assert tile.shape == (32, 32, 3)
    assert tuple(tile[16, 16]) == (200, 0, 0)  # the mask, centred, in its own colours
    assert tile[1, 1, 0] == tile[1, 1, 1] == tile[1, 1, 2]  # outside: grey
    assert (tile.reshape(-1, 3) == [0, 0, 255]).all(1).any()  # outlined in the given colour
