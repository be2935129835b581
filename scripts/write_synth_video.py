"""Write the generated video set to a folder, laid out as `data.name: video` reads it (to try the reader on it,
or to look at the clips in a video player): <out>/<clip>.avi (Motion-JPEG) or <out>/<clip>/f00000.png ...,
and the ground truth of every frame as <out>/labels/<clip>/f00000.png. Settings from params.yaml (video.synth_*,
data.image_size, data.synth_max_objects, seed).

    python scripts/write_synth_video.py /tmp/synth_video               # .avi files
    python scripts/write_synth_video.py /tmp/synth_frames --frames     # folders of PNG frames
    dvc exp run -S data.name=video -S data.root=/tmp/synth_video
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pipeline import io
from pipeline.config import load_params
from pipeline.data import synth_video


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder to write (created)")
    ap.add_argument("--frames", action="store_true", help="folders of PNG frames instead of .avi files")
    ap.add_argument("--fps", type=float, default=10.0, help="frame rate written into the .avi files")
    args = ap.parse_args()
    p = load_params()
    v = p.video
    clips = synth_video.generate_video_set(p.seed, v.synth_clips, v.synth_frames, p.data.image_size,
                                           p.data.synth_max_objects, v.synth_camera_speed, tuple(v.synth_object_speed))
    for name, clip in tqdm(clips, total=v.synth_clips, desc="clips"):
        if args.frames:
            for t, frame in enumerate(clip.frames):
                io.write_image(args.out / name / f"f{t:05d}.png", frame)
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            size = p.data.image_size
            writer = cv2.VideoWriter(str(args.out / f"{name}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), args.fps, (size, size))
            if not writer.isOpened():
                sys.exit("OpenCV cannot write Motion-JPEG .avi here; use --frames")
            for frame in clip.frames:
                writer.write(np.ascontiguousarray(frame[..., ::-1]))
            writer.release()
        for t, label in enumerate(clip.labels):
            io.write_label(args.out / "labels" / name / f"f{t:05d}.png", label)
    print(f"{v.synth_clips} clips -> {args.out}")


if __name__ == "__main__":
    main()
