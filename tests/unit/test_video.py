"""Video datasets: the generated clips, the video-folder reader, frame names and neighbours, config checks."""
import cv2
import numpy as np
import pytest

from conftest import section
from pipeline import io
from pipeline.data import synth_video, video


def test_generated_clips_are_reproducible_and_labelled_with_known_classes():
    a = list(synth_video.generate_video_set(3, 2, 4, 64, 3, 1.5, (1.0, 2.0)))
    b = list(synth_video.generate_video_set(3, 2, 4, 64, 3, 1.5, (1.0, 2.0)))
    assert [n for n, _ in a] == ["clip_0000", "clip_0001"]
    assert all(np.array_equal(x.frames, y.frames) and np.array_equal(x.labels, y.labels) for (_, x), (_, y) in zip(a, b))
    for _, c in a:
        assert c.frames.shape == (4, 64, 64, 3) and c.labels.shape == (4, 64, 64) and c.camera.shape == (4, 2, 3)
        assert set(np.unique(c.labels)) <= {0, 1, 2, 3, 4} and (c.labels > 0).any()


def test_background_moves_exactly_as_the_camera_maps_say():
    """Frame t+1 at p shows the canvas point A_{t+1} p, which frame t shows at A_t^-1 A_{t+1} p: warping frame t
    that way reproduces frame t+1 on background pixels up to sensor noise, unlike leaving it in place."""
    c = synth_video.generate_clip(np.random.default_rng(0), 3, 96, 0, 1.5, (1.0, 2.0))
    a0, a1 = np.vstack([c.camera[0], [0, 0, 1]]), np.vstack([c.camera[1], [0, 0, 1]])
    m = (np.linalg.inv(a0) @ a1)[:2]
    warped = cv2.warpAffine(c.frames[0].astype(np.float32), m, (96, 96), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    inner = (slice(8, -8), slice(8, -8))
    moved = np.abs(warped[inner] - c.frames[1][inner]).mean()
    still = np.abs(c.frames[0][inner].astype(np.float32) - c.frames[1][inner]).mean()
    assert moved < 5 and still > 2 * moved


def test_objects_move_against_the_background():
    """Every object's true mask moves between frames by more than the background does around it."""
    c = synth_video.generate_clip(np.random.default_rng(2), 2, 96, 1, 1.5, (2.0, 3.0))
    y0, x0 = np.argwhere(c.labels[0] > 0).mean(0)
    y1, x1 = np.argwhere(c.labels[1] > 0).mean(0)
    a0, a1 = np.vstack([c.camera[0], [0, 0, 1]]), np.vstack([c.camera[1], [0, 0, 1]])
    bx, by, _ = np.linalg.inv(a1) @ a0 @ [x0, y0, 1]  # where the background under the object goes
    assert np.hypot(x1 - bx, y1 - by) > 1.0


def test_synthetic_video_dataset_samples_every_stride_th_frame():
    data = section("data", name="synthetic_video", image_size=48)
    vid = section("video", stride=3, synth_clips=2, synth_frames=7)
    names = [s.name for s in video.load(data, vid, 0)]
    assert names == [f"clip_000{c}__f0000{t}" for c in range(2) for t in (0, 3, 6)]
    capped = section("video", stride=3, max_frames=2, synth_clips=1, synth_frames=7)
    assert [s.name for s in video.load(data, capped, 0)] == ["clip_0000__f00000", "clip_0000__f00003"]


def test_sequences_and_neighbours_follow_time_order():
    names = ["a__b__f00000", "a__b__f00002", "a__b__f00004", "c__f00001"]
    seqs = video.sequences(names)
    assert seqs == {"a__b": names[:3], "c": ["c__f00001"]}
    assert video.neighbours(seqs) == {"a__b__f00000": ["a__b__f00002"], "a__b__f00002": ["a__b__f00000", "a__b__f00004"],
                                      "a__b__f00004": ["a__b__f00002"], "c__f00001": []}
    with pytest.raises(ValueError, match="not a frame name"):
        video.sequences(["plain_image"])


def write_video(path, frames, fourcc="MJPG"):
    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (w, h))
    assert out.isOpened()
    for f in frames:
        out.write(np.ascontiguousarray(f[..., ::-1]))
    out.release()


def test_video_folder_reads_files_and_frame_folders_with_stride_and_labels(tmp_path):
    frames = [np.full((40, 50, 3), 20 * i, np.uint8) for i in range(7)]
    write_video(tmp_path / "cam.avi", frames)
    (tmp_path / "walk").mkdir()
    for i, f in enumerate(frames[:5]):
        io.write_image(tmp_path / "walk" / f"img{i:03d}.png", f)
    for i in (0, 2, 4, 6):
        io.write_label(tmp_path / "labels" / "cam" / f"f{i:05d}.png", np.full((40, 50), i % 2, np.uint8))
    for i in (0, 2, 4):
        io.write_label(tmp_path / "labels" / "walk" / f"img{i:03d}.png", np.ones((40, 50), np.uint8))
    data = section("data", name="video", root=str(tmp_path), image_size=32, num_classes=2)
    out = list(video.load(data, section("video", stride=2), 0))
    assert [s.name for s in out] == ["cam__f00000", "cam__f00002", "cam__f00004", "cam__f00006",
                                     "walk__f00000", "walk__f00002", "walk__f00004"]
    grey = [int(s.image.mean()) for s in out]
    assert all(abs(g - e) <= 3 for g, e in zip(grey, [0, 40, 80, 120, 0, 40, 80]))  # MJPG is lossy
    # frames: short side 40 -> 32, aspect kept (50 -> 40); labels at the frame's original size
    assert all(s.image.shape == (32, 40, 3) and s.label.shape == (40, 50) and s.size == (40, 50) for s in out)


def test_video_folder_errors_name_the_problem(tmp_path):
    data = section("data", name="video", root=str(tmp_path), image_size=32)
    with pytest.raises(io.InputError, match="no videos found"):
        list(video.load(data, section("video"), 0))
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(io.InputError, match="broken.mp4"):
        list(video.load(data, section("video"), 0))
    (tmp_path / "broken.mp4").unlink()
    write_video(tmp_path / "v.avi", [np.zeros((40, 50, 3), np.uint8)] * 2)
    (tmp_path / "labels" / "v").mkdir(parents=True)
    skipped = []  # a missing label keeps its frame: only evaluation leaves it out
    [frame] = list(video.load(data, section("video"), 0, skipped))
    assert frame.name == "v__f00000" and frame.label is None
    lpath = tmp_path / "labels" / "v" / "f00000.png"
    assert skipped == [(str(lpath), f"label left out of evaluation (its image is used): {lpath}: label file not found")]
