"""Reading and writing artifacts: images, indexed-palette label PNGs, JSON, sharded arrays.

Every writer is atomic (temporary file in the same folder, then rename), so a killed stage never
leaves a half-written file that a later stage would read.
"""
from __future__ import annotations

import csv
import io as io_text
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

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
    (the temporary file `.<name>.tmp` in the same folder, then rename); on error the temporary file is removed. A
    process killed mid-write leaves `path` as it was (absent or the old content) and `.<name>.tmp`, which the next
    write of the same file replaces.

    The temporary's name is fixed, not random, so that no write lists its folder: looking for a killed write's
    leftovers by a pattern (`glob`) read the whole folder at every write, which made writing N files into one
    folder O(N^2) (at 10,000 masks, the pseudolabels stage ran at half its per-image speed at 1,000). Two writers
    of the same path at the same time are not supported (nothing here does that: parallel workers write
    different images)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    tmp.unlink(missing_ok=True)  # left by a killed earlier write
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.fchmod(fd, 0o644)  # whatever the umask: artifacts are for everyone to read
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_open(path) as f:
        f.write(data)


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def write_csv(path: str | Path, header: list[str], rows: list[tuple]) -> None:
    """A header and rows -> a CSV file (RFC 4180 quoting), atomically."""
    buf = io_text.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_bytes(path, buf.getvalue().encode())


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


def cluster_k(cluster_dir: str | Path) -> int:
    """The number of object classes the cluster stage made (cluster.k, or the k it chose when cluster.k is auto):
    clusters.json's "k". Background is one more class (0)."""
    return int(read_json(Path(cluster_dir) / "clusters.json")["k"])


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


def _open_checked(path: Path, what: str) -> Image.Image:
    """Open `path` with PIL and decode it fully, or raise InputError naming the file and the problem."""
    if not path.is_file():
        raise InputError(f"{path}: {what} file not found")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes), not a {what}")
    img = None
    try:
        img = Image.open(path)
        img.load()  # decode now: a truncated or corrupt file fails here, not later
        return img
    except Exception as e:
        if img is not None:
            img.close()
        if isinstance(e, Image.DecompressionBombError):
            raise InputError(f"{path}: {what} too large to decode safely ({e})") from e
        if isinstance(e, UnidentifiedImageError):
            raise InputError(f"{path}: not a readable {what} (not an image format PIL knows)") from e
        # decoders raise OSError, SyntaxError, ValueError, EOFError... on corrupt data
        raise InputError(f"{path}: not a readable {what}, corrupt or truncated ({type(e).__name__}: {e})") from e


LABEL_MODES = ("P", "L", "I;16", "I;16L", "I;16B", "I")  # single-channel integer modes a label may use


def read_label(path: str | Path) -> np.ndarray:
    """A class-index PNG (palette, greyscale or 16-bit greyscale with values <= 255)
    -> (H, W) uint8 indices, 255 = ignore. Anything else raises InputError naming the file."""
    path = Path(path)
    img = _open_checked(path, "label")
    with img:
        if img.mode not in LABEL_MODES:
            raise InputError(f"{path}: label must be a single-channel class-index PNG (mode P or L), got mode "
                             f"{img.mode}; a colour-coded label must be converted to class indices first")
        arr = np.asarray(img)
    if arr.ndim != 2:
        raise InputError(f"{path}: label must be one class index per pixel, got an array of shape {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
            raise InputError(f"{path}: label holds values {int(arr.min())}..{int(arr.max())}; class indices "
                             f"must be 0..255 (255 = ignore)")
        arr = arr.astype(np.uint8)
    return np.array(arr, dtype=np.uint8)


def _to_8bit(arr: np.ndarray) -> np.ndarray:
    """A 16-bit / 32-bit / float single-channel image (H, W) -> (H, W) uint8, its value range stretched to 0..255."""
    arr = np.asarray(arr, dtype=np.float64)
    finite = np.isfinite(arr)
    if not finite.any():
        return np.zeros(arr.shape, np.uint8)
    lo, hi = arr[finite].min(), arr[finite].max()
    out = 255 * (np.where(finite, arr, lo) - lo) / max(hi - lo, 1e-12)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Any PIL-readable image (EXIF rotation applied; alpha dropped; palette, CMYK, greyscale, 16-bit and
    float converted) -> (H, W, 3) uint8 RGB. A missing, empty, corrupt or truncated file raises InputError."""
    path = Path(path)
    img = _open_checked(path, "image")
    try:
        with img:
            img = ImageOps.exif_transpose(img) or img
            if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
                img = Image.fromarray(_to_8bit(np.asarray(img)))
            elif img.mode in ("P", "PA") and "transparency" in img.info:
                img = img.convert("RGBA")  # PIL warns when a transparent palette goes straight to RGB
            out = np.array(img.convert("RGB"), dtype=np.uint8)
    except InputError:
        raise
    except Exception as e:  # a broken EXIF block or an unconvertible mode
        raise InputError(f"{path}: not a usable image ({type(e).__name__}: {e})") from e
    if out.ndim != 3 or out.shape[2] != 3 or out.shape[0] == 0 or out.shape[1] == 0:
        raise InputError(f"{path}: decoded to an empty or odd array of shape {out.shape}")
    return out


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


def eval_names(manifest: dict) -> list[str]:
    """The evaluation split of a manifest (its `eval_names`; [] for a manifest written without one)."""
    return list(manifest.get("eval_names", []))


def image_shape(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file, read from its header (no decoding); InputError when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except Exception as e:
        raise InputError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e


def original_sizes(prepare_dir: str | Path, manifest: dict, names: list[str]) -> dict[str, tuple[int, int]]:
    """{name: (H, W)} the ORIGINAL size of each image (manifest `sizes`); an image the manifest gives no size for
    (a manifest written without `sizes`) keeps its prepared image's own size."""
    sizes = manifest.get("sizes") or {}
    return {n: (int(sizes[n][0]), int(sizes[n][1])) if n in sizes
            else image_shape(Path(prepare_dir) / "images" / f"{n}.png") for n in names}


def read_image_list(prepare_dir: str | Path, names: list[str]) -> list[np.ndarray]:
    """The prepared images -> a list of (H_i, W_i, 3) uint8, one per name (sizes may differ between images)."""
    return [read_image(Path(prepare_dir) / "images" / f"{n}.png") for n in names]


def read_images(prepare_dir: str | Path, names: list[str]) -> np.ndarray:
    """The prepared images -> (N, H, W, 3) uint8; all must have one size (else use read_image_list)."""
    return _stack(read_image_list(prepare_dir, names), "images", "read_image_list")


def read_label_list(folder: str | Path, names: list[str]) -> list[np.ndarray]:
    """Label PNGs `folder/<name>.png` -> a list of (H_i, W_i) uint8 (sizes may differ between images)."""
    return [read_label(Path(folder) / f"{n}.png") for n in names]


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


def read_labels(folder: str | Path, names: list[str]) -> np.ndarray:
    """Label PNGs `folder/<name>.png` -> (N, H, W) uint8; all must have one size (else use read_label_list)."""
    return _stack(read_label_list(folder, names), "label maps", "read_label_list")


def _stack(arrays: list[np.ndarray], what: str, instead: str) -> np.ndarray:
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) > 1:
        raise ValueError(f"{what} of {len(shapes)} different sizes ({shapes[:3]}...) cannot be stacked; use {instead}")
    return np.stack(arrays)


# ---------------------------------------------------------------- sharded per-image arrays (ragged)
# A shard is one uncompressed .npz holding, for every key, ALL its images' arrays raveled and concatenated into one
# 1-d array `<key>`, and their shapes as `<key>.shapes` (n, ndim) int64: arrays of different shapes (feature grids of
# images of different sizes) share one file and one read, and each image's array is a view of that buffer (no copy).
# index.json: {"layout": "ragged", "keys": [...], "shards": [{"file", "names"}, ...]}, images in writing order.

SHAPES = ".shapes"  # suffix of the shapes entry of a key in a shard


def pack_ragged(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Arrays of one dtype and number of dimensions, shapes free -> (flat 1-d concatenation, shapes (n, ndim) int64)."""
    if not arrays:
        return np.zeros(0, np.float32), np.zeros((0, 0), np.int64)
    dtypes, ndims = {a.dtype for a in arrays}, {a.ndim for a in arrays}
    if len(dtypes) > 1 or len(ndims) > 1:
        raise ValueError(f"pack_ragged: arrays must share dtype and ndim, got {sorted(map(str, dtypes))}, {sorted(ndims)}")
    flat = np.concatenate([np.ascontiguousarray(a).reshape(-1) for a in arrays])
    return flat, np.array([a.shape for a in arrays], np.int64).reshape(len(arrays), -1)


def unpack_ragged(flat: np.ndarray, shapes: np.ndarray) -> list[np.ndarray]:
    """The inverse of pack_ragged -> list of arrays (views of `flat`)."""
    sizes = [int(np.prod(s)) for s in shapes]
    ends = np.cumsum(sizes)
    if len(flat) != (ends[-1] if len(ends) else 0):
        raise ValueError(f"unpack_ragged: {len(flat)} values for shapes holding {int(ends[-1]) if len(ends) else 0}")
    return [flat[e - n:e].reshape(tuple(int(v) for v in s)) for e, n, s in zip(ends, sizes, shapes)]


class ShardWriter:
    """Streams per-image arrays (any shapes; float16 features as the caller gives them) into shards of
    `shard_size` images, so memory stays bounded. See the layout above."""

    def __init__(self, folder: str | Path, shard_size: int) -> None:
        self.folder, self.shard_size = Path(folder), shard_size
        self.buffer: dict[str, list[np.ndarray]] = {}
        self.names: list[str] = []
        self.shards: list[dict] = []
        self.keys: list[str] = []

    def add(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        if self.keys and sorted(arrays) != self.keys:
            raise ValueError(f"ShardWriter.add({name!r}): keys {sorted(arrays)}, earlier images had {self.keys}")
        if any(k.endswith(SHAPES) for k in arrays):
            raise ValueError(f"ShardWriter.add({name!r}): a key may not end in {SHAPES!r}")
        self.names.append(name)
        self.keys = sorted(arrays)
        for k, v in arrays.items():
            self.buffer.setdefault(k, []).append(np.asarray(v))
        if len(self.names) == self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if not self.names:
            return
        fname = f"shard_{len(self.shards):03d}.npz"
        entries = {}
        for k, v in self.buffer.items():
            entries[k], entries[k + SHAPES] = pack_ragged(v)
        write_npz(self.folder / fname, **entries)
        self.shards.append({"file": fname, "names": self.names})
        self.buffer, self.names = {}, []

    def close(self) -> None:
        self._flush()
        write_json(self.folder / "index.json", {"layout": "ragged", "keys": self.keys, "shards": self.shards})


def iter_shards(folder: str | Path, key: str) -> Iterator[tuple[list[str], list[np.ndarray]]]:
    """Yield (names, list of per-image arrays) shard by shard for one key (shapes may differ between images)."""
    folder = Path(folder)
    index = read_json(folder / "index.json")
    for shard in index["shards"]:
        with np.load(folder / shard["file"]) as z:
            if key + SHAPES in z.files:
                arrays = unpack_ragged(z[key], z[key + SHAPES])
            else:  # a shard written before the ragged layout: one stacked (n, ...) array
                arrays = list(z[key])
        yield shard["names"], arrays
        del arrays  # the next shard is read without this one (a caller that drops it holds one shard at a time)


class ShardArrays(Sequence):
    """One key's per-image arrays of the named images, read on access a shard at a time (the last shard read is
    kept, so reading the images in their writing order reads each shard once): a re-iterable sequence for code that
    passes over a split's features without holding them all. `get(name)` gives an image's array by name."""

    def __init__(self, folder: str | Path, key: str, names: list[str] | None = None) -> None:
        self.folder, self.key = Path(folder), key
        index = read_json(self.folder / "index.json")
        self.where = {n: s["file"] for s in index["shards"] for n in s["names"]}
        self.names = list(self.where) if names is None else list(names)
        missing = [n for n in self.names if n not in self.where]
        if missing:
            raise InputError(f"{self.folder}: no {key!r} array for {len(missing)} images, e.g. {missing[:3]}")
        self._file, self._arrays = None, {}

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.get(self.names[i])

    def get(self, name: str) -> np.ndarray:
        file = self.where[name]
        if file != self._file:
            self._file, self._arrays = None, {}  # drop the old shard before reading the next
            names = [n for n, f in self.where.items() if f == file]
            with np.load(self.folder / file) as z:
                arrays = unpack_ragged(z[self.key], z[self.key + SHAPES]) if self.key + SHAPES in z.files \
                    else list(z[self.key])
            self._file, self._arrays = file, dict(zip(names, arrays))
        return self._arrays[name]


def read_shards(folder: str | Path, key: str) -> tuple[list[str], list[np.ndarray]]:
    """All shards of one key -> (names, list of per-image arrays), in writing order."""
    names, arrays = [], []
    for n, a in iter_shards(folder, key):
        names += n
        arrays += a
    return names, arrays
