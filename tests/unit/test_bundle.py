"""The model bundle (pipeline/train/bundle.py): it round-trips exactly, a bad config.json is an error naming the
key, and names.yaml names the classes."""
import json

import pytest
import torch

from conftest import tiny_bundle
from pipeline.train import bundle
from pipeline.train.bundle import BundleError


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_save_load_gives_identical_weights_config_and_names(tmp_path):
    model, cfg = tiny_bundle(tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["classes.json", "config.json", "model.safetensors"]
    loaded, cfg1, names = bundle.load(tmp_path / "a")
    assert same_weights(model, loaded) and cfg1 == cfg
    assert names == {0: "background", 1: "class_1", 2: "class_2"}
    bundle.write(tmp_path / "b", loaded, cfg1, {**names, 1: "sky"})
    again, cfg2, names2 = bundle.load(tmp_path / "b")
    assert same_weights(model, again) and cfg2 == cfg and names2[1] == "sky"
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert json.loads((tmp_path / "b" / "config.json").read_text()) == cfg.model_dump(mode="json")
    x = torch.rand(1, 3, 32, 48)
    assert torch.equal(model(x), again(x))  # BatchNorm's running statistics came back too


def edit_config(folder, **change):
    path = folder / "config.json"
    raw = json.loads(path.read_text())
    for k, v in change.items():
        if v is None:
            del raw[k]
        else:
            raw[k] = v
    path.write_text(json.dumps(raw))


@pytest.mark.parametrize("change,message", [
    ({"model": "unet"}, r"'model' is 'unet'; allowed values: stage, timm, deeplabv3"),
    ({"num_classes": None}, r"'num_classes' is missing"),
    ({"palette": None, "image_size": None}, r"'image_size' is missing.*'palette' is missing"),
    ({"colour": 1}, r"'colour' is not a known key"),
    ({"crf": {"iterations": 10}}, r"'crf.gaussian_weight' is missing"),
], ids=["unknown model", "missing key", "two missing keys", "unknown key", "missing nested key"])
def test_a_bad_config_json_is_an_error_naming_the_key(tmp_path, change, message):
    tiny_bundle(tmp_path)
    edit_config(tmp_path, **change)
    with pytest.raises(BundleError, match=r"config\.json: .*" + message):
        bundle.load(tmp_path)


def test_weights_that_do_not_fit_the_config_and_missing_files_are_named(tmp_path):
    tiny_bundle(tmp_path)
    edit_config(tmp_path, decoder_dim=16)
    with pytest.raises(BundleError, match=r"model\.safetensors: does not fit the network config\.json describes"):
        bundle.load(tmp_path)
    with pytest.raises(BundleError, match=r"config\.json: not found"):
        bundle.load(tmp_path / "nothing")
