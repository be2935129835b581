"""Bad params: a ConfigError (or ClusterError) naming the key and the allowed values, before any work."""
import importlib.util
import json

import pytest
import yaml

from conftest import ROOT, raw_params
from pipeline.config import ConfigError, check_backbone_name, parse_params
from pipeline.method import cluster


@pytest.mark.parametrize("section,key,value,pattern", [
    ("proposals", "tau", -2.0, r"'proposals\.tau' is -2\.0; must be in \[-1, 1\)"),
    ("proposals", "eps", -1e-5, r"'proposals\.eps' is -1e-05; must be > 0"),
    ("proposals", "min_score", -0.1, r"'proposals\.min_score' is -0\.1; must be in \[0, 2\)"),
    ("proposals", "nms_iou", 0.0, r"'proposals\.nms_iou' is 0\.0; must be in \(0, 1\]"),
    ("filter", "keep", 0.0, r"'filter\.keep' is 0\.0; must be in \(0, 1\]"),
    ("filter", "keep", -0.2, r"'filter\.keep' is -0\.2; must be in \(0, 1\]"),
    ("filter", "keep", 1.01, r"'filter\.keep' is 1\.01; must be in \(0, 1\]"),
    ("filter", "weight_distance", 2.0, r"'filter\.weight_distance' is 2\.0; must be in \[0, 1\]"),
    ("merge", "min_agreement", 1.5, r"'merge\.min_agreement' is 1\.5; must be in \(0, 1\]"),
    ("merge", "weight_adjacent", -1.0, r"'merge\.weight_adjacent' is -1\.0; must be >= 0"),
    ("pretrain", "min_lr", -1e-6, r"'pretrain\.min_lr' is -1e-06; must be >= 0"),
    ("pretrain", "clip_grad", -3.0, r"'pretrain\.clip_grad' is -3\.0; must be >= 0"),
    ("pretrain", "weight_decay_end", -0.4, r"'pretrain\.weight_decay_end' is -0\.4; must be >= 0"),
    ("pretrain", "threads", -1, r"'pretrain\.threads' is -1; must be >= 0"),
    ("train", "threads", -2, r"'train\.threads' is -2; must be >= 0"),
    ("train", "decoder_dim", 0, r"'train\.decoder_dim' is 0; must be >= 1"),
    ("train", "decoder", "unet", r"'train\.decoder' is 'unet'; allowed values: simple, fused"),
    ("train", "warmup_epochs", 45, r"'train\.warmup_epochs' is 45; must be < train\.epochs = 45"),
    ("data", "on_bad_image", "ignore", r"'data\.on_bad_image' is 'ignore'; allowed values: skip, error"),
    ("data", "min_image_side", 0, r"'data\.min_image_side' is 0; must be >= 1"),
    ("cluster", "method", "dbscan", r"'cluster\.method' is 'dbscan'; allowed values: kmeans, spectral"),
    ("cluster", "embedding", "cls", r"'cluster\.embedding' is 'cls'; allowed values: tokens, crop_cls"),
    ("cluster", "crop_margin", -0.1, r"'cluster\.crop_margin' is -0\.1; must be in \[0, 1\]"),
    ("cluster", "crop_background", "black", r"'cluster\.crop_background' is 'black'; allowed values: keep, grey"),
    ("cluster", "crop_size", 8, r"'cluster\.crop_size' is 8; must be >= 16"),
    ("cluster", "whiten_dim", -1, r"'cluster\.whiten_dim' is -1; must be >= 0"),
    ("features", "device", "tpu", r"'features\.device' is 'tpu'; allowed values: auto, cpu, cuda"),
    ("features", "precision", "fp16", r"'features\.precision' is 'fp16'; allowed values: auto, fp32, bf16"),
    ("pretrain", "device", "gpu", r"'pretrain\.device' is 'gpu'; allowed values: auto, cpu, cuda"),
    # video datasets and motion proposals
    ("proposals", "sources", ["ncut", "flow"], r"'proposals\.sources\[1\]' is 'flow'; allowed values: auto, ncut, saliency, motion"),
    ("proposals", "sources", [], r"'proposals\.sources' is \[\]; must be \[auto\], or list ncut, saliency and/or motion"),
    ("saliency", "cues", ["rbd", "rbd"], r"'saliency\.cues' is \['rbd', 'rbd'\]; must list rbd and/or mbd, each once"),
    ("saliency", "threshold", "mean", r"'saliency\.threshold' is 'mean'; allowed values: otsu, twice_mean"),
    ("proposals", "sources", ["motion", "motion"], r"'proposals\.sources' is \['motion', 'motion'\]; must be \[auto\], or list"),
    ("motion", "flow", "lk", r"'motion\.flow' is 'lk'; allowed values: dis, farneback"),
    ("motion", "camera", "similarity", r"'motion\.camera' is 'similarity'; allowed values: homography, affine"),
    ("video", "stride", 0, r"'video\.stride' is 0; must be >= 1"),
    ("video", "synth_object_speed", [2.0, 1.0], r"'video\.synth_object_speed' is \[2\.0, 1\.0\]; must be \[min, max\]"),
    ("data", "name", "video", r"'data\.root' is ''; must name a folder when data\.name is video"),
])
def test_out_of_range_value_names_the_key_and_what_is_allowed(section, key, value, pattern):
    raw = raw_params()
    raw[section][key] = value
    with pytest.raises(ConfigError, match=pattern):
        parse_params(raw)


def test_image_size_must_be_a_multiple_of_the_patch_size():
    raw = raw_params()
    raw["data"]["image_size"] = 100  # patch 8 from backbone.overrides
    with pytest.raises(ConfigError, match=r"'data\.image_size' is 100; must be a multiple of the backbone's patch size 8, e\.g\. 96"):
        parse_params(raw)
    raw["backbone"]["overrides"] = {}  # then the patch size comes from the timm name (patch16)
    raw["data"]["image_size"] = 120
    with pytest.raises(ConfigError, match=r"patch size 16, e\.g\. 112"):
        parse_params(raw)
    raw["data"]["image_size"] = 224
    assert parse_params(raw).data.image_size == 224


def test_patch_size_override_must_be_an_integer():
    raw = raw_params()
    raw["backbone"]["overrides"]["patch_size"] = "8"
    with pytest.raises(ConfigError, match=r"'backbone\.overrides\.patch_size' is '8'; must be an integer >= 1"):
        parse_params(raw)


@pytest.mark.parametrize("name,pattern", [
    ("vit_tiny_patch16_2244", r"'backbone\.name' is 'vit_tiny_patch16_2244', not a timm model \(did you mean vit_tiny_patch16_224"),
    ("resnet50", r"'backbone\.name' is 'resnet50', not a timm ViT; allowed values: the ViTs of timm"),
])
def test_unknown_backbone_name_is_a_config_error_with_suggestions(name, pattern):
    with pytest.raises(ConfigError, match=pattern):
        check_backbone_name(name)
    check_backbone_name("vit_small_patch16_224.dino")  # a pretrained tag after the dot is fine


def test_k_larger_than_the_number_of_masks_is_an_error_naming_both():
    with pytest.raises(cluster.ClusterError, match=r"'cluster\.k' is 4 but only 2 masks were proposed; allowed values: 1\.\.2"):
        cluster.check_enough_masks(2, 4)
    with pytest.raises(cluster.ClusterError, match=r"'cluster\.k' is 4 but no image got a mask proposal"):
        cluster.check_enough_masks(0, 4)
    cluster.check_enough_masks(4, 4)


def test_cluster_stage_checks_k_before_reading_any_feature(tmp_path, monkeypatch):
    raw = raw_params()
    raw["cluster"]["k"] = 4
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "data" / "05_distill").mkdir(parents=True)  # no data/03_features at all: reading it would fail
    (tmp_path / "data" / "05_distill" / "proposals.json").write_text(json.dumps(
        {"img0": [{"id": 1}, {"id": 2}], "img1": []}))
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("cluster_stage", ROOT / "stages" / "cluster.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(cluster.ClusterError, match=r"'cluster\.k' is 4 but only 2 masks"):
        mod.main()
    assert not (tmp_path / "data" / "06_cluster").exists()
