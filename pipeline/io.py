"""Reading and writing artifacts: images, indexed-palette label PNGs, JSON, sharded arrays.

Every writer is atomic (temporary file in the same folder, then rename), so a killed stage never
leaves a half-written file that a later stage would read.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IGNORE = 255  # label value that no loss, metric or stage counts
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def palette() -> np.ndarray:
    """The one class palette used by every stage: (256, 3) uint8, PASCAL VOC colours, 255 white."""
    pal = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    pal[IGNORE] = (255, 255, 255)
    return pal


class InputError(ValueError):
    """An input file the pipeline cannot use; the message names the file and the problem."""


@contextmanager
def atomic_open(path: str | Path) -> Iterator[IO[bytes]]:
    """A binary file handle whose content appears at `path` only once the block ends without error
    (temporary file in the same folder, then rename); on error the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_open(path) as f:
        f.write(data)


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Named arrays -> one uncompressed .npz, atomically."""
    with atomic_open(path) as f:
        np.savez(f, **arrays)


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """An .npz written by write_npz -> {name: array}."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found (did the stage that writes it run? try `dvc repro`)")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found (did the stage that writes it run? try `dvc repro`)")
    with open(path) as f:
        return json.load(f)


def _save_pil(img: Image.Image, path: Path, fmt: str) -> None:
    with atomic_open(path) as f:
        img.save(f, format=fmt)


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    """(H, W, 3) uint8 RGB -> PNG or JPEG by the path's suffix, atomically."""
    path = Path(path)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    _save_pil(Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)), path, fmt)


def write_label(path: str | Path, label: np.ndarray) -> None:
    """(H, W) uint8 class map -> indexed-palette PNG (the project palette), atomically."""
    label = np.asarray(label)
    if label.ndim != 2 or label.dtype != np.uint8:
        raise ValueError(f"write_label: expected (H, W) uint8, got {label.shape} {label.dtype}")
    img = Image.fromarray(label, mode="P")
    img.putpalette(palette().reshape(-1).tolist())
    _save_pil(img, Path(path), "PNG")


def read_label(path: str | Path) -> np.ndarray:
    """An 8-bit class-index PNG (palette or greyscale) -> (H, W) uint8 indices, 255 = ignore."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: label file not found")
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise InputError(f"{path}: label must be an 8-bit index or greyscale PNG, got mode {img.mode}")
            return np.array(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path}: not a readable label image ({e})") from e


def read_image(path: str | Path) -> np.ndarray:
    """Any PIL-readable image (EXIF rotation applied) -> (H, W, 3) uint8 RGB."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I", "I;16B", "F"):
                arr = np.asarray(img, dtype=np.float64)
                arr = 255 * (arr - arr.min()) / max(arr.max() - arr.min(), 1)
                img = Image.fromarray(arr.astype(np.uint8))
            return np.array(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise InputError(f"{path}: not a readable image ({e})") from e


def list_images(folder: str | Path) -> list[Path]:
    """Image files under `folder` (nested subfolders too), sorted by relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: folder not found")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


# ---------------------------------------------------------------- the prepared dataset

def read_manifest(prepare_dir: str | Path) -> dict:
    """data/01_prepare/manifest.json -> {names, image_size, num_classes, class_names, has_labels, ...}."""
    return read_json(Path(prepare_dir) / "manifest.json")


def read_images(prepare_dir: str | Path, names: list[str]) -> np.ndarray:
    """The prepared images -> (N, S, S, 3) uint8."""
    return np.stack([read_image(Path(prepare_dir) / "images" / f"{n}.png") for n in names])


def read_labels(folder: str | Path, names: list[str]) -> np.ndarray:
    """Label PNGs `folder/<name>.png` -> (N, H, W) uint8."""
    return np.stack([read_label(Path(folder) / f"{n}.png") for n in names])


# ---------------------------------------------------------------- sharded feature arrays

class ShardWriter:
    """Streams per-image arrays into shards of `shard_size` images, so memory stays bounded."""

    def __init__(self, folder: str | Path, shard_size: int) -> None:
        self.folder, self.shard_size = Path(folder), shard_size
        self.buffer: dict[str, list[np.ndarray]] = {}
        self.names: list[str] = []
        self.shards: list[dict] = []
        self.keys: list[str] = []

    def add(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        self.names.append(name)
        self.keys = sorted(arrays)
        for k, v in arrays.items():
            self.buffer.setdefault(k, []).append(v)
        if len(self.names) == self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if not self.names:
            return
        fname = f"shard_{len(self.shards):03d}.npz"
        write_npz(self.folder / fname, **{k: np.stack(v) for k, v in self.buffer.items()})
        self.shards.append({"file": fname, "names": self.names})
        self.buffer, self.names = {}, []

    def close(self) -> None:
        self._flush()
        write_json(self.folder / "index.json", {"keys": self.keys, "shards": self.shards})


def iter_shards(folder: str | Path, key: str) -> Iterator[tuple[list[str], np.ndarray]]:
    """Yield (names, array (n, ...)) shard by shard for one key."""
    folder = Path(folder)
    index = read_json(folder / "index.json")
    for shard in index["shards"]:
        with np.load(folder / shard["file"]) as z:
            yield shard["names"], z[key]


def read_shards(folder: str | Path, key: str) -> tuple[list[str], np.ndarray]:
    """All shards of one key concatenated -> (names, array (N, ...))."""
    names, parts = [], []
    for n, a in iter_shards(folder, key):
        names += n
        parts.append(a)
    return names, np.concatenate(parts)
