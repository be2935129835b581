"""The video pretext objectives (temporal_order, tracking): their tuples, tracks and loss checked exactly, and
training lowers each loss; a video objective on still images is a clear error."""

import cv2
import numpy as np
import pytest
import torch

from conftest import fixed_batch_losses, raw_params, section, tiny_backbone
from pipeline.backbone import pretext
from pipeline.backbone.pretext import frames as fr
from pipeline.backbone.pretext import temporal_order as to
from pipeline.backbone.pretext import tracking as tr
from pipeline.config import ConfigError, parse_params, replace
from pipeline.data import synth_video, video


def coord_images(b: int, size: int) -> torch.Tensor:
    """(b, 3, size, size): channel 0 = row, channel 1 = column, channel 2 = image index (every pixel unique)."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.stack([torch.stack([y, x, torch.full_like(y, i)]) for i in range(b)]).float()


# ---- frame grouping -------------------------------------------------------------------------------------

def test_frame_indices_follow_the_manifest_videos_in_time_order():
    names = ["b__f00002", "a__f00000", "b__f00000", "a__f00002", "a__f00004"]
    videos = {"b": ["b__f00000", "b__f00002"], "a": ["a__f00000", "a__f00002", "a__f00004"]}
    got = video.frame_indices(videos, names)
    assert [g.tolist() for g in got] == [[2, 0], [1, 3, 4]] and got[0].dtype == np.int64
    with pytest.raises(ValueError, match="'a__f00006', which is not a prepared image"):
        video.frame_indices({"a": ["a__f00006"]}, names)
    assert fr.video_of_frame(got, 6).tolist() == [0, 1, 0, 1, 1, -1]


def test_video_objective_without_videos_names_the_fix():
    cfg = section("pretrain", method="tracking")
    for method in ("temporal_order", "tracking"):
        with pytest.raises(ConfigError, match=f"'pretrain.method' is {method}, a video objective.*"
                                              "set data.name to synthetic_video or video"):
            pretext.build(method, tiny_backbone(), cfg, 64, 8, seed=0, videos=None, motion=section("motion"))
    mt = replace(cfg, multitask=replace(cfg.multitask, tasks={"inpainting": 1.0, "tracking": 1.0}))
    with pytest.raises(ConfigError, match="synthetic_video or video"):
        pretext.build("multitask", tiny_backbone(), mt, 64, 8, seed=0, videos=None, motion=section("motion"))
    with pytest.raises(ConfigError, match="at least 4 kept frames; the longest has 3"):
        pretext.build("temporal_order", tiny_backbone(), cfg, 64, 8, seed=0, videos=[np.arange(3)], motion=section("motion"))


# ---- temporal order -------------------------------------------------------------------------------------

VIDEOS = [np.arange(100, 108), np.arange(200, 205), np.arange(300, 306)]  # dataset indices, time order


def test_shuffle_tuples_positives_in_order_negatives_have_a_middle_frame_outside_the_span():
    g = torch.Generator().manual_seed(0)
    vids = np.arange(600) % 3
    positive = np.arange(600) % 2 == 0
    frames, labels, times = to.shuffle_tuples(VIDEOS, vids, positive, span=5, motion=None, gen=g)
    assert frames.shape == (600, 3) and labels.tolist() == positive.astype(int).tolist()
    before = after = 0
    for f, lab, t, v in zip(frames, labels, times, vids):
        assert f.tolist() == VIDEOS[v][t].tolist()  # the frames are the video's frames at those times
        b, mid, d = t.tolist()
        assert b < d and d - b <= 4  # first and last inside a window of span 5
        if lab == 1:
            assert b < mid < d
        else:
            assert mid < b or mid > d
            before, after = before + (mid < b), after + (mid > d)
    assert before > 30 and after > 30  # both kinds of negative: (b, a, d) and (b, e, d)


def test_sort_classes_pair_each_permutation_with_its_reverse():
    perms, classes = to.order_classes()
    assert perms.shape == (24, 4) and len({tuple(p) for p in perms.tolist()}) == 24
    assert sorted(np.bincount(classes).tolist()) == [2] * 12  # 12 classes of two permutations each
    for p, c in zip(perms.tolist(), classes.tolist()):
        rev = perms.tolist().index(p[::-1])
        assert classes[rev] == c
    g = torch.Generator().manual_seed(1)
    frames, labels, shown = to.sort_tuples(VIDEOS, np.arange(300) % 3, span=0, motion=None, gen=g)
    for f, lab, s in zip(frames, labels, shown):
        k = perms.tolist().index(s.tolist())
        assert classes[k] == lab
        ordered = np.empty(4, np.int64)
        ordered[s] = f  # undo the shuffle: frame shown at position i is the s[i]-th in time
        assert (np.diff(ordered) > 0).all() and ordered[0] // 100 == ordered[-1] // 100
    assert set(labels.tolist()) == set(range(12))


def test_windows_are_drawn_where_the_frames_move():
    weights = np.zeros(20, np.float32)
    weights[14:] = 6.0  # only the last six frames move
    probs = to.window_probabilities(weights, 6)
    want = np.array([0.0] * 9 + [1, 2, 3, 4, 5, 6], dtype=np.float64) + to.WEIGHT_FLOOR  # mean motion of each window
    assert probs.shape == (15,) and np.allclose(probs, want / want.sum())
    g = torch.Generator().manual_seed(0)
    pos = np.array([to.sample_positions(20, 3, 6, weights, g) for _ in range(300)])
    assert (np.diff(pos, axis=1) > 0).all() and (pos[:, -1] - pos[:, 0] <= 5).all()
    assert (pos.min(1) >= 9).mean() > 0.98 and (pos >= 14).mean() > 0.5  # windows over the moving frames
    for _ in range(50):  # span 0: anywhere in the video, distinct and sorted
        p = to.sample_positions(5, 3, 0, None, g)
        assert len(set(p)) == 3 and p == sorted(p) and 0 <= p[0] and p[-1] <= 4


def test_tuple_crops_share_one_box_up_to_the_jitter():
    g = torch.Generator().manual_seed(0)
    base = fr.crop_boxes(50, 64, 64, 0.3, g)
    assert (base[:, 2] >= int(64 * 0.3 ** 0.5) - 1).all() and (base[:, :2] + base[:, 2:] <= 64).all()
    boxes = fr.jitter_boxes(base, 3, 4, 64, 64, g)
    assert (boxes[..., 2] == base[:, None, 2]).all()  # same side in every frame
    assert ((boxes[..., :2] - base[:, None, :2]).abs() <= 4).all() and (boxes[..., :2] >= 0).all()
    assert (boxes[..., :2] + boxes[..., 2:] <= 64).all()
    assert (fr.jitter_boxes(base, 3, 0, 64, 64, g) == base[:, None]).all()
    images = coord_images(2, 64)
    crops = fr.cut_and_resize(images, torch.tensor([[3, 5, 16], [10, 2, 16]]), 16)
    assert torch.equal(crops[0], images[0, :, 3:19, 5:21]) and torch.equal(crops[1], images[1, :, 10:26, 2:18])


def test_channel_split_shows_one_input_channel_in_all_three():
    x = torch.rand(40, 3, 8, 8)
    out = fr.channel_split(x, torch.Generator().manual_seed(0))
    kept = set()
    for a, b in zip(x, out):
        c = [k for k in range(3) if torch.equal(b[0], a[k])]
        assert len(c) == 1 and torch.equal(b[1], a[c[0]]) and torch.equal(b[2], a[c[0]])
        kept.add(c[0])
    assert kept == {0, 1, 2}


# ---- tracking -------------------------------------------------------------------------------------------

def translating_clip(frames: int = 4, size: int = 96, step=(2, 3)) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A textured square (28 px) moving by step = (dy, dx) px per frame over a static textured background ->
    (frames (F, size, size, 3) uint8, the square's top-left (y, x) per frame)."""
    rng = np.random.default_rng(0)
    bg = cv2.GaussianBlur(rng.uniform(0, 255, (size, size, 3)).astype(np.float32), (0, 0), 1.5)
    obj = cv2.GaussianBlur(rng.uniform(0, 255, (28, 28, 3)).astype(np.float32), (0, 0), 1.0)
    out, corners = [], []
    for t in range(frames):
        y, x = 20 + step[0] * t, 15 + step[1] * t
        img = bg.copy()
        img[y:y + 28, x:x + 28] = obj
        out.append(np.clip(img, 0, 255).astype(np.uint8))
        corners.append((y, x))
    return np.stack(out), corners


def test_a_tracked_patch_lands_where_the_object_moved():
    clip, corners = translating_clip()
    data = torch.from_numpy(clip).permute(0, 3, 1, 2).contiguous()
    cfg = replace(section("pretrain").tracking, patch=16, track_frames=3, queries_per_frame=1)
    tracks = tr.build_tracks(data, [np.arange(4)], cfg, section("motion"), seed=0)
    first = np.flatnonzero(tracks.anchor_frame == 0)
    assert len(first) == 1 and tracks.moving[first[0]]
    ay, ax = tracks.anchor_yx[first[0]]
    oy, ox = corners[0]
    assert oy <= ay and ay + 16 <= oy + 28 and ox <= ax and ax + 16 <= ox + 28  # the query sits on the moving square
    py, px = tracks.positive_yx[first[0]]
    assert tracks.positive_frame[first[0]] == 3
    assert abs(py - (ay + 3 * 2)) <= 1 and abs(px - (ax + 3 * 3)) <= 1  # moved with the square: 3 frames of (2, 3)


def test_query_patches_fall_back_to_one_random_patch_where_nothing_moves():
    rng = np.random.default_rng(0)
    res = np.zeros((64, 64), np.float32)
    (y, x, moving), = tr.query_patches(res, 16, 3, 1.0, rng)
    assert not moving and 0 <= y <= 48 and 0 <= x <= 48
    res[5:25, 30:50] = 3.0
    res[40:60, 2:22] = 2.0
    q = tr.query_patches(res, 16, 3, 1.0, rng)
    assert [m for _, _, m in q] == [True, True] and 5 <= q[0][0] <= 9 and 30 <= q[0][1] <= 34  # strongest first
    assert 40 <= q[1][0] <= 44 and 2 <= q[1][1] <= 6


def test_negatives_come_from_other_videos_or_from_the_positive_frame_away_from_it():
    images, videos = tiny_videos()
    data = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    for negatives in ("other_video", "same_frame"):
        cfg = replace(section("pretrain").tracking, patch=16, track_frames=2, negatives=negatives)
        obj = tr.TrackingNet(tiny_backbone(), cfg, 64, videos, section("motion"), seed=0)
        obj.epoch_start(data, 0)
        t = obj.tracks
        rows = np.arange(len(t))
        frames, yx, vids = obj.negatives(rows, torch.Generator().manual_seed(0))
        assert ((yx >= 0) & (yx <= 64 - 16)).all()
        if negatives == "other_video":
            assert (vids != t.video).all() and (fr.video_of_frame(videos, 15)[frames] == vids).all()
        else:
            assert (frames == t.positive_frame).all() and (vids == t.video).all()
            apart = np.abs(yx - t.positive_yx) >= 16
            assert (apart[:, 0] | apart[:, 1]).all()  # no overlap with the positive patch
    assert tr.apart_corner(48, 48, 16, (4, 6), tries=0) == (32, 32)  # no draw: the corner farthest from the box


def test_triplet_loss_matches_the_formula():
    torch.manual_seed(0)
    a, p, n = torch.randn(5, 7), torch.randn(5, 7), torch.randn(5, 3, 7)
    m = 0.5

    def dist(u, v):
        return 1 - float(u @ v) / (float(u.norm()) * float(v.norm()))

    want = np.mean([max(0.0, dist(a[i], p[i]) - dist(a[i], n[i, k]) + m) for i in range(5) for k in range(3)])
    assert abs(float(tr.triplet_loss(a, p, n, m)) - want) < 1e-5
    valid = torch.tensor([[True, False, False]] * 5)
    want1 = np.mean([max(0.0, dist(a[i], p[i]) - dist(a[i], n[i, 0]) + m) for i in range(5)])
    assert abs(float(tr.triplet_loss(a, p, n, m, valid)) - want1) < 1e-5


def test_hard_negatives_are_the_nearest_allowed_candidates():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cands = torch.tensor([[1.0, 0.1], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    allowed = torch.tensor([[False, True, True, True], [True, True, False, True]])  # no own-video candidate
    ind, valid = tr.hardest_negatives(a, cands, allowed, 2)
    assert ind.tolist() == [[1, 2], [1, 0]] and valid.all()
    ind, valid = tr.hardest_negatives(a, cands, torch.tensor([[False, True, False, False]] * 2), 2)
    assert ind[:, 0].tolist() == [1, 1] and valid.tolist() == [[True, False]] * 2


# ---- training -------------------------------------------------------------------------------------------


def tiny_videos() -> tuple[np.ndarray, list[np.ndarray]]:
    """3 generated clips of 5 frames at 64 px -> (frames (15, 64, 64, 3) uint8, videos)."""
    clips = synth_video.generate_video_set(0, 3, 5, 64, 2, 1.5, (2.0, 3.0))
    images = np.concatenate([c.frames for _, c in clips])
    return images, [np.arange(5 * i, 5 * i + 5) for i in range(3)]


@pytest.mark.parametrize("method,mode", [("temporal_order", "shuffle"), ("temporal_order", "sort"),
                                         ("tracking", "other_video"), ("tracking", "same_frame")])
def test_training_steps_lower_the_video_losses_on_a_fixed_batch(method, mode):
    images, videos = tiny_videos()
    d = section("pretrain")
    order_mode, negatives = (mode, "other_video") if method == "temporal_order" else ("shuffle", mode)
    cfg = replace(d, method=method, temporal_order=replace(d.temporal_order, mode=order_mode, crop_size=32, hidden_dim=32),
                  tracking=replace(d.tracking, patch=16, track_frames=2, hidden_dim=32, out_dim=16,
                                   hard_after_epochs=0, negatives=negatives))
    obj = pretext.build(method, tiny_backbone(), cfg, 64, len(images), seed=0, videos=videos, motion=section("motion"))
    data = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    obj.eval()
    obj.epoch_start(data, 0)
    obj.train()
    idx = torch.from_numpy(obj.sample_order(8, np.random.default_rng(0)))
    batch = data[idx].float() / 255.0
    losses = fixed_batch_losses(obj, batch, idx)
    assert losses[-1] < losses[0], losses


def test_multitask_takes_the_video_objectives_as_tasks():
    images, videos = tiny_videos()
    d = section("pretrain")
    cfg = replace(d, method="multitask", multitask=replace(d.multitask, tasks={"temporal_order": 1.0, "tracking": 0.5}),
                  temporal_order=replace(d.temporal_order, crop_size=32, hidden_dim=16),
                  tracking=replace(d.tracking, patch=16, track_frames=2, hidden_dim=16, out_dim=8),
                  epochs=1, batch_size=8)
    _, history = pretext.train(tiny_backbone(), images, cfg, seed=0, videos=videos, motion=section("motion"))
    assert len(history) == 1 and {"loss_temporal_order", "loss_tracking"} <= set(history[0])


def test_video_sections_are_checked_like_the_others():
    raw = raw_params()
    raw["pretrain"]["temporal_order"]["mode"] = "reverse"
    with pytest.raises(ConfigError, match=r"pretrain\.temporal_order\.mode.*allowed values: shuffle, sort"):
        parse_params(raw)
    raw = raw_params()
    raw["pretrain"]["tracking"]["margin"] = 0
    with pytest.raises(ConfigError, match=r"pretrain\.tracking\.margin"):
        parse_params(raw)
    raw = raw_params()
    raw["pretrain"]["method"] = "tracking"
    raw["pretrain"]["multitask"]["tasks"] = {"tracking": 1.0, "temporal_order": 0.5}
    p = parse_params(raw)
    assert p.pretrain.tracking.hard_negatives == 4 and p.pretrain.temporal_order.mode == "shuffle"
