"""Video datasets for the prepare stage: the generated clips (synthetic_video) or a folder of videos (video).

Every video is sampled every `video.stride` frames (at most `video.max_frames` kept); a kept frame becomes a
prepared image named `<video>__f<index>` (index in the original video, 5 digits), so the frames of one video
sort in time order and the manifest can list which prepared images are consecutive.

Folder layout (`data.root`): video files OpenCV can read (mp4, avi, mov, mkv, ...) and/or folders of frame
images (frames in file-name order), side by side; optional ground truth in `labels/<video>/`, one 8-bit class
PNG per kept frame: `f<index>.png` for a video file (f00012.png), the frame's own stem for a frame folder.
Ground truth keeps the frame's original size; a missing or bad label leaves the frame in, recorded in skipped.

Two splits, by WHOLE videos (never frames of one video on both sides): the evaluation split is data.eval_root (a
second folder of videos) or the videos whose name datasets.in_eval_split holds out at data.eval_fraction (the
generated clips too); `load` gives the training split, `load_eval` the evaluation split.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from pipeline import io
from pipeline.config import DataConfig, VideoConfig
from pipeline.data import synth, synth_video
from pipeline.data.datasets import Sample, in_eval_split, label_or_none, resize_image

KINDS = ("synthetic_video", "video")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".ogv")
LABELS = "labels"


def frame_name(video: str, index: int) -> str:
    """('clip_0003', 12) -> 'clip_0003__f00012', the prepared image's name."""
    return f"{video}__f{index:05d}"


def sequences(names: list[str]) -> dict[str, list[str]]:
    """Prepared frame names -> {video: its frame names in the given (time) order}."""
    out: dict[str, list[str]] = {}
    for n in names:
        video, sep, frame = n.rpartition("__")
        if not sep or not frame.startswith("f"):
            raise ValueError(f"sequences: {n!r} is not a frame name <video>__f<index>")
        out.setdefault(video, []).append(n)
    return out


def neighbours(videos: dict[str, list[str]]) -> dict[str, list[str]]:
    """{video: frame names in order} -> {frame: [previous frame, next frame] (those that exist)}."""
    out = {}
    for frames in videos.values():
        for i, n in enumerate(frames):
            out[n] = [frames[j] for j in (i - 1, i + 1) if 0 <= j < len(frames)]
    return out


def frame_indices(videos: dict[str, list[str]], names: list[str]) -> list[np.ndarray]:
    """manifest["videos"] ({video: frame names in time order}) and manifest["names"] -> one int64 array per
    video (in the dict's order) of the frames' positions in `names`, in time order (what the video pretext
    objectives consume). Raises ValueError naming a frame that is not among the prepared images."""
    pos = {n: i for i, n in enumerate(names)}
    out = []
    for vname, frames in videos.items():
        missing = [f for f in frames if f not in pos]
        if missing:
            raise ValueError(f"frame_indices: video {vname!r} lists {missing[0]!r}, which is not a prepared image")
        out.append(np.array([pos[f] for f in frames], dtype=np.int64))
    return out


def list_videos(root: str | Path) -> list[tuple[str, Path]]:
    """`root` -> sorted [(video name, path)]: video files (name = stem) and folders holding images (name = folder
    name), `labels/` excepted. Raises InputError when there are none or two share a name."""
    root = Path(root)
    if not root.is_dir():
        raise io.InputError(f"{root}: folder not found (data.root must hold videos or folders of frames)")
    found = []
    for p in sorted(root.iterdir()):
        if p.is_file() and p.suffix.lower() in VIDEO_EXTS:
            found.append((p.stem, p))
        elif p.is_dir() and p.name != LABELS and io.list_images(p):
            found.append((p.name, p))
    if not found:
        raise io.InputError(f"{root}: no videos found (expected files {', '.join(VIDEO_EXTS)} or folders of frame images)")
    names = [n for n, _ in found]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise io.InputError(f"{root}: two videos share the name {dup[0]!r} (a file and a folder?); rename one")
    return found


def read_frames(path: str | Path, stride: int, max_frames: int = 0) -> Iterator[tuple[int, str, np.ndarray]]:
    """Every stride-th frame of a video file or frame folder -> (index, label stem, (H, W, 3) uint8 RGB),
    at most max_frames of them (0 = all). Label stem: f<index> for a file, the frame's file stem for a folder."""
    path = Path(path)
    kept = 0
    if path.is_dir():
        for i, f in enumerate(io.list_images(path)):
            if max_frames and kept == max_frames:
                return
            if i % stride == 0:
                kept += 1
                yield i, f.stem, io.read_image(f)
        return
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise io.InputError(f"{path}: OpenCV cannot open this video (codec missing or not a video file)")
    try:
        i = 0
        while not (max_frames and kept == max_frames):
            ok, bgr = cap.read()
            if not ok:
                break
            if i % stride == 0:
                kept += 1
                yield i, f"f{i:05d}", np.ascontiguousarray(bgr[..., ::-1])
            i += 1
    finally:
        cap.release()
    if i == 0:
        raise io.InputError(f"{path}: OpenCV opened the video but read no frame from it")


def folder_videos(data: DataConfig, video: VideoConfig, skipped: list[tuple[str, str]] | None = None, *,
                  patch: int = 1, part: str = "train") -> Iterator[Sample]:
    """One split's videos -> Sample(frame name, image (resize_image), label at the frame's size or None, (H, W))
    for every kept frame. part 'train': data.root's videos less those data.eval_fraction holds out; 'eval':
    data.eval_root's videos, or the held-out ones of data.root, or none."""
    skipped = [] if skipped is None else skipped
    if part == "eval" and not data.eval_root and not data.eval_fraction:
        return
    root = Path(data.eval_root if part == "eval" and data.eval_root else data.root)
    labels_dir = root / LABELS
    for vname, path in list_videos(root):
        if data.eval_fraction and in_eval_split(vname, data.eval_fraction) != (part == "eval"):
            continue
        for index, stem, image in read_frames(path, video.stride, video.max_frames):
            label = None
            if labels_dir.is_dir():
                lpath = labels_dir / vname / f"{stem}.png"
                label = label_or_none(lambda: io.read_label(lpath), image.shape, data.num_classes, lpath, path, skipped)
            yield Sample(frame_name(vname, index), resize_image(image, data.image_size, patch), label, image.shape[:2])


def synthetic_videos(data: DataConfig, video: VideoConfig, seed: int, part: str = "train") -> Iterator[Sample]:
    """The generated clips (pipeline/synth_video.py) from `seed`, sampled like any video; the clips whose name
    data.eval_fraction holds out form the evaluation split (part 'eval'), the others the training split."""
    if part == "eval" and not data.eval_fraction:
        return
    clips = synth_video.generate_video_set(seed, video.synth_clips, video.synth_frames, data.image_size,
                                           data.synth_max_objects, video.synth_camera_speed,
                                           tuple(video.synth_object_speed))
    for vname, clip in clips:
        if data.eval_fraction and in_eval_split(vname, data.eval_fraction) != (part == "eval"):
            continue
        kept = range(0, len(clip.frames), video.stride)
        if video.max_frames:
            kept = kept[:video.max_frames]
        for t in kept:
            yield Sample(frame_name(vname, t), clip.frames[t], clip.labels[t], (data.image_size, data.image_size))


def load(data: DataConfig, video: VideoConfig, seed: int, skipped: list[tuple[str, str]] | None = None, *,
         patch: int = 1, part: str = "train") -> Iterator[Sample]:
    """The training split (part 'eval': the evaluation split) of the video dataset named by data.name
    (synthetic_video | video); labels left out of evaluation are appended to `skipped` as (file, reason)."""
    if data.name == "synthetic_video":
        return synthetic_videos(data, video, seed, part)
    if data.name == "video":
        return folder_videos(data, video, skipped, patch=patch, part=part)
    raise ValueError(f"video.load: data.name {data.name!r} is not a video dataset ({', '.join(KINDS)})")


def load_eval(data: DataConfig, video: VideoConfig, seed: int, skipped: list[tuple[str, str]] | None = None, *,
              patch: int = 1) -> Iterator[Sample]:
    """The evaluation split of the video dataset (whole videos held out; empty when eval_root and eval_fraction
    are unset)."""
    return load(data, video, seed, skipped, patch=patch, part="eval")


def class_names(data: DataConfig) -> list[str]:
    """The synthetic classes for synthetic_video, class_0..class_{C-1} for a folder of videos."""
    if data.name == "synthetic_video":
        return list(synth.CLASS_NAMES)
    return [f"class_{i}" for i in range(data.num_classes)]
