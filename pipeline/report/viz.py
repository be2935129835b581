"""Pictures for people: overlays, mask grids, curves, confusion matrices. Arrays in, arrays or files out."""
from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pipeline import io  # noqa: E402
# the pictures colour label maps as the artifacts' overlays do: one colouring, pipeline/io/maps.py
from pipeline.io.maps import colorize, overlay  # noqa: E402, F401


def grid(tiles: list[np.ndarray], cols: int, pad: int = 2) -> np.ndarray:
    """Equal-size (h, w, 3) uint8 tiles -> one (rows*(h+pad), cols*(w+pad), 3) image, white padding."""
    if not tiles:
        return np.full((8, 8, 3), 255, np.uint8)
    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + cols - 1) // cols
    out = np.full((rows * (h + pad), cols * (w + pad), 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = t
    return out


def save_figure(fig, path: str | Path) -> None:
    """A matplotlib figure -> PNG at `path`, atomically; the figure is closed."""
    try:
        with io.atomic_open(path) as f:
            fig.savefig(f, format="png", dpi=100)
    finally:
        plt.close(fig)


def save_curve(path: str | Path, values: list[float], title: str, xlabel: str) -> None:
    """A line plot of `values` -> PNG."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(range(len(values)), values)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    save_figure(fig, path)


def save_confusion(path: str | Path, conf: np.ndarray, row_names: list[str], col_names: list[str], title: str) -> None:
    """(R, C) counts -> a row-normalised heat map PNG with the counts' shares written in."""
    conf = np.asarray(conf, dtype=np.float64)
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(col_names), 1.0 + 0.55 * len(row_names)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(col_names)), col_names, rotation=45, ha="right")
    ax.set_yticks(range(len(row_names)), row_names)
    for i in range(norm.shape[0]):
        for j in range(norm.shape[1]):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("ground truth")
    ax.set_ylabel("prediction (matched)")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)


def mask_tile(image: np.ndarray, mask: np.ndarray, colour: np.ndarray, size: int) -> np.ndarray:
    """Image (H, W, 3) and bool mask (H, W) -> (size, size, 3) tile: the image dimmed outside the mask, mask outlined.
    A non-square image is first cropped to the square of its short side nearest the mask's centre (not squashed)."""
    h, w = mask.shape
    if h != w:
        side = min(h, w)
        ys, xs = np.nonzero(mask)
        cy, cx = (ys.mean(), xs.mean()) if len(ys) else (h / 2, w / 2)
        y0 = int(np.clip(round(cy - side / 2), 0, h - side))
        x0 = int(np.clip(round(cx - side / 2), 0, w - side))
        image, mask = image[y0:y0 + side, x0:x0 + side], mask[y0:y0 + side, x0:x0 + side]
    tile = image.astype(np.float32)
    tile[~mask] *= 0.35
    edge = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    tile[edge] = colour
    return cv2.resize(tile.astype(np.uint8), (size, size), interpolation=cv2.INTER_AREA)


def draw_graph(ax, g, node_colour_ids: np.ndarray, seed: int) -> None:
    """A networkx graph drawn on a matplotlib axis: spring layout (seeded), edge width by weight, nodes coloured by
    the palette entry of node_colour_ids[node] + 1."""
    import networkx as nx

    pos = nx.spring_layout(g, weight="weight", seed=seed)
    weights = np.array([d["weight"] for _, _, d in g.edges(data=True)]) if g.number_of_edges() else np.array([1.0])
    nx.draw_networkx_edges(g, pos, ax=ax, width=0.3 + 3 * weights / weights.max(), alpha=0.3)
    colours = io.palette()[np.asarray(node_colour_ids) + 1] / 255.0
    nx.draw_networkx_nodes(g, pos, ax=ax, node_size=40, node_color=colours)


def save_graph(path: str | Path, g, node_colour_ids: np.ndarray, title: str, seed: int) -> None:
    """A networkx graph -> PNG, nodes coloured by the palette entry of node_colour_ids[node] + 1, spring layout."""
    fig, ax = plt.subplots(figsize=(6, 6))
    draw_graph(ax, g, node_colour_ids, seed)
    ax.set_title(title)
    ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)


def patch_tile(image: np.ndarray, grid: tuple[int, int], cell: tuple[int, int], colour: np.ndarray, size: int,
               context: int = 1) -> np.ndarray:
    """Image (H, W, 3) uint8 on an (h, w) patch grid, one patch (row, col) -> (size, size, 3) tile: the patch and
    `context` patches around it (clipped at the border), the patch outlined in `colour`, upsampled nearest."""
    (H, W), (h, w), (r, c) = image.shape[:2], grid, cell
    ys = [round(i * H / h) for i in (max(r - context, 0), r, r + 1, min(r + 1 + context, h))]
    xs = [round(i * W / w) for i in (max(c - context, 0), c, c + 1, min(c + 1 + context, w))]
    crop = image[ys[0]:ys[3], xs[0]:xs[3]].copy()
    y0, y1, x0, x1 = ys[1] - ys[0], ys[2] - ys[0] - 1, xs[1] - xs[0], xs[2] - xs[0] - 1
    crop[[y0, y1], x0:x1 + 1] = colour
    crop[y0:y1 + 1, [x0, x1]] = colour
    side = max(crop.shape[:2])
    square = np.full((side, side, 3), 255, np.uint8)
    square[:crop.shape[0], :crop.shape[1]] = crop
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_NEAREST)


def save_communities(path: str | Path, g, node_colour_ids: np.ndarray, rows: list[tuple[str, list[np.ndarray]]],
                     title: str, seed: int) -> None:
    """The community graph (draw_graph) beside a gallery: one row per community, its caption and its tiles
    ((s, s, 3) uint8 each) -> PNG."""
    n_rows, cols = max(len(rows), 1), max([len(t) for _, t in rows] + [1])
    fig = plt.figure(figsize=(6 + 0.8 * cols + 1.6, max(6.0, 0.85 * n_rows + 0.6)))
    spec = fig.add_gridspec(n_rows, 2, width_ratios=(6, 0.8 * cols + 1.6))
    ax = fig.add_subplot(spec[:, 0])
    draw_graph(ax, g, node_colour_ids, seed)
    ax.axis("off")
    fig.suptitle(title)
    for i, (caption, tiles) in enumerate(rows):
        axr = fig.add_subplot(spec[i, 1])
        axr.imshow(grid(tiles, cols) if tiles else np.full((8, 8, 3), 255, np.uint8))
        axr.set_xticks([])
        axr.set_yticks([])
        axr.set_ylabel(caption, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
