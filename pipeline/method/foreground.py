"""The merge stage's foreground: the patches a kept mask covers for at least half (and more than any other mask),
read from the features shard by shard, and the index arithmetic between foreground patches, images and cells."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline import io
from pipeline.method import kmeans, merge, proposals


@dataclass
class Foreground:
    """P foreground patches, in image then row-major order, and the mask records they come from."""

    features: Path  # the features stage's folder (`tokens` reads it again)
    names: list[str]  # every image, in shard order
    mask_grids: list[np.ndarray]  # per image (h, w) int64: mask index + 1 of the kept mask a patch belongs to, 0 = none
    mask_of_patch: np.ndarray  # (P,) mask index (into the records) of every foreground patch
    sample: kmeans.TokenSample  # the foreground tokens: all of them when they fit
    by_image: dict[str, list[dict]]  # each image's mask records

    @property
    def starts(self) -> np.ndarray:
        """(n_images + 1,) int64: image i's foreground patches are starts[i]:starts[i + 1]."""
        return np.concatenate([[0], np.cumsum([int((g > 0).sum()) for g in self.mask_grids])]).astype(np.int64)

    def tokens(self) -> Iterator[np.ndarray]:
        """Every image's (n_i, D) foreground tokens again, in `names` order, one features shard in memory at a time."""
        i = 0
        for _, tokens in io.iter_shards(self.features, "tokens"):
            for tok in tokens:
                yield tok[self.mask_grids[i] > 0]
                i += 1
            tokens = tok = None

    def per_image(self, values: np.ndarray) -> list[np.ndarray]:
        """(P,) a value per foreground patch -> each image's (n_i,) values."""
        s = self.starts
        return [values[s[i]:s[i + 1]] for i in range(len(self.names))]

    def locate(self, idx: np.ndarray) -> list[tuple[int, tuple[int, int]]]:
        """(n,) foreground patch indices -> for each, its image's index and its (row, col) on that image's grid."""
        s = self.starts
        images = np.searchsorted(s, idx, side="right") - 1
        return [(int(m), tuple(np.argwhere(self.mask_grids[m] > 0)[i - s[m]])) for m, i in zip(images, idx)]

    def label_items(self, records: list[dict], patch_class: np.ndarray,
                    mask_class: np.ndarray) -> Iterator[tuple[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        """(P,) class of every foreground patch, (M,) class of every mask record (255 = ignored) -> per image, in
        `names` order, (name, (owner, patch classes, mask classes)) for leopart.pixel_labels: the (h, w) mask id
        (in its image) whose foreground patch a cell is (0: none), the (h, w) class of each foreground patch and
        (m,) uint8 the class of each of the image's masks, by mask id."""
        local = np.array([0] + [r["mask"] for r in records], np.int64)  # mask index + 1 -> mask id in its image
        for name, grid, cls in zip(self.names, self.mask_grids, merge.part_grids(self.mask_grids, patch_class)):
            recs = sorted(self.by_image.get(name, []), key=lambda r: r["mask"])
            yield name, (local[grid], cls, mask_class[[r["index"] for r in recs]].astype(np.uint8))


def select(features: str | Path, distill: str | Path, records: list[dict], max_tokens: int, seed: int) -> Foreground:
    """The filter stage's mask records ({"image", "mask", "kept", ...}; each gets its "index" in the list), the
    features and the distill stage's mask maps, read shard by shard -> the Foreground: every image's mask grid
    (merge.mask_grid), the mask index of every foreground patch and the foreground tokens in a TokenSample of
    max_tokens (seeded; all of them when they fit, else a log line says so)."""
    by_image: dict[str, list[dict]] = {}
    for i, r in enumerate(records):
        r["index"] = i
        by_image.setdefault(r["image"], []).append(r)
    names, mask_grids, patch_mask = [], [], []
    sample = kmeans.TokenSample(max_tokens, seed)
    for shard_names, tokens in io.iter_shards(features, "tokens"):
        for name, tok in zip(shard_names, tokens):
            recs = sorted(by_image.get(name, []), key=lambda r: r["mask"])
            mask_map = io.read_label(Path(distill) / "masks" / f"{name}.png")
            frac = proposals.patch_fractions(mask_map, len(recs), tok.shape[:2])  # (m, h, w), mask id m + 1
            grid = merge.mask_grid(frac, np.array([r["index"] for r in recs], np.int64),
                                   np.array([r["kept"] for r in recs], bool))
            names.append(name)
            mask_grids.append(grid)
            sample.add(tok[grid > 0])
            patch_mask.append(grid[grid > 0] - 1)
        tokens = tok = None  # one shard in memory at a time
    mask_of_patch = np.concatenate(patch_mask) if patch_mask else np.zeros(0, np.int64)
    if not sample.complete:
        print(f"merge: {sample.total} foreground tokens > merge.max_tokens_in_memory = {max_tokens}: parts fitted on "
              "a seeded sample of that many", flush=True)
    return Foreground(Path(features), names, mask_grids, mask_of_patch, sample, by_image)
