"""The model card (pipeline/train/card.py): README.md and a gallery per class from the pseudo-labels."""
import numpy as np

from conftest import section, tiny_bundle, write_params
from pipeline import io
from pipeline.train import bundle, card


def test_the_card_shows_each_class_on_the_images_holding_most_of_it(tmp_path):
    model, cfg = tiny_bundle(tmp_path / "src", num_classes=3)
    images = [np.full((32, 48, 3), 10 * i, np.uint8) for i in range(6)]
    labels = [np.zeros((32, 48), np.uint8) for _ in range(6)]
    for i in range(6):
        labels[i][:, : 8 * i] = 1  # image i: 8 * i columns of class 1, the most in image 5
    labels[2][:4] = 255  # ignored pixels are in no class
    shares = card.class_shares(labels, 3)
    assert shares[5, 1] == 40 / 48 and shares[2, 0] == (28 * 32) / (32 * 48) and shares[:, 2].sum() == 0
    names = {**io.default_names(3), 1: "sky"}
    card.write_bundle(tmp_path / "b", model, cfg, names, section("data"), images, labels, "HELD OUT")
    gallery = io.read_image(tmp_path / "b" / "classes" / "1.png")
    assert gallery.shape == (card.TILE, card.GALLERY_IMAGES * 144, 3)  # 4 images of 32x48 at 96 px high
    assert not (tmp_path / "b" / "classes" / "2.png").exists()  # class 2 holds no pixel
    text = (tmp_path / "b" / "README.md").read_text()
    assert text.startswith("---\nlibrary_name: unseg\n")
    assert "| 1 | sky | ![class 1](classes/1.png) |" in text and "| 2 | class_2 | (no pixels) |" in text
    assert "6 training images" in text.replace("\n", " ") and "## Held-out metrics\n\nHELD OUT\n" in text
    assert bundle.load(tmp_path / "b")[1:] == (cfg, names)


def test_held_out_metrics_are_the_evaluation_splits_network_rows_with_split_and_matching():
    metrics = {"eval": {"network": {"miou": 0.39161, "pixel_acc": 0.896}, "network + CRF": {"miou": 0.4025,
                                                                                         "pixel_acc": 0.90333},
                        "baseline_colour_kmeans": {"miou": 0.25, "pixel_acc": 0.47}},
               "train": {"network": {"miou": 0.9, "pixel_acc": 0.9}}, "cluster_k": 4}
    text = card.held_out_text(metrics, "iou", 100)
    assert text.endswith("| label map | mIoU | pixel acc |\n|---|---|---|\n| network | 0.392 | 0.896 |\n"
                         "| network + CRF | 0.403 | 0.903 |")
    one_line = text.replace("\n", " ")
    assert "held-out split (`eval` in data/11_evaluate/metrics.json: 100 images" in one_line
    assert "Hungarian-matched by iou" in one_line and "baseline" not in text and "0.900" not in text
    assert card.held_out_text({"note": "no ground truth in this dataset: nothing to evaluate"}, "iou", 0) == (
        "No held-out metrics: no ground truth in this dataset: nothing to evaluate (data/11_evaluate/metrics.json).")
    assert card.held_out_text({"train": metrics["train"]}, "pixels", 0).startswith(
        "No held-out metrics: the run has no held-out split with ground truth")


def test_the_bundle_stage_names_the_classes_and_holds_the_held_out_metrics(tmp_path, monkeypatch):
    from stages import bundle as stage

    model, cfg = tiny_bundle(tmp_path / "data/10_train/model", num_classes=3)
    write_params(tmp_path)
    (tmp_path / "names.yaml").write_text("2: road\n")
    for n in ("a", "b"):
        io.write_image(tmp_path / "data/01_prepare/images" / f"{n}.png", np.full((32, 32, 3), 90, np.uint8))
        io.write_label(tmp_path / "data/09_merge/labels" / f"{n}.png", np.full((32, 32), 2, np.uint8))
    io.write_json(tmp_path / "data/01_prepare/manifest.json", {"names": ["a", "b"], "eval_names": ["e", "f"],
                                                               "labelled": ["a", "b", "e"]})
    io.write_json(tmp_path / "data/11_evaluate/metrics.json", {"eval": {"network": {"miou": 0.5, "pixel_acc": 0.75}}})
    monkeypatch.chdir(tmp_path)
    stage.main()
    out = tmp_path / "data/11_bundle"
    got, got_cfg, names = bundle.load(out)
    assert got_cfg == cfg and names == {0: "background", 1: "class_1", 2: "road"}
    assert all((got.state_dict()[k] == v).all() for k, v in model.state_dict().items())
    assert sorted(p.name for p in (out / "classes").iterdir()) == ["2.png"]  # only class 2 in the pseudo-labels
    text = (out / "README.md").read_text()
    assert "| network | 0.500 | 0.750 |" in text and "| 2 | road | ![class 2](classes/2.png) |" in text
    assert "1 image with ground truth" in text.replace("\n", " ")  # e of the held-out e, f has ground truth
    assert "Hungarian-matched by iou" in text.replace("\n", " ")  # params.yaml's evaluate.match
