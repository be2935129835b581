"""Label-map folders as the method, train and evaluate stages write them: <folder>/labels/<name>.png (class indices,
indexed palette) and <folder>/overlays/<name>.jpg (the map drawn on its image), and the colouring both use."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.io.images import palette, write_image, write_label


def colorize(label: np.ndarray) -> np.ndarray:
    """(H, W) uint8 class map -> (H, W, 3) uint8 RGB in the project palette."""
    return palette()[label]


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Image (H, W, 3) uint8 and class map (H, W) -> blend where label > 0 (ignore 255 hatched white), with borders."""
    out = image.astype(np.float32).copy()
    colour = colorize(label).astype(np.float32)
    fg = label > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colour[fg]
    edges = cv2.morphologyEx(label, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    out[edges] = colour[edges] if edges.any() else out[edges]
    return np.clip(out, 0, 255).astype(np.uint8)


def write_maps(folder: str | Path, names: list[str], maps, images) -> None:
    """Label maps ((H_i, W_i) uint8 each, an (N, H, W) array or a list) -> folder/labels/<name>.png (indexed palette)
    and folder/overlays/<name>.jpg drawn on its image; an image of another size than its map (a prepared image
    under a prediction at the original size) is resized to the map's size (bilinear) first."""
    folder = Path(folder)
    for name, lab, img in zip(names, maps, images):
        if img.shape[:2] != lab.shape:
            img = cv2.resize(img, (lab.shape[1], lab.shape[0]), interpolation=cv2.INTER_LINEAR)
        write_label(folder / "labels" / f"{name}.png", lab)
        write_image(folder / "overlays" / f"{name}.jpg", overlay(img, lab))
