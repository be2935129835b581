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


def test_keys_are_the_k_third_of_the_last_blocks_qkv_on_its_input():
    """The keys dense_features returns are attn.qkv(norm1(x))'s k third (not q, not v, not another block's),
    with x the last block's input, computed here by running the blocks before it; per head, as timm's
    attention lays them out: qkv (B, N, 3, heads, head_dim) -> k = [:, :, 1], heads side by side."""
    torch.manual_seed(0)
    cfg = section("backbone", source="random", weights="",
                  overrides={"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2})
    model = bb.create_backbone(cfg, 32).eval()
    img = torch.randn(2, 3, 24, 16)
    _, keys = bb.dense_features(model, img)
    with torch.no_grad():
        x = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(img))))
        for blk in model.blocks[:-1]:
            x = blk(x)
        last = model.blocks[-1]
        qkv = last.attn.qkv(last.norm1(x))  # (B, N, 3 * D)
        b, n, _ = qkv.shape
        heads = last.attn.num_heads
        k = qkv.reshape(b, n, 3, heads, -1)[:, model.num_prefix_tokens:, 1]  # (B, patches, heads, head_dim)
    want = k.reshape(b, 3, 2, heads * k.shape[-1])
    assert keys.shape == want.shape == (2, 3, 2, 32)
    assert torch.allclose(keys, want, atol=1e-6, rtol=0)
    q = qkv[:, model.num_prefix_tokens:, :32].reshape(want.shape)
    assert not torch.allclose(keys, q, atol=1e-3)  # the check can tell keys from queries


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


def test_features_of_non_square_images_are_per_image_grids_in_input_order():
    """Images of 48x80, 32x32 and 48x80 (patch 8) -> grids (6, 10, D), (4, 4, D), (6, 10, D) in input order (the two
    48x80 images batched together), each the features of that image alone (float16)."""
    import numpy as np

    from pipeline.backbone import features

    model = bb.create_backbone(TINY, 32).eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, s + (3,)).astype(np.uint8) for s in ((48, 80), (32, 32), (48, 80))]
    batches = [idx for idx, _ in features.extract(model, images, 8, torch.device("cpu"), "fp32")]
    assert batches == [[0, 2], [1]]
    out = features.per_image(model, images, 8, torch.device("cpu"), "fp32")
    assert [o["tokens"].shape for o in out] == [(6, 10, 32), (4, 4, 32), (6, 10, 32)]
    assert all(o["keys"].shape == o["tokens"].shape and o["tokens"].dtype == np.float16 for o in out)
    for im, o in zip(images, out):
        tokens, keys = bb.dense_features(model, bb.normalize(bb.to_tensor(im[None])))
        np.testing.assert_allclose(o["tokens"], tokens[0].numpy().astype(np.float16), atol=2e-3)
        np.testing.assert_allclose(o["keys"], keys[0].numpy().astype(np.float16), atol=2e-3)
    assert bb.size_batches([(4, 4, 3)] * 5, 2) == [[0, 1], [2, 3], [4]]  # one size: consecutive batches


def test_hf_cache_is_an_hf_home_or_the_hub_cache_itself(tmp_path):
    """backbone.hf_cache names an HF_HOME (its hub/ holds models--timm--*) or the hub cache folder itself: timm gets
    the folder that holds models--*, not its parent (where the lookup missed the weights and failed offline)."""
    assert bb.hub_cache_dir("") is None  # huggingface_hub's own default
    assert bb.hub_cache_dir(str(tmp_path)) == str(tmp_path)  # a hub cache, or an empty folder to fill online
    (tmp_path / "hub").mkdir()
    assert bb.hub_cache_dir(str(tmp_path)) == str(tmp_path / "hub")  # an HF_HOME


def test_bf16_features_are_within_a_few_bf16_roundings_of_fp32():
    """features.precision bf16 on a 2-block ViT: the float16 tokens and keys differ from float32's (autocast ran) by
    at most 2^-6 of the largest |value|: bfloat16 keeps 8 significant bits (a rounding moves a value by at most
    2^-9 of it), the matrix products round their inputs and outputs, and two blocks compound it a few times
    (measured: 0.3% for tokens, 0.4% for keys); every token keeps its direction (cosine >= 0.999)."""
    import numpy as np

    from pipeline.backbone import features

    torch.manual_seed(0)
    model = bb.create_backbone(replace(TINY, overrides={**TINY.overrides, "depth": 2}), 64).eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 64, 3)).astype(np.uint8) for _ in range(4)]
    fp32, bf16 = (features.per_image(model, images, 4, torch.device("cpu"), p) for p in ("fp32", "bf16"))
    for key in ("tokens", "keys"):
        x, y = (np.stack([o[key] for o in out]).astype(np.float32) for out in (fp32, bf16))
        assert not np.array_equal(x, y)
        assert np.abs(x - y).max() <= 2 ** -6 * np.abs(x).max()
        cos = (x * y).sum(-1) / (np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1))
        assert cos.min() >= 0.999


def test_bf16_weights_cast_once_give_autocasts_exact_features_and_leave_the_model_alone():
    """`cast_matmul_weights` (what extract runs under bf16) gives bit for bit the tokens and keys of the float32
    model under autocast, whose per-call casts it saves; the caller's model keeps its float32 weights."""
    from pipeline.backbone import features

    torch.manual_seed(0)
    model = bb.create_backbone(replace(TINY, overrides={**TINY.overrides, "depth": 2}), 64).eval()
    x = torch.randn(3, 3, 64, 64)
    cast = features.cast_matmul_weights(model, torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert cast.blocks[0].attn.qkv.weight.dtype == torch.bfloat16 and cast.norm.weight.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (t0, k0), (t1, k1) = bb.dense_features(model, x), bb.dense_features(cast, x)
    assert torch.equal(t0, t1) and torch.equal(k0, k1)
    fp32 = bb.dense_features(model, x)[0]
    assert not torch.equal(fp32, t0)  # autocast did run in bf16


def test_precision_auto_is_bf16_on_cuda_only_and_bf16_is_bf16_everywhere(monkeypatch):
    from pipeline.backbone import features

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert features.autocast_dtype("fp32", cpu) is None and features.autocast_dtype("fp32", cuda) is None
    assert features.autocast_dtype("bf16", cpu) == torch.bfloat16 == features.autocast_dtype("auto", cuda)
    for has in (True, False):
        monkeypatch.setattr(features, "cpu_has_bf16", lambda: has)
        assert features.autocast_dtype("auto", cpu) is None  # the CPU's bytes, with or without bf16 instructions
        assert features.autocast_dtype("bf16", cpu) == torch.bfloat16
    monkeypatch.undo()
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    if "avx512_bf16" in flags or "amx_bf16" in flags:  # this machine's flags and torch's checks agree
        assert features.cpu_has_bf16()
