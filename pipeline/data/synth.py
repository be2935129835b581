"""The embedded default dataset: synthetic scenes generated from a seed, with exact ground truth.

Four object classes that differ in shape and texture; their colour ranges overlap, so no pixel
colour alone names a class. Background is a smooth, low-saturation texture. 1..max objects per
image, varied scale, later objects occlude earlier ones.

    class 1 "disc"     : circle,          stripes
    class 2 "square"   : rotated square,  checkerboard
    class 3 "triangle" : triangle,        dots
    class 4 "cross"    : plus sign,       fine grid lines
"""
from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

CLASS_NAMES = ("background", "disc", "square", "triangle", "cross")
# Hue centre of each object class (in [0, 1)); each class draws hue within +-0.3 of it, so ranges overlap.
_HUE_CENTRES = (0.0, 0.25, 0.5, 0.75)
_HUE_SPREAD = 0.3


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (each in [0, 1]) -> (3,) uint8 RGB."""
    px = np.array([[[h * 180.0, s * 255.0, v * 255.0]]], dtype=np.float32)
    return cv2.cvtColor(px.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth low-saturation colour field plus fine noise: (size, size, 3) float32 in [0, 255]."""
    low = rng.uniform(0, 1, (4, 4, 3)).astype(np.float32)
    low = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    grey = low.mean(axis=2, keepdims=True)
    sat = rng.uniform(0.15, 0.4)
    img = grey + sat * (low - grey)
    img = 60 + 130 * np.clip(img, 0, 1)
    img += rng.normal(0, 6, (size, size, 1)).astype(np.float32)
    return img


def _shape_mask(cls: int, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Binary (size, size) uint8 mask of one object of class `cls` centred at (cx, cy) with radius r."""
    m = np.zeros((size, size), np.uint8)
    if cls == 1:
        cv2.circle(m, (int(round(cx)), int(round(cy))), int(round(r)), 1, -1)
        return m
    if cls == 2:
        pts = [(r * 0.85, a) for a in np.deg2rad(angle + np.array([45, 135, 225, 315]))]
    elif cls == 3:
        pts = [(r, a) for a in np.deg2rad(angle + np.array([90, 210, 330]))]
    else:
        w = 0.38 * r
        arm = [(w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w), (-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w)]
        t = np.deg2rad(angle)
        poly = [(cx + x * np.cos(t) - y * np.sin(t), cy + x * np.sin(t) + y * np.cos(t)) for x, y in arm]
        cv2.fillPoly(m, [np.round(np.array(poly)).astype(np.int32)], 1)
        return m
    poly = [(cx + d * np.cos(a), cy + d * np.sin(a)) for d, a in pts]
    cv2.fillPoly(m, [np.round(np.array(poly)).astype(np.int32)], 1)
    return m


def _texture(cls: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size) float32 in [0, 1]: 1 where the texture takes the object's first colour."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if cls == 1:  # stripes, random orientation, period 6..9
        t = rng.uniform(0, np.pi)
        period = rng.uniform(6, 9)
        return (np.sin(2 * np.pi * (xx * np.cos(t) + yy * np.sin(t)) / period) > 0).astype(np.float32)
    if cls == 2:  # checkerboard, cells 4..6
        cell = int(rng.integers(4, 7))
        ox, oy = rng.integers(0, cell, 2)
        return ((((xx + ox) // cell) + ((yy + oy) // cell)) % 2).astype(np.float32)
    if cls == 3:  # dots on a grid, spacing 7..9
        s = rng.uniform(7, 9)
        dx = (xx % s) - s / 2
        dy = (yy % s) - s / 2
        return (dx * dx + dy * dy < (s * 0.28) ** 2).astype(np.float32)
    s = int(rng.integers(5, 8))  # thin grid lines
    return (((xx % s) < 1.5) | ((yy % s) < 1.5)).astype(np.float32)


def generate_image(rng: np.random.Generator, size: int, max_objects: int) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic scene -> (image (size, size, 3) uint8 RGB, label (size, size) uint8 in 0..4)."""
    img = _background(rng, size)
    label = np.zeros((size, size), np.uint8)
    n = int(rng.integers(1, max_objects + 1))
    for _ in range(n):
        cls = int(rng.integers(1, len(CLASS_NAMES)))
        r = rng.uniform(0.12, 0.28) * size
        cx, cy = rng.uniform(r * 0.6, size - r * 0.6, 2)
        mask = _shape_mask(cls, size, cx, cy, r, rng.uniform(0, 360)).astype(bool)
        if mask.sum() < 16:
            continue
        hue = (_HUE_CENTRES[cls - 1] + rng.uniform(-_HUE_SPREAD, _HUE_SPREAD)) % 1.0
        c1 = _hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0)).astype(np.float32)
        c2 = _hsv_to_rgb((hue + rng.uniform(-0.08, 0.08)) % 1.0, rng.uniform(0.5, 1.0), rng.uniform(0.25, 0.5)).astype(np.float32)
        tex = _texture(cls, rng, size)[..., None]
        obj = tex * c1 + (1 - tex) * c2 + rng.normal(0, 5, (size, size, 1)).astype(np.float32)
        img[mask] = obj[mask]
        label[mask] = cls
    return np.clip(img, 0, 255).astype(np.uint8), label


EVAL_STREAM = 1  # the evaluation images come from SeedSequence(seed, spawn_key=(EVAL_STREAM,)), not from `seed`


def iter_dataset(seed: int | np.random.SeedSequence, count: int, size: int, max_objects: int,
                 prefix: str = "synth") -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """`count` scenes from `seed`, one at a time (memory does not grow with `count`) -> (name '<prefix>_00000',
    image (S, S, 3) uint8, label (S, S) uint8), reproducible."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        img, lab = generate_image(rng, size, max_objects)
        yield f"{prefix}_{i:05d}", img, lab


def generate_dataset(seed: int | np.random.SeedSequence, count: int, size: int, max_objects: int,
                     prefix: str = "synth") -> list[tuple[str, np.ndarray, np.ndarray]]:
    """`iter_dataset` as a list: [(name, image (S, S, 3) uint8, label (S, S) uint8)]."""
    return list(iter_dataset(seed, count, size, max_objects, prefix))


def eval_stream(seed: int) -> np.random.SeedSequence:
    """The evaluation split's seed stream: a child of `seed` (spawn key EVAL_STREAM), statistically independent of
    the training stream default_rng(seed), so the held-out scenes share no draw with the training scenes."""
    return np.random.SeedSequence(seed, spawn_key=(EVAL_STREAM,))
