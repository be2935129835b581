"""STEGO's correspondence loss and head (pipeline/method/stego.py) on tiny tensors."""
import numpy as np
import pytest
import torch

from pipeline.method import stego


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_pair_loss_is_its_formula():
    rng = np.random.default_rng(0)
    f1, f2 = rng.normal(size=(1, 3, 4)), rng.normal(size=(1, 2, 4))
    c1, c2 = rng.normal(size=(1, 3, 5)), rng.normal(size=(1, 2, 5))
    shift = 0.1
    fd = unit(f1)[0] @ unit(f2)[0].T  # (3, 2)
    centred = fd - fd.mean(1, keepdims=True)
    centred = centred - centred.mean() + fd.mean()
    cd = unit(c1)[0] @ unit(c2)[0].T
    want = np.mean(-np.maximum(cd, 0) * (centred - shift))
    t = [torch.tensor(a, dtype=torch.float64) for a in (f1, f2, c1, c2)]
    assert float(stego.pair_loss(*t, shift)) == pytest.approx(want, rel=1e-12)


def test_pair_loss_pulls_codes_of_similar_features_and_pushes_dissimilar():
    # features a, b orthogonal: after the per-row centring F = identity, minus shift 0.5 -> +0.5 same, -0.5 other
    f = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    c1 = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    c2 = torch.tensor([[[1.0, 1.0, 0.2], [1.0, 1.0, 0.2]]], requires_grad=True)  # both at 45 degrees: cosine > 0
    opt = torch.optim.SGD([c2], lr=0.1)
    before = stego.correlation(c1, c2.detach())[0]
    for _ in range(20):
        opt.zero_grad()
        stego.pair_loss(f, f, c1, c2, 0.5).backward()
        opt.step()
    after = stego.correlation(c1, c2.detach())[0]
    assert (torch.diagonal(after) > torch.diagonal(before)).all()  # similar features: codes pulled together
    assert after[0, 1] < before[0, 1] and after[1, 0] < before[1, 0]  # dissimilar: pushed apart


def test_pair_loss_clamps_negative_code_correlation_to_zero():
    f = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    c = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])  # the two codes opposite: their pair contributes nothing
    # S = [[1, 0], [0, 1]] after the clamp, F - shift = [[1, 0], [0, 1]] -> loss = -(1 + 1) / 4
    assert float(stego.pair_loss(f, f, c, c, 0.0)) == pytest.approx(-0.5)


def test_negative_draw_never_pairs_an_image_with_itself():
    gen = torch.Generator().manual_seed(0)
    for n in (2, 3, 7):
        for _ in range(20):
            p = stego.derangement(n, gen)
            assert ((p >= 0) & (p < n) & (p != torch.arange(n))).all()


def test_nearest_images_by_mean_token():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    grids = [np.tile(v, (2, 2, 1)) for v in (a, b, 0.9 * a + 0.1 * b, 0.1 * a + 0.9 * b)]
    assert stego.nearest_images(grids, 1)[:, 0].tolist() == [2, 3, 0, 1]


def test_trained_head_separates_three_kinds_of_patches():
    rng = np.random.default_rng(0)
    kinds = [rng.normal(size=16) for _ in range(3)]
    grids = [np.concatenate([np.tile(v, (1, 6, 1)) for v in kinds]) + 0.05 * rng.normal(size=(3, 6, 16))
             for _ in range(4)]
    w = stego.LossWeights(0.67, 0.25, 0.63, 0.18, 0.12, 0.46)
    head, losses = stego.train_head(grids, 8, 60, 4, 0.005, 3, 2, 2, w, seed=0)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    codes = stego.codes(head, np.stack(kinds + [kinds[0] + 0.05 * rng.normal(size=16)]))
    sim = codes @ codes.T
    assert sim[0, 3] > 0.99  # one kind: one code
    assert (sim[:3, :3][~np.eye(3, dtype=bool)] < 0).all()  # other kinds: codes apart


def test_trained_head_separates_two_kinds_of_patches_that_share_one_direction():
    # the two kinds' tokens have cosine 0.8 (a common direction, as every patch of a small backbone shares), above
    # every shift: without centring on the mean token every pair of patches pulls and the codes collapse to one
    rng = np.random.default_rng(0)
    common, u, v = np.eye(16)[0] * 2.0, np.eye(16)[1], np.eye(16)[2]
    a, b = common + u, common + v
    assert float(unit(a) @ unit(b)) == pytest.approx(0.8)
    grids = [np.concatenate([np.tile(a, (2, 4, 1)), np.tile(b, (2, 4, 1))]) + 0.05 * rng.normal(size=(4, 4, 16))
             for _ in range(4)]
    w = stego.LossWeights(0.67, 0.25, 0.63, 0.18, 0.12, 0.46)
    head, _ = stego.train_head(grids, 8, 60, 4, 0.005, 3, 2, 2, w, seed=0)
    codes = stego.codes(head, np.stack([a, b]))
    assert float(codes[0] @ codes[1]) < 0.0


def test_channel_dropout_drops_a_channel_at_every_patch_of_an_image():
    x = torch.ones(4, 5, 64)
    y = stego.channel_dropout(x, 0.5, True)
    assert set(torch.unique(y).tolist()) == {0.0, 2.0}
    assert (y == y[:, :1]).all()  # the same channels at each of an image's patches
    assert not (y == y[:1]).all()  # drawn per image
    assert torch.equal(stego.channel_dropout(x, 0.5, False), x)
