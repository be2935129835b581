import cv2
import numpy as np
import pytest

from conftest import section
from pipeline.method import proposals


def two_region_features(h: int, w: int, blocks: list[tuple[slice, slice]], noise: float = 0.05) -> np.ndarray:
    """Patch features: background direction e0, objects direction e1, small noise -> (h, w, 8)."""
    rng = np.random.default_rng(0)
    f = np.zeros((h, w, 8), np.float32)
    f[..., 0] = 1
    for ys, xs in blocks:
        f[ys, xs] = 0
        f[ys, xs, 1] = 1
    return f + noise * rng.normal(size=f.shape).astype(np.float32)


def test_ncut_separates_an_object_from_the_background():
    f = two_region_features(10, 10, [(slice(3, 7), slice(2, 6))])
    props = proposals.patch_proposals(f, section("proposals", refine="none", num_eigs=1))
    truth = np.zeros((10, 10), bool)
    truth[3:7, 2:6] = True
    assert len(props) == 1
    assert np.array_equal(props[0].patches, truth)
    assert props[0].score > 0.5


def test_the_normalized_cut_runs_blas_on_one_thread_and_gives_it_back(monkeypatch):
    """patch_proposals limits BLAS to one thread around the affinity and the eigensolver (faster there, and the
    same bytes as in a one-thread pool worker) and restores the caller's threads afterwards."""
    from threadpoolctl import threadpool_info, threadpool_limits

    seen = []
    real = proposals.ncut_vectors
    monkeypatch.setattr(proposals, "ncut_vectors", lambda *a: seen.append(
        {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}) or real(*a))
    f = two_region_features(10, 10, [(slice(3, 7), slice(2, 6))])
    with threadpool_limits(2, user_api="blas"):
        props = proposals.patch_proposals(f, section("proposals", refine="none", num_eigs=1))
        after = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    assert seen == [{1}] and len(props) == 1
    assert after == {2}


def test_ncut_falls_back_to_the_dense_solver_when_lanczos_does_not_converge(monkeypatch):
    """The dense fallback gives Lanczos's eigenvector (up to sign) on a graph where both work."""
    from scipy.sparse.linalg import ArpackNoConvergence

    f = two_region_features(10, 10, [(slice(3, 7), slice(2, 6))])
    sim = proposals.affinity(f)
    lanczos = proposals.ncut_vectors(sim, 0.2, 1e-5, 1)[:, 0]

    def no_convergence(*args, **kwargs):
        raise ArpackNoConvergence("ARPACK error -1: No convergence", np.zeros(0), np.zeros((0, 0)))

    monkeypatch.setattr(proposals, "eigsh", no_convergence)
    dense = proposals.ncut_vectors(sim, 0.2, 1e-5, 1)[:, 0]
    np.testing.assert_allclose(np.abs(dense), np.abs(lanczos), atol=1e-8)
    assert len(proposals.patch_proposals(f, section("proposals", refine="none", num_eigs=1))) == 1


def test_two_objects_become_two_proposals_best_first():
    f = two_region_features(12, 12, [(slice(1, 5), slice(1, 5)), (slice(7, 11), slice(6, 11))])
    props = proposals.patch_proposals(f, section("proposals", refine="none", num_eigs=1))
    sizes = sorted(int(p.patches.sum()) for p in props)
    assert sizes == [16, 20]
    assert props[0].score >= props[1].score


def test_foreground_is_the_side_touching_the_border_less():
    vec = np.zeros(16)
    vec[[5, 6, 9, 10]] = 1.0  # centre 2x2 block of a 4x4 grid
    fg = proposals.foreground_side(vec - 0.1, (4, 4))
    assert fg.sum() == 4 and fg[1:3, 1:3].all()
    fg_inv = proposals.foreground_side(-vec, (4, 4))  # the sign of an eigenvector is arbitrary
    assert np.array_equal(fg, fg_inv)


def test_contrast_score_is_inside_minus_between():
    sim = np.array([[1.0, 0.8, 0.1], [0.8, 1.0, 0.3], [0.1, 0.3, 1.0]])
    m = np.array([True, True, False])
    assert np.isclose(proposals.contrast_score(sim, m), (1 + 0.8 + 0.8 + 1) / 4 - (0.1 + 0.3) / 2)


def test_pixel_masks_upsample_and_resolve_overlaps_to_the_better_proposal():
    a = np.zeros((4, 4), bool); a[0:2, 0:2] = True
    b = np.zeros((4, 4), bool); b[0:2, 0:3] = True
    image = np.zeros((32, 32, 3), np.uint8)
    cfg = section("proposals", refine="none", min_patches=1)
    m, kept = proposals.pixel_masks(image, [proposals.Proposal(a, 0.9, 1), proposals.Proposal(b, 0.5, 1)], 8, cfg)
    assert len(kept) == 2
    up_a, up_b = proposals.upsample(a, 32), proposals.upsample(b, 32)
    assert abs(int(up_a.sum()) - 16 * 16) < 16  # bilinear at 0.5: the 16x16 block, corners softened
    assert np.array_equal(m == 1, up_a)
    assert np.array_equal(m == 2, up_b & ~up_a)  # b keeps only what a left


def test_grabcut_snaps_a_coarse_mask_to_the_object_edge():
    image = np.full((64, 64, 3), 40, np.uint8)
    image[20:44, 20:44] = (220, 60, 60)
    truth = np.zeros((64, 64), bool); truth[20:44, 20:44] = True
    coarse = np.zeros((64, 64), bool); coarse[16:48, 16:48] = True  # patch-grid mask, too large
    refined = proposals.grabcut_refine(image, coarse, band=4, iters=3)
    iou = lambda a, b: (a & b).sum() / (a | b).sum()  # noqa: E731
    assert iou(refined, truth) > 0.95 > iou(coarse, truth)


def test_grabcut_at_a_bounded_side_refines_a_large_image_at_its_size_and_leaves_small_ones_alone(monkeypatch):
    """refine_max_side: an image whose longer side is above it is refined shrunk to that side (GrabCut sees the
    smaller image, band shrunk with it) and its mask comes back at the image's size on the object's edge (the guided
    upsampling: bilinear alone gives 0.944 here); an image at or below it gives exactly the full-resolution result."""
    image = np.full((256, 192, 3), 40, np.uint8)
    cv2.circle(image, (96, 128), 60, (220, 60, 60), -1)
    truth = image[..., 0] > 100
    coarse = cv2.dilate(truth.astype(np.uint8), np.ones((17, 17), np.uint8)).astype(bool)  # too large by 8 px
    seen = []
    real = proposals._grabcut
    monkeypatch.setattr(proposals, "_grabcut", lambda im, m, band, iters: seen.append((im.shape, band)) or
                        real(im, m, band, iters))
    iou = lambda a, b: (a & b).sum() / (a | b).sum()  # noqa: E731
    full = proposals.grabcut_refine(image, coarse, band=8, iters=3)
    small = proposals.grabcut_refine(image, coarse, band=8, iters=3, max_side=64)
    assert seen == [((256, 192, 3), 8), ((64, 48, 3), 2)]
    assert small.shape == (256, 192)
    assert iou(full, truth) > 0.99 and iou(small, truth) > 0.99 > 0.8 > iou(coarse, truth)
    assert np.array_equal(proposals.grabcut_refine(image, coarse, 8, 3, max_side=256), full)

def test_bounded_grabcut_shrinks_an_image_once_for_all_its_proposals_with_the_same_masks(monkeypatch):
    """pixel_masks builds the shrunk image and its guided filter (`Shrunk`) once per image, not once per proposal,
    and each mask is what grabcut_refine gives that proposal alone."""
    image = np.full((192, 256, 3), 40, np.uint8)
    cv2.circle(image, (64, 96), 40, (220, 60, 60), -1)
    cv2.rectangle(image, (160, 60), (230, 140), (60, 200, 60), -1)
    left = np.zeros((12, 16), bool); left[3:9, 1:7] = True
    right = np.zeros((12, 16), bool); right[3:10, 9:15] = True
    cfg = section("proposals", refine="grabcut", refine_max_side=64, refine_iters=3, min_patches=1)
    built = []
    real = proposals.Shrunk.__init__
    monkeypatch.setattr(proposals.Shrunk, "__init__", lambda self, *a: built.append(a[1:]) or real(self, *a))
    m, kept = proposals.pixel_masks(image, [proposals.Proposal(left, 0.9, 1), proposals.Proposal(right, 0.8, 1)], 16,
                                    cfg)
    assert built == [(64, cfg.refine_eps)]
    alone = [proposals.grabcut_refine(image, proposals.upsample(p, (192, 256)), 8, 3, max_side=64,
                                      eps=cfg.refine_eps) for p in (left, right)]
    assert len(built) == 3  # one per call without a shared one
    assert len(kept) == 2 and np.array_equal(m == 1, alone[0]) and np.array_equal(m == 2, alone[1] & ~alone[0])
    assert (m == 1)[96, 64] and (m == 2)[100, 195] and not m[5, 5]


def test_shrunk_for_shrinks_only_an_image_whose_longer_side_is_above_a_positive_bound():
    """One place decides the bounded path: None (full resolution) at max_side 0 and at a longer side equal to the
    bound; above it, the scale bound / longer side and the shrunk size rounded from it."""
    image = np.zeros((100, 200, 3), np.uint8)
    assert proposals.shrunk_for(image, 0, 1e-3) is None
    assert proposals.shrunk_for(image, 200, 1e-3) is None
    small = proposals.shrunk_for(image, 50, 1e-3)
    assert small.scale == 0.25 and small.size == (50, 25) and small.image.shape == (25, 50, 3)


def test_guided_filter_with_a_flat_guide_is_the_box_mean_and_keeps_constants():
    """A flat guide has no variance, so a = cov / (0 + eps) = 0 and q = box(box(p)): the box mean of the box mean
    (reflected borders), checked against cv2.boxFilter written out; a constant source stays that constant."""
    rng = np.random.default_rng(0)
    src = rng.random((20, 24)).astype(np.float32)
    flat = np.full((20, 24, 3), 100, np.uint8)
    box = lambda x: cv2.boxFilter(x, -1, (5, 5), borderType=cv2.BORDER_REFLECT)  # noqa: E731
    np.testing.assert_allclose(proposals.guided_filter(flat, src, 2, 1e-3), box(box(src)), atol=1e-5)
    image = rng.integers(0, 255, (20, 24, 3), np.uint8)
    np.testing.assert_allclose(proposals.guided_filter(image, np.full((20, 24), 0.7, np.float32), 3, 1e-3), 0.7,
                               atol=1e-4)


def test_guided_filter_on_a_colour_guide_matches_the_papers_equations_window_by_window():
    """He et al.'s colour guided filter written out with numpy on a 9 x 11 image, radius 1: per window k the 3x3
    covariance of the colours (+ eps I) solved for a_k, b_k = mean(p) - a_k . mean(I); per pixel the windows' mean
    a and b applied to its own colour (borders reflected, as cv2.BORDER_REFLECT). The exact filter (subsample 1)
    must give the same numbers."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (9, 11, 3), np.uint8)
    src = rng.random((9, 11)).astype(np.float32)
    r, eps = 1, 0.01
    guide = image.astype(np.float64) / 255
    pad = lambda x: np.pad(x, [(r, r), (r, r)] + [(0, 0)] * (x.ndim - 2), mode="symmetric")  # noqa: E731
    gi, gp = pad(guide), pad(src.astype(np.float64))
    a, b = np.zeros((9, 11, 3)), np.zeros((9, 11))
    for y in range(9):
        for x in range(11):
            win_i = gi[y:y + 2 * r + 1, x:x + 2 * r + 1].reshape(-1, 3)
            win_p = gp[y:y + 2 * r + 1, x:x + 2 * r + 1].reshape(-1)
            mu = win_i.mean(0)
            sigma = (win_i.T @ win_i) / len(win_i) - np.outer(mu, mu)
            a[y, x] = np.linalg.solve(sigma + eps * np.eye(3), (win_i * win_p[:, None]).mean(0) - mu * win_p.mean())
            b[y, x] = win_p.mean() - a[y, x] @ mu
    pa, pb = pad(a), pad(b)
    mean_a = np.stack([[pa[y:y + 3, x:x + 3].reshape(-1, 3).mean(0) for x in range(11)] for y in range(9)])
    mean_b = np.array([[pb[y:y + 3, x:x + 3].mean() for x in range(11)] for y in range(9)])
    expected = (mean_a * guide).sum(-1) + mean_b
    np.testing.assert_allclose(proposals.guided_filter(image, src, r, eps), expected, atol=2e-4)


def test_guided_refine_snaps_a_coarse_patch_mask_to_the_object_edge():
    """The 8 px patch mask of a 24 px square at an offset of 4 px overshoots by half a patch on each side; guided by
    the image it follows the square's edges (as GrabCut does, at a fraction of its cost)."""
    image = np.full((64, 64, 3), 40, np.uint8)
    image[20:44, 20:44] = (220, 60, 60)
    truth = np.zeros((64, 64), bool); truth[20:44, 20:44] = True
    patches = np.zeros((8, 8), bool); patches[2:6, 2:6] = True  # pixels 16..48: too large by 4 px each side
    coarse = proposals.upsample(patches, 64)
    refined = proposals.guided_refine(proposals.GuidedFilter(image, radius=8, eps=1e-3), patches)
    iou = lambda a, b: (a & b).sum() / (a | b).sum()  # noqa: E731
    assert iou(refined, truth) > 0.95 > iou(coarse, truth)
    cfg = section("proposals", refine="guided", refine_radius=8, refine_eps=1e-3, refine_subsample=1, min_patches=1)
    m, kept = proposals.pixel_masks(image, [proposals.Proposal(patches, 0.9, 1)], 8, cfg)
    assert len(kept) == 1 and np.array_equal(m == 1, refined)


def test_one_guided_filter_serves_every_source_of_its_image_as_separate_filters_do():
    """The image-only half is computed once per image: filtering two sources through one GuidedFilter gives what two
    fresh filters give, and pixel_masks with two proposals keeps both at the edges a fresh filter finds."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (40, 48, 3), np.uint8)
    srcs = [rng.random((40, 48)).astype(np.float32) for _ in range(2)]
    shared = proposals.GuidedFilter(image, 4, 1e-2)
    for src in srcs:
        np.testing.assert_array_equal(shared.filter(src), proposals.guided_filter(image, src, 4, 1e-2))
    left = np.zeros((5, 6), bool); left[1:4, 0:2] = True
    right = np.zeros((5, 6), bool); right[1:4, 4:6] = True
    cfg = section("proposals", refine="guided", refine_radius=4, refine_eps=1e-2, refine_subsample=1, min_patches=1)
    m, kept = proposals.pixel_masks(image, [proposals.Proposal(left, 0.9, 1), proposals.Proposal(right, 0.8, 1)], 8,
                                    cfg)
    fresh = [proposals.guided_refine(proposals.GuidedFilter(image, 4, 1e-2), p) for p in (left, right)]
    assert len(kept) == 2 and np.array_equal(m == 1, fresh[0]) and np.array_equal(m == 2, fresh[1] & ~fresh[0])


def test_the_fast_guided_filter_keeps_edges_at_full_resolution():
    """subsample 4 on a 96 px image (boxes at 24 px): a smooth source inside one region stays close to the exact
    filter, and the refined mask of a square still follows its edges to the pixel, though the boxes are 4x coarser."""
    image = np.full((96, 96, 3), 40, np.uint8)
    image[30:66, 26:70] = (200, 80, 60)
    truth = np.zeros((96, 96), bool); truth[30:66, 26:70] = True
    patches = np.zeros((12, 12), bool); patches[3:9, 3:9] = True  # pixels 24..72: off by up to 6 px
    exact = proposals.guided_refine(proposals.GuidedFilter(image, 16, 1e-3), patches)
    fast = proposals.guided_refine(proposals.GuidedFilter(image, 16, 1e-3, subsample=4), patches)
    iou = lambda a, b: (a & b).sum() / (a | b).sum()  # noqa: E731
    assert iou(exact, truth) > 0.97 and iou(fast, truth) > 0.97
    assert iou(proposals.upsample(patches, 96), truth) < 0.9
    ramp = np.tile(np.linspace(0, 1, 96, dtype=np.float32), (96, 1))
    flat = np.full((96, 96, 3), 90, np.uint8)
    np.testing.assert_allclose(proposals.guided_filter(flat, ramp, 8, 1e-3, subsample=4)[16:-16, 16:-16],
                               proposals.guided_filter(flat, ramp, 8, 1e-3)[16:-16, 16:-16], atol=0.01)


def test_patch_fractions_are_area_shares():
    m = np.zeros((16, 16), np.uint8)
    m[0:8, 0:4] = 1
    frac = proposals.patch_fractions(m, 1, (2, 2))
    assert np.allclose(frac[0], [[0.5, 0], [0, 0]])


def test_ncut_vectors_equal_the_dense_generalized_eigenvectors():
    from scipy.linalg import eigh
    rng = np.random.default_rng(1)
    x = rng.normal(size=(150, 16))
    x[:50] += 1.5
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    got = proposals.ncut_vectors(sim, tau=0.2, eps=1e-5, num_eigs=2)
    w = np.where(sim > 0.2, 1.0, 1e-5)
    d = np.diag(w.sum(1))
    _, ref = eigh(d - w, d, subset_by_index=[1, 2])
    for j in range(2):  # equal up to sign, with the same D-normalisation
        assert np.allclose(abs(got[:, j] @ d @ ref[:, j]), 1.0, atol=1e-6)
        assert np.allclose(got[:, j].T @ d @ got[:, j], 1.0, atol=1e-8)


def test_the_per_image_method_runs_on_a_non_square_grid():
    """A 48x80 image on a 6x10 patch grid (patch 8), as a non-square prepared image gives: the normalized cut finds
    the object on the (6, 10) grid, its pixel mask (with and without GrabCut) is (48, 80) and in the right place,
    patch fractions, the mask embedding, merge's mask and part grids and the label map keep the (6, 10) / (48, 80)
    shapes (rows and columns never swapped), next to a 10x6 image in the same merge."""
    from pipeline.method import cluster, labelmaps, merge
    from pipeline.report import viz

    f = two_region_features(6, 10, [(slice(1, 5), slice(5, 9))])
    truth = np.zeros((6, 10), bool)
    truth[1:5, 5:9] = True
    props = proposals.patch_proposals(f, section("proposals", refine="none", num_eigs=1))
    assert len(props) == 1 and props[0].patches.shape == (6, 10) and np.array_equal(props[0].patches, truth)
    image = np.full((48, 80, 3), 40, np.uint8)
    image[8:40, 40:72] = (220, 60, 60)
    for refine in ("none", "grabcut"):
        mask_map, kept = proposals.pixel_masks(image, props, 8, section("proposals", refine=refine))
        assert mask_map.shape == (48, 80) and len(kept) == 1
        ys, xs = np.nonzero(mask_map == 1)
        assert abs(ys.mean() - 23.5) < 2 and abs(xs.mean() - 55.5) < 2  # the object's centre, rows then columns
    frac = proposals.patch_fractions(mask_map, 1, (6, 10))
    assert frac.shape == (1, 6, 10) and np.array_equal(frac[0] >= 0.5, truth)
    emb = cluster.mask_embeddings(f, frac)
    assert emb.shape == (1, 8) and emb[0, 1] > 0.9  # the object's direction
    labels = labelmaps.render_labels(mask_map, np.array([2], np.uint8))
    assert labels.shape == (48, 80) and set(np.unique(labels)) == {0, 2}
    grid = merge.mask_grid(frac, np.array([0]), np.array([True]))
    tall_f = two_region_features(10, 6, [(slice(5, 9), slice(1, 5))])
    tall = np.zeros((10, 6), np.int64)
    tall[5:9, 1:5] = 2
    res = merge.refine(np.concatenate([f[grid > 0], tall_f[tall > 0]]), [f[grid > 0], tall_f[tall > 0]], [grid, tall],
                       np.concatenate([grid[grid > 0], tall[tall > 0]]) - 1, np.array([1, 1]),
                       section("merge", parts=2), 0, "sklearn")
    assert [g.shape for g in res.part_grids] == [(6, 10), (10, 6)]
    assert np.array_equal(res.part_grids[0] >= 0, truth) and np.array_equal(res.part_grids[1] >= 0, tall > 0)
    assert viz.mask_tile(image, mask_map == 1, np.array([255, 0, 0]), 32).shape == (32, 32, 3)


def ring_features() -> tuple[np.ndarray, np.ndarray]:
    """An 8x8 grid whose object is the one-patch ring along the border (28 patches, all of the border) around a
    6x6 background (36 patches): the object touches the border more than the background does, and, being the
    smaller side, holds the largest |eigenvector| entry -> features (8, 8, 8), object (8, 8) bool."""
    ring = np.ones((8, 8), bool)
    ring[1:7, 1:7] = False
    blocks = [(slice(0, 1), slice(0, 8)), (slice(7, 8), slice(0, 8)), (slice(0, 8), slice(0, 1)), (slice(0, 8), slice(7, 8))]
    return two_region_features(8, 8, blocks), ring


def test_fg_rule_border_takes_the_side_touching_the_border_less_seed_the_side_holding_the_seed():
    f, ring = ring_features()
    border = proposals.patch_proposals(f, section("proposals", refine="none", fg_rule="border", components="all"))
    seed = proposals.patch_proposals(f, section("proposals", refine="none", fg_rule="seed", components="all"))
    assert [p.patches.tolist() for p in border] == [(~ring).tolist()]  # the 6x6 interior
    assert [p.patches.tolist() for p in seed] == [ring.tolist()]  # TokenCut: the ring, where argmax |v| lies


def test_components_seed_keeps_only_the_component_holding_the_seed():
    # object: columns 0-1 (A) and column 7 (B), two components of the foreground side; B's features lean towards
    # the background (linked to it in the graph), so the largest |v| lies in A
    f = two_region_features(8, 8, [(slice(0, 8), slice(0, 2)), (slice(0, 8), slice(7, 8))])
    f[:, 7, 0] = 0.3
    a = np.zeros((8, 8), bool); a[:, 0:2] = True
    b = np.zeros((8, 8), bool); b[:, 7] = True
    every = proposals.patch_proposals(f, section("proposals", refine="none", fg_rule="seed", components="all"))
    only = proposals.patch_proposals(f, section("proposals", refine="none", fg_rule="seed", components="seed"))
    assert [p.patches.tolist() for p in every] == [a.tolist(), b.tolist()]
    assert [p.patches.tolist() for p in only] == [a.tolist()]


def test_seed_component_is_the_component_of_the_largest_entry_on_the_foreground():
    fg = np.zeros((4, 4), bool)
    fg[0, 0:2] = fg[3, 1:4] = True  # two components: 2 and 3 cells
    vec = np.zeros(16)
    vec[1], vec[14], vec[5] = 0.5, -0.9, 2.0  # index 5 (largest |v|) is off the foreground: the seed is 14
    assert proposals.seed_patch(vec, fg) == 14
    assert [c.tolist() for c in proposals.seed_component(fg, vec, 1)] == [(np.arange(16).reshape(4, 4) >= 13).tolist()]
    assert proposals.seed_component(fg, vec, 4) == []  # the seed's component is below min_size


def test_proposal_summary_counts_by_source_and_motion_on_still_images_is_a_clear_error():
    from pipeline.config import ConfigError
    from pipeline.method import propose
    table = {"a": [{"source": "ncut"}, {"source": "motion"}], "b": [], "c": [{"source": "ncut"}]}
    assert propose.summary(table, ["ncut", "motion"]) == {
        "images": 3, "proposals": 3, "images_without_proposal": 1, "by_source": {"ncut": 2, "motion": 1}}
    assert propose.neighbours({"dataset": "shapes"}, ["ncut"]) == {}
    with pytest.raises(ConfigError, match="'proposals.sources' includes motion but data.name is 'shapes'"):
        propose.neighbours({"dataset": "shapes"}, ["ncut", "motion"])
