"""The training data: images and label maps in memory or read on access, augmented by joint random resized crops,
keyed by (epoch, index) so that every draw derives from (seed, epoch, image) whichever process or worker makes it,
and the batch plan that says which keys each process trains on at each step.

Images may differ in size (lists of (H_i, W_i, 3) arrays; a stacked (N, H, W, 3) array works too): training draws
crop_size x crop_size random resized crops, so batches stack. Sequences read on access (io.LazyImages /
io.LazyLabels, `Take` of them) are read by the Dataset, in the DataLoader workers, one image at a time.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from pipeline.backbone import factory as bb
from pipeline.io import IGNORE


class ZoomCrop(v2.RandomResizedCrop):
    """RandomResizedCrop whose area scale may exceed 1, zooming out as well as in (MaskDistill's ScaleNRotate
    scales 0.75..1.25 around 1; a crop only zooms in).

    One draw: area share s ~ U(scale) of the image and aspect r log-uniform in `ratio`; the window (sqrt(s r) W,
    sqrt(s / r) H) lies uniformly inside the image along a side it fits, else holds that whole side at a uniform
    offset. Outside the image the image is the ImageNet mean (0 once normalised) and the label 255 (ignored); the
    window is resized to size x size (labels nearest). Where the window fits (s <= 1 with a fitting aspect) this is
    RandomResizedCrop's first draw; unlike it, a window that does not fit is padded, never redrawn.
    """

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        area = height * width * torch.empty(1).uniform_(self.scale[0], self.scale[1]).item()
        ratio = float(torch.exp(torch.empty(1).uniform_(*self._log_ratio)).item())
        w, h = max(int(round((area * ratio) ** 0.5)), 1), max(int(round((area / ratio) ** 0.5)), 1)
        top = int(torch.randint(min(height - h, 0), max(height - h, 0) + 1, size=(1,)).item())
        left = int(torch.randint(min(width - w, 0), max(width - w, 0) + 1, size=(1,)).item())
        return dict(top=top, left=left, height=h, width=w, image_size=(height, width))

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        top, left, h, w = params["top"], params["left"], params["height"], params["width"]
        height, width = params["image_size"]
        pad = [max(-left, 0), max(-top, 0), max(left + w - width, 0), max(top + h - height, 0)]  # l, t, r, b
        if any(pad):
            fill = IGNORE if isinstance(inpt, tv_tensors.Mask) else list(bb.MEAN)
            inpt = v2.functional.pad(inpt, pad, fill=fill)
        return v2.functional.resized_crop(inpt, top + pad[1], left + pad[0], h, w, size=self.size,
                                          interpolation=self.interpolation, antialias=self.antialias)


def augment(size: int, scale_min: float, scale_max: float, jitter: float) -> v2.Compose:
    """Joint image/label augmentation: a random resized crop of area share (scale_min, scale_max) back to `size`
    (labels nearest) and a horizontal flip. scale_max <= 1: torchvision's RandomResizedCrop (zooms in); > 1:
    `ZoomCrop` (zooms out too; outside the image the label is 255). jitter > 0: then torchvision's ColorJitter on
    the image alone (brightness, contrast, saturation by factors in [1 - jitter, 1 + jitter], hue by up to jitter / 2;
    v2 leaves masks untouched), so that the network cannot lean on colours the labels do not follow."""
    crop = v2.RandomResizedCrop if scale_max <= 1 else ZoomCrop
    steps = [crop(size, scale=(scale_min, scale_max), antialias=True), v2.RandomHorizontalFlip()]
    if jitter > 0:
        steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=min(0.5, jitter / 2)))
    return v2.Compose(steps)


def shapes_of(images: Sequence[np.ndarray]) -> list[tuple[int, ...]]:
    """Each image's array shape: a lazy sequence's `shapes()` (io.LazyImages: from the file headers, no pixels
    read), else each array's shape."""
    shapes = getattr(images, "shapes", None)
    return list(shapes()) if callable(shapes) else [tuple(np.shape(im)) for im in images]


class Take(Sequence):
    """seq[idx[0]], seq[idx[1]], ...: a subset of a sequence (in memory or read on access) that reads nothing
    until an item is asked for."""

    def __init__(self, seq: Sequence[np.ndarray], idx: Sequence[int]) -> None:
        self.seq, self.idx = seq, list(idx)

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, j):
        if isinstance(j, slice):
            return Take(self.seq, self.idx[j])
        return self.seq[self.idx[j]]

    def shapes(self) -> list[tuple[int, ...]]:
        shapes = shapes_of(self.seq)
        return [shapes[i] for i in self.idx]


def make_batch(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
               aug: v2.Compose | None) -> tuple[torch.Tensor, torch.Tensor]:
    """B (H, W, 3) uint8 images and B (H, W) uint8 labels -> normalised (B, 3, H, W) and (B, H, W) int64 (without
    `aug` every image must have the same size; `aug` crops them to one size)."""
    xs, ys = [], []
    for img, lab in zip(images, labels):
        x = tv_tensors.Image(torch.from_numpy(img).permute(2, 0, 1).float() / 255.0)
        y = tv_tensors.Mask(torch.from_numpy(lab.astype(np.int64)))
        if aug is not None:
            x, y = aug(x, y)
        xs.append(x.as_subclass(torch.Tensor))
        ys.append(y.as_subclass(torch.Tensor))
    return bb.normalize(torch.stack(xs)), torch.stack(ys)


class PairDataset(Dataset):
    """Augmented (image, label) pairs keyed by (epoch, index): a random resized crop of image i to size x size (the
    images may differ in size) whose draw in epoch e depends only on (seed, e, i), whichever process or worker
    draws it. images / labels: in memory or read on access (io.LazyImages, io.LazyLabels, `Take`): each item
    reads one image and its label, in the worker that draws it."""

    def __init__(self, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], scale_min: float, seed: int,
                 size: int, scale_max: float, jitter: float) -> None:
        self.images, self.labels, self.seed = images, labels, seed
        self.aug = augment(size, scale_min, scale_max, jitter)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.SeedSequence([self.seed, epoch, i]).generate_state(1)[0]))
            x, y = make_batch([self.images[i]], [self.labels[i]], self.aug)
        return x[0], y[0]


def steps_per_epoch(n: int, batch_size: int, world_size: int) -> int:
    """Optimiser steps per epoch of `batch_plan` over n images: the global batch min(batch_size, n) split evenly
    over the processes, each process's share of the images (DistributedSampler, drop_last) in whole batches."""
    global_bs = min(batch_size, n)
    if global_bs % world_size:
        raise ValueError(f"train.batch_size {global_bs} does not split evenly over {world_size} processes")
    return (n // world_size) // (global_bs // world_size)


def batch_plan(n: int, batch_size: int, epochs: int, seed: int, rank: int, world_size: int) -> tuple[list[list], int]:
    """This process's batches of (epoch, index) keys for the whole run, and the steps per epoch.

    The global batch min(batch_size, n) is split evenly over the processes; DistributedSampler (shuffled with
    `seed`, epoch by epoch, incomplete batches dropped) gives each its share, so step s of every process
    together covers exactly the images step s of a single process covers.
    """
    steps = steps_per_epoch(n, batch_size, world_size)
    per_rank = min(batch_size, n) // world_size
    sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
    plan = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        idx = list(sampler)
        plan += [[(epoch, i) for i in idx[s * per_rank:(s + 1) * per_rank]] for s in range(steps)]
    return plan, steps


def default_crop(images: Sequence[np.ndarray]) -> int:
    """The training crop side when none is given: the shortest image side (every image holds such a square)."""
    return min(min(s[:2]) for s in shapes_of(images))
