"""Atomic file writing and the plain formats: bytes, JSON, CSV, .npz.

Every writer is atomic (temporary file in the same folder, then rename), so a killed stage never leaves a
half-written file that a later stage would read. Every other module of pipeline/io writes through `atomic_open`.
"""
from __future__ import annotations

import csv
import io
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np


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
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_bytes(path, buf.getvalue().encode())


def write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Named arrays -> one uncompressed .npz, atomically."""
    with atomic_open(path) as f:
        np.savez(f, **arrays)


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise InputError(f"{path}: file not found (did the stage that writes it run? try `dvc repro`)")
    return path


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """An .npz written by write_npz -> {name: array}."""
    with np.load(_require_file(Path(path))) as z:
        return {k: z[k] for k in z.files}


def read_json(path: str | Path) -> Any:
    """A JSON file -> its object; InputError naming the file when it is missing."""
    with open(_require_file(Path(path))) as f:
        return json.load(f)
