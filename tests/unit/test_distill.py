"""The distill stage (MaskDistill's class-agnostic Mask R-CNN on the proposals): the detector on the stage's ViT
builds, trains and learns an easy object; the selection rule (>= score plus always the top one, max_per_image,
best mask first) on hand-made detections; method none passes the proposals on byte for byte; maskrcnn writes the
proposals' layout; filter.score from detector ranks; the ConfigError when there are no detector scores."""
import json

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, raw_params, section, tiny_backbone, write_params
from pipeline import io
from pipeline.config import ConfigError, parse_params
from pipeline.method import distill, filtering
from pipeline.train import detector

TINY_VIT = {"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}  # conftest.tiny_backbone's


def square_set(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """n noisy dark 64 px images, each with one bright square of side 16..27 -> (images, (1, 64, 64) masks)."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for _ in range(n):
        im = rng.integers(0, 60, (64, 64, 3)).astype(np.uint8)
        s = int(rng.integers(16, 28))
        y, x = rng.integers(0, 64 - s, 2)
        im[y:y + s, x:x + s] = rng.integers(200, 256, 3)
        m = np.zeros((1, 64, 64), bool)
        m[0, y:y + s, x:x + s] = True
        images.append(im)
        masks.append(m)
    return images, masks


def test_vit_mask_rcnn_builds_and_runs_forward_and_backward_on_tiny_inputs():
    torch.manual_seed(0)
    cfg = section("distill", method="maskrcnn", max_per_image=3)
    model = detector.build(cfg, tiny_backbone, 64, 64)
    assert [int(s) for s in model.backbone.strides] == [4, 8, 16, 32]  # patch 8: strides p/2, p, 2p, 4p
    images, masks = square_set(2)
    model.train()
    losses = model([detector.to_image(im, False, torch.device("cpu")) for im in images],
                   [detector.to_target(m, True, torch.device("cpu")) for m in masks])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    assert model.backbone.vit.patch_embed.proj.weight.grad.abs().sum() > 0  # the ViT is trained through
    assert model.roi_heads.mask_predictor.mask_fcn_logits.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model([detector.to_image(images[0], False, torch.device("cpu"))])[0]
    assert out["masks"].shape[1:] == (1, 64, 64) and len(out["scores"]) <= detector.CANDIDATES * 3
    assert (out["scores"][:-1] >= out["scores"][1:]).all()  # best first


def test_resnet18_fpn_from_random_weights_trains_a_step_offline():
    torch.manual_seed(0)
    cfg = section("distill", method="maskrcnn", backbone="resnet18_fpn", pretrained=False, iterations=1, batch_size=2)
    model = detector.build(cfg, lambda: pytest.fail("the stage's ViT is not needed"), 64, 64)
    assert isinstance(model.backbone.body.bn1, torch.nn.BatchNorm2d)  # random init: BatchNorm trained, not frozen
    images, masks = square_set(2)
    history = detector.train(model, images, masks, cfg, 0, torch.device("cpu"))
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    assert model.backbone.body.conv1.weight.grad.abs().sum() > 0  # every stage trainable


def test_backbone_lr_zero_freezes_the_vit_and_targets_are_mirrored():
    cfg = section("distill", method="maskrcnn", backbone_lr=0.0)
    model = detector.build(cfg, tiny_backbone, 64, 64)
    opt = detector.optimizer(model, cfg)
    trained = {id(q) for g in opt.param_groups for q in g["params"]}
    assert not any(id(q) in trained or q.requires_grad for q in model.backbone.vit.parameters())
    m = np.zeros((1, 4, 6), bool)
    m[0, 1:3, 0:2] = True
    assert detector.to_target(m, False, torch.device("cpu"))["boxes"].tolist() == [[0, 1, 2, 3]]
    assert detector.to_target(m, True, torch.device("cpu"))["boxes"].tolist() == [[4, 1, 6, 3]]  # x -> 6 - x
    # warm-up over 2 of 20 steps, then cosine: 0.5 * (1 + cos(pi * 17 / 18)) at the last step
    assert [round(detector.lr_factor(s, 20), 4) for s in (0, 1, 2, 19)] == [0.5, 1.0, 1.0, 0.0076]


def test_a_tiny_detector_learns_one_bright_square_per_image():
    """30 steps on 8 images with one square each (1-block ViT from random weights): the loss falls to under half,
    and each image's top detection, painted, covers its square with IoU > 0.5 (measured: 0.69..0.93)."""
    torch.manual_seed(0)
    images, masks = square_set(8)
    cfg = section("distill", method="maskrcnn", iterations=30, batch_size=2, lr=0.002, backbone_lr=0.002,
                  max_per_image=2)
    model = detector.build(cfg, tiny_backbone, 64, 64)
    history = detector.train(model, images, masks, cfg, 0, torch.device("cpu"))
    losses = [h["loss"] for h in history]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    ious = []
    for i, scores, probs in detector.predict(model, images, 4, torch.device("cpu")):
        mask_map, taken = distill.select(scores, probs, 0.9, 2)
        top, sq = mask_map == 1, masks[i][0]
        ious.append((top & sq).sum() / (top | sq).sum())
    assert min(ious) > 0.5, ious


# ---------------------------------------------------------------- the selection rule

def test_confident_keeps_every_detection_at_the_threshold_or_else_the_top_one():
    assert distill.confident(np.array([0.5, 0.95, 0.9, 0.3]), 0.9).tolist() == [1, 2]  # >= 0.9, best first
    assert distill.confident(np.array([0.5, 0.7, 0.2]), 0.9).tolist() == [1]  # none: the top one alone
    assert distill.confident(np.array([0.6, 0.6]), 0.9).tolist() == [0]  # ties: the first
    assert distill.confident(np.zeros(0), 0.9).tolist() == []


def test_paint_gives_each_pixel_to_the_best_mask_and_numbers_masks_in_score_order():
    probs = np.zeros((4, 3, 5), np.float32)
    probs[0, :, 0:2] = 0.9  # score 0.95: columns 0-1
    probs[1, :, 1:4] = 0.6  # score 0.97: columns 1-3, the best
    probs[2, :, 1:3] = 0.8  # score 0.92: inside better masks only -> no pixel left, no id
    probs[3, 0, 4] = 0.5    # score 0.91: one pixel at exactly the threshold (>= 0.5)
    probs[3, 1, 4] = 0.49   # below it
    scores = np.array([0.95, 0.97, 0.92, 0.91])
    mask_map, taken = distill.select(scores, probs, 0.9, 4)
    assert taken == [1, 0, 3]
    assert mask_map.tolist() == [[2, 1, 1, 1, 3],
                                 [2, 1, 1, 1, 0],
                                 [2, 1, 1, 1, 0]]
    capped, taken = distill.select(scores, probs, 0.9, 2)  # max_per_image 2: the two best that got pixels
    assert taken == [1, 0] and capped.max() == 2 and (capped[:, 4] == 0).all()
    low, taken = distill.select(scores * 0.5, probs, 0.9, 4)  # none >= 0.9: the top one (0.485) alone
    assert taken == [1] and low.tolist() == [[0, 1, 1, 1, 0]] * 3


def test_instance_masks_and_boxes_from_an_index_map():
    mask_map = np.array([[0, 1, 1, 0], [0, 1, 0, 0], [3, 0, 0, 0]], np.uint8)  # id 2 is empty: dropped
    masks = distill.instance_masks(mask_map, 3)
    assert masks.shape == (2, 3, 4) and masks[0].sum() == 3 and masks[1].sum() == 1
    assert distill.boxes(masks).tolist() == [[1, 0, 3, 2], [0, 2, 1, 3]]  # x0, y0, x1 (exclusive), y1


# ---------------------------------------------------------------- the stage

def fake_proposals(work, names):
    """data/01_prepare (64 px noisy images with a bright square, manifest) and data/04_proposals (one mask on the
    square, none on the last image) as the stages write them."""
    images, masks = square_set(len(names))
    table = {}
    for k, (n, im, m) in enumerate(zip(names, images, masks)):
        io.write_image(work / "data/01_prepare/images" / f"{n}.png", im)
        last = k == len(names) - 1
        io.write_label(work / "data/04_proposals/masks" / f"{n}.png", np.zeros((64, 64), np.uint8) if last else
                       m[0].astype(np.uint8))
        table[n] = [] if last else [{"id": 1, "source": "saliency", "score": 0.5 + k / 100, "pixels": int(m.sum())}]
    io.write_json(work / "data/01_prepare/manifest.json", {"names": names, "eval_names": [], "image_size": 64,
                                                          "sizes": {n: [64, 64] for n in names}})
    io.write_json(work / "data/04_proposals/proposals.json", table)
    return table


def test_method_none_passes_the_proposals_on_byte_for_byte(tmp_path, monkeypatch):
    from stages import distill as stage

    names = ["a", "b", "c"]
    table = fake_proposals(tmp_path, names)
    write_params(tmp_path, distill={"method": "none"})
    monkeypatch.chdir(tmp_path)
    stage.main()
    out = tmp_path / "data/05_distill"
    for n in names:
        assert (out / "masks" / f"{n}.png").read_bytes() == (tmp_path / "data/04_proposals/masks" / f"{n}.png").read_bytes()
    assert json.loads((out / "proposals.json").read_text()) == {n: [{**m, "detector_score": None} for m in table[n]]
                                                               for n in names}
    assert json.loads((out / "summary.json").read_text()) == {"method": "none", "images": 3, "masks": 2,
                                                              "images_without_mask": 1, "by_source": {"saliency": 2}}
    assert not (out / "overlays").exists()


def test_method_maskrcnn_writes_the_proposals_layout_with_detector_scores(tmp_path, monkeypatch):
    from stages import distill as stage

    names = ["a", "b", "c", "d"]
    fake_proposals(tmp_path, names)
    torch.manual_seed(0)
    (tmp_path / "data/02_pretrain").mkdir(parents=True)
    torch.save(tiny_backbone().state_dict(), tmp_path / "data/02_pretrain/backbone.pth")
    write_params(tmp_path, data={"image_size": 64}, backbone={"overrides": TINY_VIT, "source": "random"},
                 distill={"method": "maskrcnn", "iterations": 3, "batch_size": 2, "max_per_image": 2, "score": 0.0})
    monkeypatch.chdir(tmp_path)
    stage.main()
    out = tmp_path / "data/05_distill"
    table = json.loads((out / "proposals.json").read_text())
    assert list(table) == names
    for n in names:
        mask_map = io.read_label(out / "masks" / f"{n}.png")
        recs = table[n]
        assert 1 <= len(recs) <= 2 and [r["id"] for r in recs] == list(range(1, len(recs) + 1))
        assert int(mask_map.max()) == len(recs)  # every kept mask has pixels, ids 1..n
        for r in recs:
            assert r["source"] == "maskrcnn" and r["score"] == r["detector_score"]
            assert r["pixels"] == int((mask_map == r["id"]).sum()) > 0
        assert [r["score"] for r in recs] == sorted((r["score"] for r in recs), reverse=True)
        assert (out / "overlays" / f"{n}.jpg").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "maskrcnn" and summary["train_images"] == 3 and summary["iterations"] == 3
    assert (out / "loss.png").is_file()


def test_method_maskrcnn_without_any_proposal_is_a_clear_error(tmp_path, monkeypatch):
    from stages import distill as stage

    fake_proposals(tmp_path, ["a"])  # the last (only) image has no proposal
    write_params(tmp_path, distill={"method": "maskrcnn"})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(io.InputError, match="no training image has a proposal to learn from"):
        stage.main()  # before the backbone is read: data/02_pretrain does not exist here


# ---------------------------------------------------------------- filter.score and its check

def test_filter_score_from_detector_ranks_within_each_cluster():
    rel = np.array([0.9, 0.1, 0.5, 0.2, 0.8])
    det = np.array([0.3, 0.99, 0.6, 0.95, 0.91])
    labels = np.array([0, 0, 0, 1, 1])
    assert filtering.combined_score(rel, det, labels, "embedding").tolist() == rel.tolist()
    # cluster 0: detector 0.3 < 0.6 < 0.99 -> ranks 0, 1, 0.5; cluster 1: 0.95 > 0.91 -> 1, 0
    assert filtering.combined_score(rel, det, labels, "detector").tolist() == [0.0, 1.0, 0.5, 1.0, 0.0]
    # embedding ranks: cluster 0: 0.9 > 0.5 > 0.1 -> 1, 0, 0.5; cluster 1: 0.2 < 0.8 -> 0, 1; both: the means
    assert filtering.combined_score(rel, det, labels, "both").tolist() == [0.5, 0.5, 0.5, 0.5, 0.5]
    assert filtering.keep_mask(filtering.combined_score(rel, det, labels, "detector"), labels, 0.5).tolist() == \
        [False, True, True, True, False]  # ceil(0.5 * 3) = 2 and ceil(0.5 * 2) = 1 kept
    with pytest.raises(ValueError, match="detector score"):
        filtering.combined_score(rel, np.full(5, np.nan), labels, "detector")


def test_cluster_carries_detector_scores_and_the_filter_keeps_the_most_confident(tmp_path, monkeypatch):
    """Six 32 px images with one distilled mask each, patch tokens of two kinds (two clusters of three):
    clusters.json keeps each mask's detector_score, and filter.score detector with keep 0.5 keeps the two most
    confident masks of each cluster (ceil(0.5 * 3) = 2)."""
    from stages import cluster as cluster_stage
    from stages import filter as filter_stage

    names, scores = ["a", "b", "c", "d", "e", "f"], [0.91, 0.99, 0.95, 0.97, 0.93, 0.98]
    rng = np.random.default_rng(0)
    mask = np.zeros((32, 32), np.uint8)
    mask[:, :16] = 1
    writer = io.ShardWriter(tmp_path / "data/03_features", 8)
    for k, n in enumerate(names):
        io.write_image(tmp_path / "data/01_prepare/images" / f"{n}.png", rng.integers(0, 255, (32, 32, 3), np.uint8))
        io.write_label(tmp_path / "data/05_distill/masks" / f"{n}.png", mask)
        tokens = np.zeros((4, 4, 8), np.float16)
        tokens[..., 0 if k < 3 else 1] = 1
        tokens[..., 2:] = rng.normal(0, 0.05, (4, 4, 6))
        writer.add(n, {"tokens": tokens})
    writer.close()
    io.write_json(tmp_path / "data/01_prepare/manifest.json", {"names": names})
    io.write_json(tmp_path / "data/05_distill/proposals.json",
                  {n: [{"id": 1, "source": "maskrcnn", "score": s, "detector_score": s, "pixels": 512}]
                   for n, s in zip(names, scores)})
    write_params(tmp_path, distill={"method": "maskrcnn"}, cluster={"k": 2, "n_init": 2, "gallery_per_cluster": 2},
                 filter={"score": "detector", "keep": 0.5, "folds": 2})
    monkeypatch.chdir(tmp_path)
    cluster_stage.main()
    records = json.loads((tmp_path / "data/06_cluster/clusters.json").read_text())["masks"]
    assert [r["detector_score"] for r in records] == scores
    assert len({r["cluster"] for r in records[:3]}) == len({r["cluster"] for r in records[3:]}) == 1
    filter_stage.main()
    kept = {r["image"]: r["kept"] for r in json.loads((tmp_path / "data/08_filter/filter.json").read_text())["masks"]}
    assert kept == {"a": False, "b": True, "c": True, "d": True, "e": False, "f": True}


@pytest.mark.parametrize("score", ["detector", "both"])
def test_filter_score_from_the_detector_needs_distill_maskrcnn(score):
    raw = raw_params()
    raw["filter"]["score"], raw["distill"]["method"] = score, "none"
    with pytest.raises(ConfigError, match=rf"'filter\.score' is '{score}'; needs detector scores, but "
                                          r"distill\.method is 'none'"):
        parse_params(raw)
    raw["distill"]["method"] = "maskrcnn"
    assert parse_params(raw).filter.score == score


def test_params_yaml_default_distills_nothing():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params["distill"]["method"] == "none" and params["filter"]["score"] == "embedding"
