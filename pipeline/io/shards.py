"""Sharded per-image arrays (features): written streaming, read a shard at a time.

A shard is one uncompressed .npz holding, for every key, ALL its images' arrays raveled and concatenated into one
1-d array `<key>`, and their shapes as `<key>.shapes` (n, ndim) int64: arrays of different shapes (feature grids of
images of different sizes) share one file and one read, and each image's array is a view of that buffer (no copy).
index.json: {"layout": "ragged", "keys": [...], "shards": [{"file", "names"}, ...]}, images in writing order.
Shard i is `shard_<i:03d>.npz`, so shards written apart (one process each, `write_shard`) and indexed once
(`write_index`) are the files one ShardWriter writes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from pipeline.io.files import InputError, read_json, write_json, write_npz

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


def write_shard(folder: str | Path, index: int, names: list[str], arrays: list[dict[str, np.ndarray]]) -> dict:
    """Shard `index` of a folder: the images `names` and their arrays (one {key: array} per image, the same keys)
    -> folder/shard_<index:03d>.npz -> its index entry {"file", "names"}."""
    fname = f"shard_{index:03d}.npz"
    entries = {}
    for k in arrays[0] if arrays else []:  # the first image's key order is the file's entry order
        entries[k], entries[k + SHAPES] = pack_ragged([np.asarray(a[k]) for a in arrays])
    write_npz(Path(folder) / fname, **entries)
    return {"file": fname, "names": list(names)}


def write_index(folder: str | Path, keys: list[str], shards: list[dict]) -> None:
    """folder/index.json for the shards' entries (`write_shard`'s, in order) holding arrays of `keys`."""
    write_json(Path(folder) / "index.json", {"layout": "ragged", "keys": sorted(keys), "shards": shards})


class ShardWriter:
    """Streams per-image arrays (any shapes; float16 features as the caller gives them) into shards of
    `shard_size` images, so memory stays bounded. See the layout above."""

    def __init__(self, folder: str | Path, shard_size: int) -> None:
        self.folder, self.shard_size = Path(folder), shard_size
        self.names: list[str] = []
        self.arrays: list[dict[str, np.ndarray]] = []
        self.shards: list[dict] = []
        self.keys: list[str] = []

    def add(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        if self.keys and sorted(arrays) != self.keys:
            raise ValueError(f"ShardWriter.add({name!r}): keys {sorted(arrays)}, earlier images had {self.keys}")
        if any(k.endswith(SHAPES) for k in arrays):
            raise ValueError(f"ShardWriter.add({name!r}): a key may not end in {SHAPES!r}")
        self.names.append(name)
        self.arrays.append(arrays)
        self.keys = sorted(arrays)
        if len(self.names) == self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if not self.names:
            return
        self.shards.append(write_shard(self.folder, len(self.shards), self.names, self.arrays))
        self.names, self.arrays = [], []

    def close(self) -> None:
        self._flush()
        write_index(self.folder, self.keys, self.shards)


def _read_shard(path: Path, key: str) -> list[np.ndarray]:
    """One shard file -> its images' arrays of one key, in writing order."""
    with np.load(path) as z:
        return unpack_ragged(z[key], z[key + SHAPES])


def iter_shards(folder: str | Path, key: str) -> Iterator[tuple[list[str], list[np.ndarray]]]:
    """Yield (names, list of per-image arrays) shard by shard for one key (shapes may differ between images)."""
    folder = Path(folder)
    for shard in read_json(folder / "index.json")["shards"]:
        arrays = _read_shard(folder / shard["file"], key)
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
            self._file, self._arrays = file, dict(zip(names, _read_shard(self.folder / file, self.key)))
        return self._arrays[name]


def read_shards(folder: str | Path, key: str) -> tuple[list[str], list[np.ndarray]]:
    """All shards of one key -> (names, list of per-image arrays), in writing order."""
    names, arrays = [], []
    for n, a in iter_shards(folder, key):
        names += n
        arrays += a
    return names, arrays
