"""The embedded video set: objects of the synthetic classes moving over a textured background, filmed by a
moving camera, with exact ground truth per frame.

A clip is rendered from a large static background canvas: frame t shows the canvas through the camera's
affine map A_t (frame pixel -> canvas pixel: a drift, a slow rotation and a slow zoom about the frame
centre), so the background's apparent motion is a smooth global transform. Each object is a sprite (shape
and texture of one class of pipeline/synth.py) that moves in frame coordinates with the background's
apparent velocity plus its own independent velocity (speed within `object_speed`) and a slow spin, so
every object moves relative to the background in every frame. Objects drawn later occlude earlier ones;
the label map is the same hard alpha that composes the image, so it is exact. Fresh sensor noise per frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

from pipeline.data import synth

_TEXTURE_SCALES = (4, 12)  # background texture: noise blobs of about these sizes in pixels ...
_TEXTURE_AMPLITUDE = 14.0  # ... each with this standard deviation (grey levels)
_SENSOR_NOISE = 2.0  # per-frame noise standard deviation (grey levels)
_MAX_ROTATION = 0.25  # camera rotation, degrees per frame at most
_MAX_ZOOM = 0.003  # camera zoom, relative change per frame at most
_MAX_SPIN = 1.0  # object rotation, degrees per frame at most


@dataclass
class Clip:
    """One rendered clip: frames (F, S, S, 3) uint8 RGB, labels (F, S, S) uint8 class indices,
    camera (F, 2, 3) float64 affine maps frame pixel -> background-canvas pixel."""

    frames: np.ndarray
    labels: np.ndarray
    camera: np.ndarray


def _canvas(rng: np.random.Generator, size: int) -> np.ndarray:
    """A static textured background (size, size, 3) float32: synth's smooth field plus noise blobs."""
    img = synth._background(rng, size)
    for scale in _TEXTURE_SCALES:
        n = max(2, size // scale)
        blob = cv2.resize(rng.normal(0, 1, (n, n)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
        img += _TEXTURE_AMPLITUDE * blob[..., None]
    return img


def camera_maps(rng: np.random.Generator, frames: int, size: int, canvas: int, speed: float) -> np.ndarray:
    """A smooth camera path -> (frames, 2, 3) affine maps frame pixel -> canvas pixel, drifting at `speed`
    px/frame in a random direction with a slow rotation and zoom about the frame centre, centred on the canvas."""
    angle = rng.uniform(0, 2 * np.pi)
    v = speed * rng.uniform(0.5, 1.0) * np.array([np.cos(angle), np.sin(angle)])
    rot = np.deg2rad(rng.uniform(-_MAX_ROTATION, _MAX_ROTATION))
    zoom = rng.uniform(-_MAX_ZOOM, _MAX_ZOOM)
    c = np.array([size / 2, size / 2])
    out = np.zeros((frames, 2, 3))
    for t in range(frames):
        dt = t - (frames - 1) / 2  # the path is centred on the canvas centre at mid-clip
        s, th = 1 + zoom * dt, rot * dt
        r = s * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        out[t, :, :2] = r
        out[t, :, 2] = np.array([canvas / 2, canvas / 2]) + v * dt - r @ c
    return out


def _sprite(cls: int, rng: np.random.Generator, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """One object of class `cls` -> (rgb (L, L, 3) float32, mask (L, L) float32) centred in an L x L square."""
    size = int(2 * np.ceil(radius) + 6)
    mask = synth._shape_mask(cls, size, size / 2, size / 2, radius, rng.uniform(0, 360)).astype(np.float32)
    hue = (synth._HUE_CENTRES[cls - 1] + rng.uniform(-synth._HUE_SPREAD, synth._HUE_SPREAD)) % 1.0
    c1 = synth._hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0)).astype(np.float32)
    c2 = synth._hsv_to_rgb((hue + rng.uniform(-0.08, 0.08)) % 1.0, rng.uniform(0.5, 1.0),
                           rng.uniform(0.25, 0.5)).astype(np.float32)
    tex = synth._texture(cls, rng, size)[..., None]
    rgb = tex * c1 + (1 - tex) * c2 + rng.normal(0, 5, (size, size, 1)).astype(np.float32)
    return rgb, mask


def generate_clip(rng: np.random.Generator, frames: int, size: int, num_objects: int, camera_speed: float,
                  object_speed: tuple[float, float]) -> Clip:
    """One clip of `frames` frames at size x size with `num_objects` independently moving objects (0 allowed:
    camera motion only). Speeds in pixels per frame."""
    travel = camera_speed * frames + size * (_MAX_ZOOM * frames + np.deg2rad(_MAX_ROTATION) * frames)
    canvas_size = int(size * 1.5 + 2 * travel)
    canvas = _canvas(rng, canvas_size)
    cams = camera_maps(rng, frames, size, canvas_size, camera_speed)
    # Apparent background velocity at the frame centre, in frame pixels per frame.
    centre = np.array([size / 2, size / 2, 1.0])
    inv0, inv1 = cv2.invertAffineTransform(cams[0]), cv2.invertAffineTransform(cams[-1])
    probe = cams[frames // 2] @ centre
    bg_velocity = (inv1 @ np.append(probe, 1) - inv0 @ np.append(probe, 1)) / max(frames - 1, 1)
    objects = []
    for _ in range(num_objects):
        cls = int(rng.integers(1, len(synth.CLASS_NAMES)))
        radius = rng.uniform(0.12, 0.22) * size
        rgb, mask = _sprite(cls, rng, radius)
        a = rng.uniform(0, 2 * np.pi)
        own = rng.uniform(*object_speed) * np.array([np.cos(a), np.sin(a)])
        velocity = bg_velocity + own
        mid = rng.uniform(radius, size - radius, 2)
        spin = np.deg2rad(rng.uniform(-_MAX_SPIN, _MAX_SPIN))
        objects.append((cls, rgb, mask, mid, velocity, spin))
    out_frames = np.zeros((frames, size, size, 3), np.uint8)
    out_labels = np.zeros((frames, size, size), np.uint8)
    for t in range(frames):
        img = cv2.warpAffine(canvas, cams[t], (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REFLECT)
        lab = np.zeros((size, size), np.uint8)
        dt = t - (frames - 1) / 2
        for cls, rgb, mask, mid, velocity, spin in objects:
            half = mask.shape[0] / 2
            m = cv2.getRotationMatrix2D((half, half), np.rad2deg(spin * dt), 1.0)
            m[:, 2] += mid + velocity * dt - half  # sprite centre -> the object's position in frame t
            alpha = cv2.warpAffine(mask, m, (size, size), flags=cv2.INTER_LINEAR) > 0.5
            obj = cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR)
            img[alpha] = obj[alpha]
            lab[alpha] = cls
        img += rng.normal(0, _SENSOR_NOISE, img.shape).astype(np.float32)
        out_frames[t] = np.clip(img, 0, 255).astype(np.uint8)
        out_labels[t] = lab
    return Clip(out_frames, out_labels, cams)


def generate_video_set(seed: int, clips: int, frames: int, size: int, max_objects: int, camera_speed: float,
                       object_speed: tuple[float, float]) -> Iterator[tuple[str, Clip]]:
    """`clips` clips from `seed`, 1..max_objects objects each -> (name 'clip_0003', Clip), one at a time."""
    rng = np.random.default_rng(seed)
    for i in range(clips):
        n = int(rng.integers(1, max_objects + 1))
        yield f"clip_{i:04d}", generate_clip(rng, frames, size, n, camera_speed, object_speed)
