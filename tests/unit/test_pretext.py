"""The pretext objectives: each one's data construction checked exactly, and training lowers its loss."""
import itertools

import cv2
import numpy as np
import pytest
import torch

from conftest import fixed_batch_losses, raw_params, section, tiny_backbone
from pipeline.backbone import pretext
from pipeline.backbone.pretext import colorization as col
from pipeline.backbone.pretext import context as ctx
from pipeline.backbone.pretext import deepcluster as dc
from pipeline.backbone.pretext import inpainting as inp
from pipeline.backbone.pretext import jigsaw as jig
from pipeline.config import ConfigError, PretrainConfig, parse_params, replace


def coord_images(b: int, size: int) -> torch.Tensor:
    """(b, 3, size, size): channel 0 = row, channel 1 = column, channel 2 = image index (every pixel unique)."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.stack([torch.stack([y, x, torch.full_like(y, i)]) for i in range(b)]).float()


# ---- jigsaw ---------------------------------------------------------------------------------------------

def test_jigsaw_permutations_are_distinct_and_far_apart():
    perms = jig.hamming_permutations(30, seed=0)
    assert perms.shape == (30, 9)
    assert all(sorted(p) == list(range(9)) for p in perms.tolist())
    brute = min(sum(a != b for a, b in zip(p, q)) for p, q in itertools.combinations(perms.tolist(), 2))
    assert jig.min_hamming(perms) == brute
    assert (perms[1] != perms[0]).sum() == 9  # the second is a derangement of the first: the farthest possible
    rng = np.random.default_rng(0)
    random_set = np.array([rng.permutation(9) for _ in range(30)])
    assert brute >= 7 > jig.min_hamming(random_set)


def test_jigsaw_tiles_show_the_cells_of_the_labelled_permutation():
    images = coord_images(5, 64)
    perms = torch.from_numpy(jig.hamming_permutations(10, seed=1))
    g = torch.Generator().manual_seed(0)
    tiles, labels, origins = jig.jigsaw_puzzles(images, perms, grid_crop=48, tile=16, gen=g)  # tile == cell: no jitter
    assert tiles.shape == (5, 9, 3, 16, 16)
    for b in range(5):
        order = perms[labels[b]].tolist()
        at = {cell: origins[b, pos] for pos, cell in enumerate(order)}  # cell -> (y, x) of its tile
        for cell in range(9):
            assert torch.equal(at[cell] - at[0], torch.tensor([cell // 3 * 16, cell % 3 * 16]))
        for pos in range(9):
            y, x = origins[b, pos].tolist()
            assert torch.equal(tiles[b, pos], images[b, :, y:y + 16, x:x + 16])


def test_jigsaw_tiles_stay_inside_their_cells_with_jitter():
    images = coord_images(20, 64)
    perms = torch.from_numpy(jig.hamming_permutations(10, seed=1))
    tiles, labels, origins = jig.jigsaw_puzzles(images, perms, grid_crop=60, tile=8, gen=torch.Generator().manual_seed(0))
    for b in range(20):
        order = perms[labels[b]].tolist()
        at = {cell: origins[b, pos] for pos, cell in enumerate(order)}
        for cell in range(9):  # same cell size 20: a tile's offset from cell 0's is the cell step +- (20 - 8)
            d = at[cell] - at[0] - torch.tensor([cell // 3 * 20, cell % 3 * 20])
            assert d.abs().max() <= 12
    assert tiles[..., 0, 0, 0].max() <= 64 - 8  # every tile inside the image


# ---- context --------------------------------------------------------------------------------------------

def test_context_pairs_without_jitter_are_exactly_one_grid_step_apart():
    images = coord_images(200, 64)
    first, second, labels, corners = ctx.context_pairs(images, patch=16, gap=4, jitter=0,
                                                       gen=torch.Generator().manual_seed(0))
    assert sorted(set(labels.tolist())) == list(range(8))
    want = ctx.NEIGHBOURS[labels] * (16 + 4)
    assert torch.equal(corners[:, 1] - corners[:, 0], want)
    for b in range(0, 200, 37):
        (y0, x0), (y1, x1) = corners[b].tolist()
        assert torch.equal(first[b], images[b, :, y0:y0 + 16, x0:x0 + 16])
        assert torch.equal(second[b], images[b, :, y1:y1 + 16, x1:x1 + 16])


def test_context_jitter_moves_each_patch_at_most_jitter_and_keeps_a_gap():
    images = coord_images(300, 64)
    _, second, labels, corners = ctx.context_pairs(images, patch=16, gap=6, jitter=2,  # 3 * 16 + 2 * 6 + 2 * 2 = 64
                                                   gen=torch.Generator().manual_seed(1))
    off = corners[:, 1] - corners[:, 0] - ctx.NEIGHBOURS[labels] * 22
    assert off.abs().max() == 4  # two independent jitters of at most 2 each
    assert corners.min() == 0 and corners.max() == 64 - 16  # the grid reaches every border, never beyond
    sep = (corners[:, 1] - corners[:, 0]).abs().max(1).values - 16  # Chebyshev gap between the two patches
    assert sep.min() >= 6 - 2 * 2
    with pytest.raises(ValueError, match="does not fit"):
        ctx.context_pairs(images, patch=20, gap=4, jitter=2)


def test_color_drop_keeps_exactly_one_channel():
    x = torch.randn(6, 3, 8, 8)
    y = ctx.color_drop(x, torch.Generator().manual_seed(0))
    for i in range(6):
        kept = [c for c in range(3) if torch.equal(y[i, c], x[i, c])]
        assert len(kept) == 1
        other = [c for c in range(3) if c != kept[0]]
        assert y[i, other].std() < x[i, kept[0]].std() / 20


# ---- colorization ---------------------------------------------------------------------------------------

def test_rgb_to_lab_matches_known_values_and_opencv():
    lab = col.rgb_to_lab(torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]).T[:, :, None])[:, :, 0].T
    assert torch.allclose(lab[0], torch.tensor([53.24, 80.09, 67.20]), atol=0.05)  # sRGB red, D65
    assert torch.allclose(lab[1], torch.tensor([100.0, 0.0, 0.0]), atol=0.01)
    assert torch.allclose(lab[2], torch.zeros(3), atol=1e-4)
    rgb = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    want = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    got = col.rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    assert np.abs(got - want).max() < 0.5  # OpenCV's float Lab is a close approximation


def test_colour_quantisation_round_trips():
    centres, lut = col.gamut_bins(10.0)
    q = len(centres)
    assert 250 < q < 400  # Zhang et al. report 313 in-gamut bins at grid 10
    assert np.array_equal(col.ab_to_bin(col.bin_to_ab(np.arange(q), 10.0), 10.0), np.arange(q))
    rgb = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    ab = col.rgb_to_lab(rgb)[1:].permute(1, 2, 0).numpy()
    back = col.bin_to_ab(col.ab_to_bin(ab, 10.0), 10.0)
    assert np.abs(back - ab).max() <= 5.0 + 1e-4  # every sRGB colour lies in its bin: half a grid step per axis


def test_colour_histograms_count_the_pixels_of_each_cell():
    img = torch.zeros(1, 3, 8, 8)
    img[0, 0, :, :2] = 1.0  # columns 0-1 red, 2-3 blue in the first 4x4 cell; the rest black
    img[0, 2, :, 2:4] = 1.0
    hist = col.colour_histograms(img, 10.0, 4)
    assert hist.shape[2:] == (2, 2) and torch.allclose(hist.sum(1), torch.ones(1, 2, 2))
    lab = col.rgb_to_lab(torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]).T[:, :, None])[1:, :, 0].T.numpy()
    red, blue = col.ab_to_bin(lab, 10.0)
    assert hist[0, red, 0, 0] == 0.5 and hist[0, blue, 0, 0] == 0.5
    black = col.ab_to_bin(np.zeros(2), 10.0)
    assert hist[0, black, 0, 1] == 1.0 and hist[0, black, 1, 1] == 1.0


# ---- inpainting -----------------------------------------------------------------------------------------

def test_central_mask_and_its_overlap_ring():
    m = inp.central_mask(96, 0.5)
    want = torch.zeros(96, 96, dtype=torch.bool)
    want[24:72, 24:72] = True
    assert torch.equal(m, want)
    ring = inp.overlap_ring(m, 4)
    grown = torch.zeros(96, 96, dtype=torch.bool)
    grown[20:76, 20:76] = True
    assert torch.equal(ring, grown & ~want)
    w = inp.loss_weights(m[None], 4, 10.0)[0]
    assert w[30, 30] == 1 and w[21, 30] == 10 and w[19, 30] == 0 and w.sum() == 48 * 48 + 10 * (56 * 56 - 48 * 48)


def test_random_masks_cover_the_asked_fraction():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        m = inp.random_block_mask(96, 0.25, 0.25, g)
        assert 0.25 <= m.float().mean() < 0.25 + 0.25 ** 2
        r = inp.random_region_mask(96, 0.25, g)
        assert int(r.sum()) == round(0.25 * 96 * 96)
    cfg = replace(section("pretrain").inpainting, mask="central")
    assert torch.equal(inp.make_masks(cfg, 3, 32)[2], inp.central_mask(32, 0.5))


# ---- deepcluster ----------------------------------------------------------------------------------------

def test_kmeans_splits_an_empty_cluster():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(10, 2, generator=g) * 0.1, torch.randn(10, 2, generator=g) * 0.1 + 5])
    init = torch.tensor([[0.0, 0.0], [5.0, 5.0], [100.0, 100.0]])  # the third attracts nothing
    labels, centroids, splits = dc.kmeans(x, 3, iters=5, gen=g, init=init)
    assert splits >= 1
    assert torch.bincount(labels, minlength=3).min() >= 1
    assert set(labels[:10].tolist()).isdisjoint(labels[10:].tolist())  # the split stays inside one blob


def test_sampling_is_uniform_over_clusters():
    labels = np.array([0] * 2 + [1] * 98)
    idx = dc.uniform_over_clusters(labels, 4000, np.random.default_rng(0))
    assert abs((labels[idx] == 0).mean() - 0.5) < 0.03


def test_pca_whitening_gives_unit_vectors_of_the_asked_dims():
    x = torch.randn(50, 16) * torch.arange(1, 17)
    z = dc.pca_whiten(x, 8)
    assert z.shape == (50, 8) and torch.allclose(z.norm(dim=1), torch.ones(50), atol=1e-5)
    assert torch.allclose(z, torch.nn.functional.normalize(dc.whiten(x, 8), dim=1))  # whiten, then L2-normalise


def test_whitening_gives_identity_covariance_on_the_top_principal_axes():
    """Correlated features of unequal scales: after whitening (before the L2 norm) the sample covariance is the
    identity, and the axes are the top principal ones (sklearn's PCA(whiten=True), up to each axis' sign)."""
    from sklearn.decomposition import PCA

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(200, 16, generator=g, dtype=torch.float64) * torch.arange(1, 17)) @ \
        torch.randn(16, 16, generator=g, dtype=torch.float64) + 3.0
    z = dc.whiten(x, 8)
    assert z.shape == (200, 8)
    assert torch.allclose(z.mean(0), torch.zeros(8, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(z.T @ z / (len(z) - 1), torch.eye(8, dtype=torch.float64), atol=1e-5)
    want = torch.from_numpy(PCA(8, whiten=True, svd_solver="full").fit_transform(x.numpy()))
    sign = torch.sign((z * want).sum(0))
    assert torch.allclose(z, want * sign, atol=1e-4)


# ---- training -------------------------------------------------------------------------------------------


def tiny_cfg(method: str) -> PretrainConfig:
    d = section("pretrain")
    return replace(d,
        method=method, epochs=2, batch_size=8, warmup_epochs=0, pretext_lr=1e-3,
        deepcluster=replace(d.deepcluster, k=3, crop_size=32),
        context=replace(d.context, patch=16, gap=4, jitter=2, hidden_dim=32),
        jigsaw=replace(d.jigsaw, tile=16, grid_crop=48, permutations=8, hidden_dim=32),
        colorization=replace(d.colorization, grid=20.0, crop_size=32),
        inpainting=replace(d.inpainting, crop_size=32))


def tiny_images(n: int = 8) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.zeros((n, 64, 64, 3), np.uint8)
    for i in range(n):  # a coloured square on a coloured background: structure every task can use
        img[i] = rng.integers(0, 255, 3)
        y, x = rng.integers(0, 32, 2)
        img[i, y:y + 24, x:x + 24] = rng.integers(0, 255, 3)
    return img


@pytest.mark.parametrize("method", [m for m in pretext.METHODS if m not in pretext.VIDEO_METHODS])  # video: test_pretext_video.py
def test_training_steps_lower_the_loss_on_a_fixed_batch(method):
    images = tiny_images()
    cfg = tiny_cfg(method)
    if method == "multitask":  # two tasks keep it fast; the weighted sum itself is checked below
        cfg = replace(cfg, multitask=replace(cfg.multitask, tasks={"jigsaw": 1.0, "inpainting": 0.5}))
    obj = pretext.build(method, tiny_backbone(), cfg, 64, len(images), seed=0)
    data = torch.from_numpy(images).permute(0, 3, 1, 2)
    obj.eval()
    obj.epoch_start(data, 0)
    obj.train()
    batch, idx = data.float() / 255.0, torch.arange(len(images))
    losses = fixed_batch_losses(obj, batch, idx)
    assert losses[-1] < losses[0], losses


def test_multitask_loss_is_the_weighted_sum_of_its_tasks():
    cfg = replace(tiny_cfg("multitask"), multitask=replace(
        section("pretrain").multitask, tasks={"context": 0.5, "inpainting": 2.0, "jigsaw": 0.0}))
    images = tiny_images()
    obj = pretext.build("multitask", tiny_backbone(), cfg, 64, len(images), seed=0)
    assert set(obj.tasks) == {"context", "inpainting"}
    batch, idx = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0, torch.arange(len(images))
    torch.manual_seed(3)
    total, extras = obj.loss(batch, idx)
    torch.manual_seed(3)
    want = 0.5 * obj.tasks["context"].loss(batch, idx)[0] + 2.0 * obj.tasks["inpainting"].loss(batch, idx)[0]
    assert torch.isclose(total, want) and set(extras) == {"loss_context", "loss_inpainting"}


def test_train_loop_updates_the_backbone_and_honours_the_time_budget():
    bb = tiny_backbone()
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    cfg = replace(tiny_cfg("deepcluster"), epochs=50, max_minutes=1e-9)
    out, history = pretext.train(bb, tiny_images(), cfg, seed=0)
    assert out is bb and len(history) == 1 and history[0]["steps"] == 1  # stopped after the first step
    assert history[0]["clusters"] == 3
    assert any(not torch.equal(before[k], v) for k, v in out.state_dict().items())


def test_objectives_reject_geometry_that_does_not_fit():
    with pytest.raises(ValueError, match="pretrain.jigsaw.tile.*multiple of the backbone's patch size 8"):
        pretext.build("jigsaw", tiny_backbone(), replace(
            tiny_cfg("jigsaw"), jigsaw=replace(tiny_cfg("jigsaw").jigsaw, tile=12)), 64, 8, 0)
    with pytest.raises(ValueError, match="pretrain.context.patch.*data.image_size 64"):
        pretext.build("context", tiny_backbone(), section("pretrain"), 64, 8, 0)


# ---- config ---------------------------------------------------------------------------------------------


def test_nested_pretrain_sections_are_checked_like_the_others():
    raw = raw_params()
    raw["pretrain"]["jigsaw"]["tiles"] = 3
    with pytest.raises(ConfigError, match=r"pretrain\.jigsaw\.tiles.*allowed keys: permutations"):
        parse_params(raw)
    raw = raw_params()
    raw["pretrain"]["multitask"]["tasks"] = {"jigsaw": 1.0, "rotation": 1.0}
    with pytest.raises(ConfigError, match="allowed values: deepcluster, context"):
        parse_params(raw)
    raw = raw_params()
    raw["pretrain"]["method"] = "rotation"
    with pytest.raises(ConfigError, match="allowed values: dino, deepcluster, context, jigsaw"):
        parse_params(raw)
    raw = raw_params()
    raw["pretrain"]["context"] = {"gap": 2}  # a partial section: params.yaml holds every value, no defaults
    with pytest.raises(ConfigError, match=r"'pretrain\.context\.patch' is missing; must be an integer >= 1"):
        parse_params(raw)


def test_dino_also_stops_within_the_time_budget_after_a_step():
    from pipeline.backbone import dino
    cfg = section("pretrain", epochs=50, batch_size=4, out_dim=16, hidden_dim=16, bottleneck_dim=8, global_crop_size=32,
                  local_crop_size=16, local_crops=1, max_minutes=1e-9)
    _, history = dino.train_dino(tiny_backbone(), tiny_images(), cfg, seed=0)
    assert len(history) == 1 and history[0]["steps"] == 1
