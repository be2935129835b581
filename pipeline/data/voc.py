"""PASCAL VOC 2012 segmentation: the VOCdevkit layout, its splits, and palette ground truth as class indices.

Layout (what torchvision's VOCSegmentation reads and its `download=True` writes):
    <root>/VOC2012/JPEGImages/<id>.jpg
    <root>/VOC2012/SegmentationClass/<id>.png        palette PNGs, index = class, 255 = object border (ignored)
    <root>/VOC2012/SegmentationClassAug/<id>.png     optional (SBD augmented set), greyscale class indices
    <root>/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt   (and optional trainaug.txt)
where <root> is the VOCdevkit folder (its parent is accepted too).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline import io

CLASS_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
NUM_CLASSES = len(CLASS_NAMES)  # 21
BORDER_COLOUR = (224, 224, 192)  # VOC palette entry 255: object outlines, ignored
TORCHVISION_SPLITS = ("train", "val", "trainval")


def voc_palette() -> np.ndarray:
    """The VOC colour map: (256, 3) uint8; entries 0..20 are the classes, 255 the border colour."""
    pal = io.palette().copy()  # the project palette is VOC's, except 255 (white there)
    pal[io.IGNORE] = BORDER_COLOUR
    return pal


def colours_to_index(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 VOC-coloured label (a palette PNG saved as RGB) -> (H, W) uint8 class indices, 255 border.

    Raises ValueError naming the first colour that is neither a VOC class colour nor the border colour.
    """
    pal = voc_palette().astype(np.int64)
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = {int(c): i for i, c in enumerate((pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2])
             if i < NUM_CLASSES or i == io.IGNORE}
    uniq, inv = np.unique(codes, return_inverse=True)
    lut = np.empty(len(uniq), np.uint8)
    for j, c in enumerate(uniq):
        if int(c) not in table:
            raise ValueError(f"colour {(int(c) >> 16, (int(c) >> 8) & 255, int(c) & 255)} is not a VOC class colour")
        lut[j] = table[int(c)]
    return lut[inv].reshape(codes.shape)


def read_label(path: str | Path) -> np.ndarray:
    """A VOC ground-truth PNG -> (H, W) uint8 class indices 0..20, 255 ignored.

    Palette PNGs (SegmentationClass) and greyscale ones (SegmentationClassAug) hold the indices; an RGB copy is
    decoded through the VOC colour map. Any other value is an InputError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise io.InputError(f"{path}: VOC label file not found")
    with Image.open(path) as img:
        mode = img.mode
    if mode in ("P", "L"):
        label = io.read_label(path)
    else:
        try:
            label = colours_to_index(io.read_image(path))
        except ValueError as e:
            raise io.InputError(f"{path}: {e}") from e
    bad = (label >= NUM_CLASSES) & (label != io.IGNORE)
    if bad.any():
        raise io.InputError(f"{path}: holds value {int(label[bad].max())}; VOC labels are 0..20 or 255")
    return label


def locate(root: str | Path) -> Path | None:
    """The VOC2012 folder under `root` (the VOCdevkit folder, its parent, or VOC2012 itself), None if absent."""
    root = Path(root)
    for cand in (root / "VOC2012", root / "VOCdevkit" / "VOC2012", root):
        if (cand / "JPEGImages").is_dir() and (cand / "ImageSets" / "Segmentation").is_dir():
            return cand
    return None


def _missing_message(root: Path) -> str:
    return (f"data.root {root}: no VOC 2012 found. Put the VOCdevkit there so that {root}/VOC2012/JPEGImages, "
            f"SegmentationClass and ImageSets/Segmentation exist (tar xf VOCtrainval_11-May-2012.tar gives "
            f"VOCdevkit/VOC2012; point data.root at that VOCdevkit), or with internet set data.download=true.")


def trainaug_ids(voc_root: Path) -> list[str]:
    """The augmented training set: ImageSets/Segmentation/trainaug.txt if present, else every
    SegmentationClassAug label whose id is not in val.txt (the usual 10,582 images)."""
    listed = voc_root / "ImageSets" / "Segmentation" / "trainaug.txt"
    if listed.is_file():
        return [x.strip() for x in listed.read_text().splitlines() if x.strip()]
    val = set(_read_ids(voc_root / "ImageSets" / "Segmentation" / "val.txt"))
    return sorted(p.stem for p in (voc_root / "SegmentationClassAug").glob("*.png") if p.stem not in val)


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise io.InputError(f"{path}: split file not found (expected one image id per line)")
    return [x.strip() for x in path.read_text().splitlines() if x.strip()]


def split_files(root: str | Path, split: str, download: bool = False) -> list[tuple[str, Path, Path]]:
    """The (id, image path, label path) triples of a split, in split-file order.

    train / val / trainval go through torchvision's VOCSegmentation (which downloads when `download` and
    the folder is missing); trainaug needs SegmentationClassAug/ and reads its labels from there.
    """
    root = Path(root)
    voc_root = locate(root)
    if voc_root is None and download:
        from torchvision.datasets import VOCSegmentation
        VOCSegmentation(str(root), year="2012", image_set="train", download=True)  # -> root/VOCdevkit/VOC2012
        voc_root = locate(root)
    if voc_root is None:
        raise io.InputError(_missing_message(root))
    if split == "trainaug":
        if not (voc_root / "SegmentationClassAug").is_dir():
            raise io.InputError(f"{voc_root}/SegmentationClassAug: not found; data.split=trainaug needs the SBD "
                                f"augmented labels there (SegmentationClassAug/<id>.png), or use train / val / trainval")
        ids = trainaug_ids(voc_root)
        return [(i, voc_root / "JPEGImages" / f"{i}.jpg", voc_root / "SegmentationClassAug" / f"{i}.png") for i in ids]
    if split not in TORCHVISION_SPLITS:
        raise io.InputError(f"data.split {split!r}: VOC 2012 splits are train, val, trainval, trainaug")
    from torchvision.datasets import VOCSegmentation
    try:
        ds = VOCSegmentation(str(voc_root.parent.parent), year="2012", image_set=split, download=False) \
            if voc_root.parent.name == "VOCdevkit" else None
    except (RuntimeError, FileNotFoundError):
        ds = None
    if ds is not None:
        pairs = list(zip(ds.images, ds.targets))
    else:  # a VOC2012 folder not inside a folder named VOCdevkit: same layout, read directly
        ids = _read_ids(voc_root / "ImageSets" / "Segmentation" / f"{split}.txt")
        pairs = [(voc_root / "JPEGImages" / f"{i}.jpg", voc_root / "SegmentationClass" / f"{i}.png") for i in ids]
    return [(Path(img).stem, Path(img), Path(lab)) for img, lab in pairs]
