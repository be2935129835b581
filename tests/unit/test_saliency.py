"""Classic saliency (RBD, MBD+, fusion, salient regions), its refinement's pieces, and saliency as a proposal source."""
import numpy as np
import pytest
from skimage import color

from conftest import section
from pipeline.method import propose, saliency, saliency_refine


def grid_superpixels(centre_lab, border_lab, cell=4):
    """A 3x3 grid of square superpixels (cell x cell pixels each): the centre one of one Lab colour, the eight
    around it of another."""
    labels = np.kron(np.arange(9).reshape(3, 3), np.ones((cell, cell), int))
    lab = np.empty(labels.shape + (3,))
    lab[:] = border_lab
    lab[labels == 4] = centre_lab
    return saliency.describe(labels, lab)


def square_on_texture(size=64, side=20, seed=0):
    """A red square in the middle of a grey noise texture: (size, size, 3) uint8 and its (size, size) bool mask."""
    rng = np.random.default_rng(seed)
    image = np.repeat(rng.integers(90, 150, (size, size, 1)), 3, 2).astype(np.uint8)
    mask = np.zeros((size, size), bool)
    lo = (size - side) // 2
    mask[lo:lo + side, lo:lo + side] = True
    image[mask] = [220, 30, 30]
    return image, mask


def test_boundary_connectivity_of_a_3x3_grid_matches_the_hand_computed_values():
    """Eight border superpixels of one colour, the centre 30 Lab units away in L (sigma_clr 10): geodesic 0 among
    the border ones (they are linked and alike), 30 from the centre to each; with e = exp(-30^2 / (2 10^2)):
    border BndCon = 8 / sqrt(8 + e), centre BndCon = 8 e / sqrt(1 + 8 e)."""
    sp = grid_superpixels([80.0, 0, 0], [50.0, 0, 0])
    assert sp.border.tolist() == [True] * 4 + [False] + [True] * 4
    geo = saliency.geodesic(sp, saliency.colour_distances(sp), "colour")
    np.testing.assert_allclose(geo[4, [0, 1, 2, 3, 5, 6, 7, 8]], 30.0, rtol=1e-9)
    np.testing.assert_allclose(geo[0, [1, 2, 3, 5, 6, 7, 8]], 0.0, atol=1e-9)
    e = np.exp(-900 / 200)
    bnd = saliency.boundary_connectivity(geo, sp.border, 10.0)
    want = np.full(9, 8 / np.sqrt(8 + e))
    want[4] = 8 * e / np.sqrt(1 + 8 * e)
    np.testing.assert_allclose(bnd, want, rtol=1e-9)
    w_bg = saliency.background_probability(bnd, 1.0)
    assert w_bg[4] < 0.01 and (np.delete(w_bg, 4) > 0.98).all()


def test_border_links_at_zero_cost_make_the_border_one_background_whatever_its_colours():
    """The top row of the border 30 Lab units from the rest of it (L 80 against 50), the centre at L 20. Linked at
    zero cost, the border superpixels' geodesics to each other are 0 and the centre's to each of them is its
    distance to the nearest one (30, through its left, right or bottom neighbour, not 60 through the top one):
    BndCon is then as for a border of one colour, 8 / sqrt(8 + e) on the border and 8 e / sqrt(1 + 8 e) at the
    centre, e = exp(-30^2 / (2 10^2)). Linked at their colour distance, the top row is 30 from the rest."""
    sp = grid_superpixels([20.0, 0, 0], [50.0, 0, 0])
    lab = sp.lab.copy()
    lab[[0, 1, 2]] = [80.0, 0, 0]
    sp = saliency.Superpixels(sp.labels, lab, sp.centres, sp.border, sp.edges)
    colour = saliency.geodesic(sp, saliency.colour_distances(sp), "colour")
    np.testing.assert_allclose(colour[0, [1, 2]], 0.0, atol=1e-9)
    np.testing.assert_allclose(colour[0, [3, 5, 6, 7, 8]], 30.0, rtol=1e-9)
    np.testing.assert_allclose(colour[4, [0, 1, 2]], 60.0, rtol=1e-9)  # 30 to the lower border, 30 up to the top
    geo = saliency.geodesic(sp, saliency.colour_distances(sp), "zero")
    border = [0, 1, 2, 3, 5, 6, 7, 8]
    np.testing.assert_allclose(geo[np.ix_(border, border)], 0.0, atol=1e-9)
    np.testing.assert_allclose(geo[4, border], 30.0, rtol=1e-9)
    e = np.exp(-900 / 200)
    want = np.full(9, 8 / np.sqrt(8 + e))
    want[4] = 8 * e / np.sqrt(1 + 8 * e)
    np.testing.assert_allclose(saliency.boundary_connectivity(geo, sp.border, 10.0), want, rtol=1e-9)


def test_least_squares_step_equals_a_direct_solve_of_the_stacked_residuals():
    """The linear system against numpy's lstsq on the residuals sqrt(w_bg) s, sqrt(w_fg) (s - 1) and
    sqrt(w_ij) (s_i - s_j), whose squared sum is the RBD cost."""
    rng = np.random.default_rng(3)
    n = 7
    edges = np.array([(i, i + 1) for i in range(n - 1)] + [(0, 3), (2, 6)])
    w_bg, w_fg = rng.random(n), rng.random(n)
    lab = rng.random((n, 3)) * 30
    d_app = np.sqrt(((lab[:, None] - lab[None]) ** 2).sum(-1))
    got = saliency.optimise(w_bg, w_fg, edges, d_app, 10.0, 0.1)
    w = np.exp(-d_app[edges[:, 0], edges[:, 1]] ** 2 / 200) + 0.1
    rows = [np.sqrt(w_bg[i]) * np.eye(n)[i] for i in range(n)] + [np.sqrt(w_fg[i]) * np.eye(n)[i] for i in range(n)]
    rows += [np.sqrt(wk) * (np.eye(n)[i] - np.eye(n)[j]) for (i, j), wk in zip(edges, w)]
    rhs = np.concatenate([np.zeros(n), np.sqrt(w_fg), np.zeros(len(edges))])
    want = np.linalg.lstsq(np.array(rows), rhs, rcond=None)[0]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_barrier_distance_is_the_height_of_the_plateau_to_cross():
    """A 7x7 channel of zeros with a 3x3 plateau of 10 inside and a 1x1 peak of 25 at its centre: the plateau's
    pixels must cross from 10 down to 0 (barrier 10), the peak from 25 down to 0 (25), the rest is 0."""
    x = np.zeros((7, 7))
    x[2:5, 2:5] = 10
    x[3, 3] = 25
    want = np.zeros((7, 7))
    want[2:5, 2:5] = 10
    want[3, 3] = 25
    np.testing.assert_array_equal(saliency.barrier_distance(x, 2), want)


def test_barrier_distance_follows_the_lowest_barrier_path_around_a_wall():
    """A wall of 9 between a pixel and the near border, a gap in it: the pixel's barrier is its own value range
    along the path through the gap (here 2 - 0 = 2), not the wall's 9."""
    x = np.zeros((6, 8))
    x[1:5, 4] = 9  # a wall from row 1 to 4 at column 4, the gap at rows 0 and 5 is the border itself
    x[2:4, 5:7] = 2  # a patch of 2 behind the wall, next to the right border column 7 (0)
    d = saliency.barrier_distance(x, 3)
    assert d[2, 5] == 2 and d[3, 6] == 2 and d[2, 4] == 9


def test_rbd_and_mbd_find_a_red_square_on_a_textured_border():
    image, mask = square_on_texture()
    cfg = section("saliency", superpixels=64)
    for cue in ("rbd", "mbd"):
        sal = saliency.CUES[cue](image, cfg)
        assert sal.shape == mask.shape and sal.min() >= 0 and sal.max() <= 1
        assert sal[mask].mean() > 0.7 and sal[~mask].mean() < 0.2, (cue, sal[mask].mean(), sal[~mask].mean())
    regions = saliency.salient_regions(saliency.saliency_maps(image, cfg)["fused"], "otsu", 50)
    assert len(regions) == 1
    region, score = regions[0]
    assert (region & mask).sum() / (region | mask).sum() > 0.85 and score > 0.5


def test_a_flat_image_has_no_saliency_and_gives_no_mask():
    image = np.full((48, 40, 3), 128, np.uint8)
    cfg = section("saliency")
    maps = saliency.saliency_maps(image, cfg)
    for key, m in maps.items():
        np.testing.assert_array_equal(m, 0, err_msg=key)
    assert saliency.threshold(maps["fused"], "otsu") == 1.0
    assert saliency.salient_regions(maps["fused"], "otsu", 1) == []
    assert propose.salient_masks(image, maps["fused"], section("proposals"), cfg, 8) == []


def test_thresholds_are_otsu_and_twice_the_mean():
    rng = np.random.default_rng(0)
    sal = np.concatenate([rng.uniform(0, 0.2, 100), rng.uniform(0.8, 1, 50)]).reshape(10, 15)
    assert saliency.threshold(sal, "twice_mean") == pytest.approx(2 * sal.mean())
    np.testing.assert_array_equal(sal > saliency.threshold(sal, "otsu"), sal > 0.5)  # Otsu splits the two groups
    assert saliency.threshold(np.array([[0.0, 0.1, 0.9, 1.0]]), "twice_mean") == 1.0  # clipped: 2 x 0.5


def test_salient_regions_are_components_best_first_small_ones_dropped():
    sal = np.zeros((20, 20))
    sal[2:8, 2:8] = 0.6  # 36 px
    sal[12:18, 12:18] = 1.0  # 36 px, higher
    sal[0, 19] = 1.0  # 1 px
    regions = saliency.salient_regions(sal, "twice_mean", 4)
    assert [int(m.sum()) for m, _ in regions] == [36, 36]
    assert regions[0][0][15, 15] and regions[1][0][5, 5]
    out = ~(regions[0][0]) & ~(sal > 0)
    np.testing.assert_allclose(regions[0][1], 1.0 - sal[~regions[0][0]].mean())
    assert out.any()


def test_png_round_trip_of_a_map():
    sal = np.linspace(0, 1, 256).reshape(16, 16)
    np.testing.assert_array_equal(saliency.to_png(sal), np.arange(256, dtype=np.uint8).reshape(16, 16))
    np.testing.assert_allclose(saliency.from_png(saliency.to_png(sal)), sal, atol=0.5 / 255)


# ---------------------------------------------------------------- the refinement (saliency_refine.py)

def test_moving_average_is_its_formula():
    before, prob = np.array([[0.2, 1.0]]), np.array([[1.0, 0.0]])
    np.testing.assert_allclose(saliency_refine.moving_average(before, prob, 0.75), [[0.4, 0.75]])
    np.testing.assert_array_equal(saliency_refine.moving_average(before, prob, 0.0), prob)


def test_round_labels_threshold_and_ignore_the_band_around_it():
    """twice_mean: mean 1/3, threshold 2/3; band 0.2 ignores 0.5 (0.167 from it), not 0.9 (0.233) or 0.3."""
    sal = np.array([[0.0, 0.1, 0.2, 0.3, 0.5, 0.9]])
    labels = saliency_refine.round_labels(sal, "twice_mean", 0.2)
    np.testing.assert_array_equal(labels, [[0, 0, 0, 0, 255, 1]])


def test_foreground_probability_of_a_two_class_prediction():
    from pipeline.train.predict import Prediction
    pred = Prediction(0, np.zeros((1, 2, 3), np.uint8), np.array([[1, 0]], np.uint8),
                      np.array([[0.9, 0.7]], np.float32), None)
    np.testing.assert_allclose(saliency_refine.foreground_probability(pred), [[0.9, 0.3]], rtol=1e-6)


def test_refinement_rounds_train_predict_and_average_into_the_maps():
    """Two rounds on four images of a red square on noise, starting from a map that is the square's left half:
    the network learns the red colour, so the averaged maps spread over the whole square."""
    import torch
    from pipeline.train.models import SegNet
    from conftest import tiny_backbone
    images, masks = zip(*(square_on_texture(64, 24, seed=s) for s in range(4)))
    maps = []
    for m in masks:
        half = m.copy()
        half[:, 32:] = False
        maps.append(half.astype(np.float64))
    cfg = section("saliency", rounds=2, epochs=15, momentum=0.5, ignore_band=0.05, crf=False)
    train = section("train", batch_size=4, workers=0, lr=0.01, decoder="simple", decoder_dim=16, warmup_epochs=0)
    seen = []
    out = saliency_refine.refine(list(images), maps, cfg, train, section("crf"),
                                 lambda: SegNet(tiny_backbone(), 2, 16, "simple", 8, 2), 0, torch.device("cpu"),
                                 on_round=lambda r, ms: seen.append(r))
    assert seen == [0, 1]
    right = [m & ~h.astype(bool) for m, h in zip(masks, maps)]
    right_half = np.mean([o[r].mean() for o, r in zip(out, right)])  # 0 in the maps it started from
    background = np.mean([o[~m].mean() for o, m in zip(out, masks)])
    assert right_half > 0.5 and background < 0.3 and right_half > background + 0.3, (right_half, background)


# ---------------------------------------------------------------- saliency as a proposal source

def test_auto_sources_put_motion_first_on_video_and_ncut_on_stills():
    assert propose.resolve_sources(["auto"], {"dataset": "synthetic"}) == ["saliency"]
    assert propose.resolve_sources(["auto"], {"dataset": "video", "videos": {}}) == ["motion", "ncut"]
    assert propose.resolve_sources(["saliency", "ncut"], {"dataset": "video", "videos": {}}) == ["saliency", "ncut"]


def test_saliency_and_ncut_proposals_of_one_image_the_earlier_source_wins_the_overlap(tmp_path):
    """An image with a red square; a saliency map covering the square; ncut on features whose patches inside
    the square differ: both sources find the square, and with [saliency, ncut] the mask is saliency's (ncut's
    copy overlaps it and is dropped), with [ncut, saliency] it is ncut's."""
    from pipeline import io
    image, mask = square_on_texture(64, 32)  # rows and columns 16..47: 4 x 4 patches of 8
    io.write_image(tmp_path / "prep" / "images" / "a.png", image)
    sal = mask.astype(np.float64) * 0.9
    io.write_gray(tmp_path / "sal" / "a.png", saliency.to_png(sal))
    rng = np.random.default_rng(0)
    feats = rng.normal(0, 0.05, (8, 8, 16)).astype(np.float32)
    inside = mask[4::8, 4::8]  # the patches whose centre is in the square
    feats[~inside, 0] += 1
    feats[inside, 1] += 1  # orthogonal to the rest: no affinity edge between the two
    got = {}
    for order in (["saliency", "ncut"], ["ncut", "saliency"]):
        propose.read_frame.cache_clear()
        name, rows = propose.propose_image(("a", feats), tmp_path / "out", str(tmp_path / "prep"),
                                           section("proposals", refine="none"), section("motion"),
                                           section("saliency"), order, {}, tmp_path / "sal")
        got[order[0]] = rows
        m = io.read_label(tmp_path / "out" / "masks" / "a.png") == 1
        assert (m & mask).sum() / (m | mask).sum() > 0.8, order
    assert [r["source"] for r in got["saliency"]] == ["saliency"]
    assert [r["source"] for r in got["ncut"]] == ["ncut"]


# ---------------------------------------------------------------- the stage

def test_the_stage_writes_maps_cues_and_pictures_only_when_saliency_is_a_source(tmp_path, monkeypatch):
    """The saliency stage's main() on 8 generated images: with proposals.sources [ncut] it writes only summary.json;
    with [saliency, ncut] (classic maps, rounds 0) each training image's map at its prepared size, one file per
    cue, and the heat picture, and the map is the cues' mean."""
    from conftest import run_prepare, write_params
    from pipeline import io
    from stages import saliency as stage
    small = {"synth_images": 8, "synth_eval_images": 2, "image_size": 64}
    manifest = run_prepare(tmp_path, monkeypatch, data=small)
    write_params(tmp_path, data=small, proposals={"sources": ["ncut"]})
    stage.main()
    out = tmp_path / "data" / "03_saliency"
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
    write_params(tmp_path, data=small, proposals={"sources": ["saliency", "ncut"]}, saliency={"rounds": 0})
    stage.main()
    names = manifest["names"]
    assert sorted(p.stem for p in (out / "maps").iterdir()) == sorted(names)
    for n in names:
        sal = io.read_label(out / "maps" / f"{n}.png")
        cues = [io.read_label(out / "cues" / c / f"{n}.png").astype(float) for c in ("rbd", "mbd")]
        assert sal.shape == (64, 64) and io.read_image(out / "heat" / f"{n}.jpg").shape == (64, 64, 3)
        assert np.abs(sal - np.mean(cues, 0)).max() <= 1  # the fused map, rounded once per written map
    assert io.read_json(out / "summary.json") == {"images": len(names), "cues": ["rbd", "mbd"], "rounds": 0}
