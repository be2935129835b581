"""The stages' file layouts: the prepared dataset (data/01_prepare: manifest.json, images/<name>.png, gt/), label
map folders (<folder>/<name>.png), the cluster stage's class count and dense class probabilities; read whole or
lazily, one image at a time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.io.files import InputError, read_json
from pipeline.io.images import IMAGE_EXTS, image_shape, read_image, read_label
from pipeline.io.shards import ShardArrays

DENSE_PROBS = "probs"  # the key of the per-image (k, h, w) class probabilities in the cluster stage's dense/ shards


def list_images(folder: str | Path) -> list[Path]:
    """Image files under `folder` (nested subfolders too), sorted by relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: folder not found")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def read_manifest(prepare_dir: str | Path) -> dict:
    """data/01_prepare/manifest.json -> {names, eval_names, sizes, image_size, num_classes, class_names, has_labels,
    ...} (stages/prepare.py writes it)."""
    return read_json(Path(prepare_dir) / "manifest.json")


def eval_names(manifest: dict) -> list[str]:
    """The evaluation split of a manifest (its `eval_names`, [] when there is none)."""
    return list(manifest["eval_names"])


def original_sizes(prepare_dir: str | Path, manifest: dict, names: list[str]) -> dict[str, tuple[int, int]]:
    """{name: (H, W)} the ORIGINAL size of each image (the manifest's `sizes`, which holds every image of both
    splits); a name without a size raises InputError naming the manifest."""
    sizes = manifest["sizes"]
    missing = [n for n in names if n not in sizes]
    if missing:
        raise InputError(f"{Path(prepare_dir) / 'manifest.json'}: no size for {len(missing)} images, "
                         f"e.g. {missing[:3]}")
    return {n: (int(sizes[n][0]), int(sizes[n][1])) for n in names}


def cluster_k(cluster_dir: str | Path) -> int:
    """The number of object classes the cluster stage made (cluster.k, or the k it chose when cluster.k is auto):
    clusters.json's "k". Background is one more class (0)."""
    return int(read_json(Path(cluster_dir) / "clusters.json")["k"])


def dense_probs(cluster_dir: str | Path, names: list[str] | None = None) -> ShardArrays:
    """cluster.mode dense: the cluster stage's (k, h, w) float16 class probabilities of each training image on its
    patch grid (cluster_dir/dense/ shards, key DENSE_PROBS), of `names` (None: all), read a shard at a time."""
    return ShardArrays(Path(cluster_dir) / "dense", DENSE_PROBS, names)


def read_image_list(prepare_dir: str | Path, names: list[str]) -> list[np.ndarray]:
    """The prepared images -> a list of (H_i, W_i, 3) uint8, one per name (sizes may differ between images)."""
    return [read_image(Path(prepare_dir) / "images" / f"{n}.png") for n in names]


def read_images(prepare_dir: str | Path, names: list[str]) -> np.ndarray:
    """The prepared images -> (N, H, W, 3) uint8; all must have one size (else use read_image_list)."""
    return _stack(read_image_list(prepare_dir, names), "images", "read_image_list")


def read_label_list(folder: str | Path, names: list[str]) -> list[np.ndarray]:
    """Label PNGs `folder/<name>.png` -> a list of (H_i, W_i) uint8 (sizes may differ between images)."""
    return [read_label(Path(folder) / f"{n}.png") for n in names]


def read_labels(folder: str | Path, names: list[str]) -> np.ndarray:
    """Label PNGs `folder/<name>.png` -> (N, H, W) uint8; all must have one size (else use read_label_list)."""
    return _stack(read_label_list(folder, names), "label maps", "read_label_list")


def _stack(arrays: list[np.ndarray], what: str, instead: str) -> np.ndarray:
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) > 1:
        raise ValueError(f"{what} of {len(shapes)} different sizes ({shapes[:3]}...) cannot be stacked; use {instead}")
    return np.stack(arrays)


class LazyImages(Sequence):
    """The prepared images `prepare_dir/images/<name>.png` as a sequence read on access, one at a time (for code
    that must not hold a dataset: the train stage's Dataset, the baselines' fit). A slice is a LazyImages of those
    names; `shapes()` gives every image's (H, W, 3) from the file headers, without decoding."""

    suffix = ".png"

    def __init__(self, prepare_dir: str | Path, names: list[str]) -> None:
        self.folder, self.names = self._folder(prepare_dir), list(names)

    @staticmethod
    def _folder(root: str | Path) -> Path:
        return Path(root) / "images"

    def _read(self, path: Path) -> np.ndarray:
        return read_image(path)

    def _sub(self, names: list[str]) -> "LazyImages":
        out = type(self).__new__(type(self))
        out.__dict__.update(self.__dict__)
        out.names = names
        return out

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self._sub(self.names[i])
        return self._read(self.folder / f"{self.names[i]}{self.suffix}")

    def shapes(self) -> list[tuple[int, ...]]:
        """Every image's array shape (H, W, 3), read from the file headers."""
        return [image_shape(self.folder / f"{n}{self.suffix}") + (3,) for n in self.names]


class LazyLabels(LazyImages):
    """Label PNGs `folder/<name>.png` as a sequence of (H_i, W_i) uint8 maps read on access (see LazyImages;
    `shapes()` gives (H, W))."""

    @staticmethod
    def _folder(root: str | Path) -> Path:
        return Path(root)

    def _read(self, path: Path) -> np.ndarray:
        return read_label(path)

    def shapes(self) -> list[tuple[int, ...]]:
        return [image_shape(self.folder / f"{n}{self.suffix}") for n in self.names]
