"""The trained network for any image: `Segmenter.load(bundle)` and `predict` (re-exported as `pipeline.Segmenter`).

An image is fed exactly as the train stage fed its images: read as RGB (`io.read_image`: EXIF rotation, alpha,
palette, CMYK, 16-bit converted), resized by the prepare stage's rule (`datasets.resize_image`: short side the
bundle's image_size, sides multiples of its patch size), then predicted by the one prediction path
(`predict.predictions`: normalisation, size batches, bf16 autocast on CUDA, logits upsampled bilinearly to the
image's own size, the dense CRF on demand). The class maps are therefore the train stage's, byte for byte.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from PIL import Image
from torch import nn

from pipeline import io
from pipeline.backbone import factory as bb
from pipeline.data.datasets import resize_image
from pipeline.train import bundle, crf, predict
from pipeline.train.bundle import BundleConfig, BundleError

ImageLike = np.ndarray | Image.Image | str | Path  # (H, W, 3) / (H, W) / (H, W, 4) uint8, a PIL image, a file
CHUNK_BATCHES = 8  # predict_many holds this many batches' prepared images at a time


@dataclass(frozen=True)
class Result:
    """One image of `predict_many`: its class map, or why it could not be read."""
    item: Any  # the image as given (a path, an array, ...)
    classes: np.ndarray | None  # (H, W) uint8 at the image's own size; None when `error`
    image: np.ndarray | None  # (h, w, 3) uint8: the network's input (the image at the prepared size)
    error: str | None = None  # io.InputError's message: the file and the problem


def to_rgb(image: ImageLike) -> np.ndarray:
    """An image in any accepted form -> (H, W, 3) uint8 RGB; io.InputError naming the problem otherwise.

    arrays: (H, W) greyscale, (H, W, 3) RGB or (H, W, 4) RGBA (alpha dropped), uint8; PIL images and files are
    converted as `io.read_image` converts a file."""
    if isinstance(image, (str, Path)):
        return io.read_image(image)
    if isinstance(image, Image.Image):
        return io.pil_to_rgb(image)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise io.InputError(f"image array must be uint8 (0..255), got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or 0 in arr.shape:
        raise io.InputError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    return np.ascontiguousarray(arr[:, :, :3])


class Segmenter:
    """A trained unseg network with what it needs to be fed: its bundle's config and class names."""

    def __init__(self, model: nn.Module, config: BundleConfig, names: dict[int, str], device: str = "auto") -> None:
        if tuple(config.mean) != bb.MEAN or tuple(config.std) != bb.STD:
            raise BundleError(f"config.json: mean {config.mean} / std {config.std} differ from the normalisation "
                              f"this unseg applies ({list(bb.MEAN)} / {list(bb.STD)})")
        self.device = bb.pick_device(device)
        self.model, self.config, self.names = model.to(self.device).eval(), config, dict(names)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", names: str | Path | None = None) -> Segmenter:
        """A bundle folder (data/11_bundle/) -> a Segmenter on `device` ('auto': CUDA when present, 'cpu',
        'cuda'); names: a names.yaml ({id: name}) that overrides classes.json's names."""
        model, config, classes = bundle.load(path)
        if names is not None:
            classes = {**classes, **io.read_names(names, config.num_classes)}
        return cls(model, config, classes, device)

    def save(self, path: str | Path) -> None:
        """This network, config and names -> a bundle folder at `path`."""
        bundle.write(path, self.model, self.config, self.names)

    def network_input(self, image: ImageLike) -> tuple[np.ndarray, tuple[int, int]]:
        """An image -> (the network's input (h, w, 3) uint8: the prepare stage's resize of its RGB, its own (H, W))."""
        rgb = to_rgb(image)
        return resize_image(rgb, self.config.image_size, self.config.patch_size), rgb.shape[:2]

    def _run(self, inputs: list[np.ndarray], sizes: list[tuple[int, int]], batch_size: int, crf_on: bool,
             probs: bool = False) -> Iterator[predict.Prediction]:
        """The one prediction path on prepared images; the CRF in this process for one image, else over the
        bundle's crf.workers processes."""
        if crf_on:
            crf.check_available()
        workers = 1 if len(inputs) == 1 else crf.resolve_workers(self.config.crf.workers)
        refine = partial(crf.refine_all, cfg=self.config.crf, workers=workers) if crf_on else None
        return predict.predictions(self.model, inputs, batch_size, self.device, self.config.amp, sizes, refine,
                                   probs)

    def predict(self, image: ImageLike, crf: bool = False) -> np.ndarray:
        """One image -> (H, W) uint8 class ids at the image's own size; crf: the dense CRF's refinement (the
        bundle's crf settings)."""
        x, size = self.network_input(image)
        pr = next(self._run([x], [size], 1, crf))
        return pr.refined if crf else pr.classes

    def predict_proba(self, image: ImageLike) -> np.ndarray:
        """One image -> (C, H, W) float32 class probabilities at the image's own size (softmax of the logits
        upsampled bilinearly; its argmax over C is `predict`)."""
        x, size = self.network_input(image)
        return next(self._run([x], [size], 1, False, probs=True)).probs

    def predict_many(self, images: Iterable[ImageLike], batch_size: int | None = None,
                     crf: bool = False) -> Iterator[Result]:
        """Images (paths, arrays, PIL images; any iterable, read lazily) -> one `Result` per image, streamed:
        batch_size (default: the train stage's) images of one prepared size go through the network together, and
        at most CHUNK_BATCHES batches of prepared images are held at a time. Within a chunk the unreadable images
        come first, then the others grouped by size; every Result names its item."""
        bs = batch_size or self.config.batch_size
        chunk: list[tuple[Any, np.ndarray, tuple[int, int]]] = []
        for item in images:
            try:
                chunk.append((item, *self.network_input(item)))
            except io.InputError as e:
                yield Result(item, None, None, str(e))
                continue
            if len(chunk) == bs * CHUNK_BATCHES:
                yield from self._chunk(chunk, bs, crf)
                chunk = []
        yield from self._chunk(chunk, bs, crf)

    def _chunk(self, chunk: list[tuple[Any, np.ndarray, tuple[int, int]]], bs: int, crf_on: bool) -> Iterator[Result]:
        if not chunk:
            return
        for pr in self._run([c[1] for c in chunk], [c[2] for c in chunk], bs, crf_on):
            yield Result(chunk[pr.index][0], pr.refined if crf_on else pr.classes, pr.image)
