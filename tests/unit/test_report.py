"""The report stage's library: colours, galleries, the journey panels and figure, tables, curves."""
import numpy as np

from pipeline import io
from pipeline.method import merge
from pipeline.report import inspect, viz
from pipeline.report import page as report


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
    names = {**io.default_names(3), 2: "round thing"}  # names.yaml named class 2
    legend = report.class_legend(names, [0, 2, 1], ["background", "disc", "square"])
    assert [name for name, _ in legend] == ["0 background ~ background", "1 class_1 ~ square",
                                            "2 round thing ~ disc", "255 ignored"]
    pic = report.journey_figure([report.Panel("a", viz.colorize(lab))], legend, "t")
    colours = {tuple(c) for c in pic.reshape(-1, 3)}
    for _, c in legend[1:3]:
        assert tuple(int(v) for v in c) in colours


def test_classes_section_shows_each_id_with_its_name_match_and_gallery():
    html = report.classes_html({0: "background", 1: "class_1", 2: "horse & rider"}, {1: report.png_bytes(
        np.zeros((4, 4, 3), np.uint8))}, {1: "horse"})
    rows = html.split("<tr>")[2:]
    assert len(rows) == 3 and rows[0].startswith("<th>0</th><td>background</td><td></td><td>(no pixels)")
    assert rows[1].startswith('<th>1</th><td>class_1</td><td>horse</td><td><img alt="class 1" src="data:image/png')
    assert "<td>horse &amp; rider</td>" in rows[2] and "(no pixels)" in rows[2]


def test_read_curves_reads_dvclive_tsv(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "loss.tsv").write_text("timestamp\tstep\tloss\n1\t0\t2.5\n2\t1\t1.5\n")
    curves = inspect.read_curves(tmp_path)
    assert list(curves) == ["train/loss"] and curves["train/loss"][1].tolist() == [2.5, 1.5]
    assert inspect.read_curves(tmp_path / "absent") == {}


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
