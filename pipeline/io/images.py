"""Images and label maps on disk: decoding any PIL-readable image to RGB, class-index PNGs in the project palette.

A label map is (H, W) uint8 class indices, IGNORE (255) where no loss, metric or stage counts; it is written as an
indexed-palette PNG so that it reads as class indices and looks like a segmentation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.io.files import InputError, atomic_open

IGNORE = 255  # label value that no loss, metric or stage counts
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
LABEL_MODES = ("P", "L", "I;16", "I;16L", "I;16B", "I")  # single-channel integer modes a label may use


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


def write_gray(path: str | Path, gray: np.ndarray) -> None:
    """(H, W) uint8 map (a saliency map: 0..255) -> 8-bit greyscale PNG, atomically (read back by read_label)."""
    gray = np.asarray(gray)
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"write_gray: expected (H, W) uint8, got {gray.shape} {gray.dtype}")
    _save_pil(Image.fromarray(gray, mode="L"), Path(path), "PNG")


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
    with img:
        return pil_to_rgb(img, str(path))


def pil_to_rgb(img: Image.Image, what: str = "image") -> np.ndarray:
    """A decoded PIL image -> (H, W, 3) uint8 RGB as `read_image` converts it (EXIF rotation applied; alpha dropped;
    palette, CMYK, greyscale, 16-bit and float converted); InputError naming `what` (the file) when it cannot be."""
    try:
        img = ImageOps.exif_transpose(img) or img
        if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
            img = Image.fromarray(_to_8bit(np.asarray(img)))
        elif img.mode in ("P", "PA") and "transparency" in img.info:
            img = img.convert("RGBA")  # PIL warns when a transparent palette goes straight to RGB
        out = np.array(img.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # a broken EXIF block or an unconvertible mode
        raise InputError(f"{what}: not a usable image ({type(e).__name__}: {e})") from e
    if out.ndim != 3 or out.shape[2] != 3 or out.shape[0] == 0 or out.shape[1] == 0:
        raise InputError(f"{what}: decoded to an empty or odd array of shape {out.shape}")
    return out


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
