import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, section
from pipeline.backbone import factory as bb
from pipeline.config import replace

TINY = section("backbone", name="vit_tiny_patch16_224", source="random",
               overrides={"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2})


def test_dense_features_give_tokens_and_keys_per_patch():
    model = bb.create_backbone(TINY, 32).eval()
    tokens, keys = bb.dense_features(model, torch.randn(2, 3, 48, 40))  # dynamic size, multiple of the patch
    assert tokens.shape == (2, 6, 5, 32) and keys.shape == (2, 6, 5, 32)


def test_a_saved_state_dict_loads_exactly_through_the_file_source(tmp_path):
    torch.manual_seed(1)
    model = bb.create_backbone(TINY, 32).eval()
    torch.save(model.state_dict(), tmp_path / "w.pth")
    loaded = bb.create_backbone(replace(TINY, source="file", weights=str(tmp_path / "w.pth")), 32).eval()
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(bb.dense_features(model, x)[0], bb.dense_features(loaded, x)[0])


def test_missing_weights_file_names_the_alternatives(tmp_path):
    with pytest.raises(bb.BackboneError, match="not found.*backbone.source=pretrain"):
        bb.create_backbone(replace(TINY, source="file", weights=str(tmp_path / "none.pth")), 32)


def test_unknown_backbone_name_is_a_clear_error():
    with pytest.raises(bb.BackboneError, match="not a timm model"):
        bb.create_backbone(replace(TINY, name="vit_nonexistent_model"), 32)


def test_hub_offline_fails_with_a_message_naming_the_alternatives(tmp_path):
    code = ("from pipeline.backbone import factory as bb; from pipeline.config import load_params, replace\n"
            "try:\n bb.create_backbone(replace(load_params().backbone, name='vit_small_patch16_224.dino', "
            f"source='hub', overrides={{}}, hf_cache='{tmp_path}'), 224)\nexcept bb.BackboneError as e: print('ERR', e)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert "ERR could not fetch pretrained weights" in out.stdout
    assert "backbone.source=file" in out.stdout and "backbone.source=pretrain" in out.stdout
