"""The one prediction path: images -> the network's logits, upsampled to each image's target size (its original
size) -> argmax classes and their softmax confidence, and on demand the dense CRF's refinement of the softmax. The
self-training relabelling, the ceiling diagnostic and the prediction folders of the train stage all read it.

Images of one size are batched together (`factory.size_batches`), so predictions come out grouped by size, each
carrying its index; one batch's logits (and one image's upsampled logits) are held at a time, plus the images the
CRF pool holds in flight.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.backbone import factory as bb
from pipeline import io
from pipeline.train import crf
from pipeline.train.data import Take, shapes_of
from pipeline.distributed import shard, world
from pipeline.train.optim import amp_dtype

# (key, image (H, W, 3) uint8, probabilities (C, H, W) float32) items -> (key, refined (C, H, W)) in the same order:
# `crf.refine_all` with its configuration bound (`crf.refiner`)
Refiner = Callable[[Iterable[tuple[Any, np.ndarray, np.ndarray]]], Iterator[tuple[Any, np.ndarray]]]


@dataclass(frozen=True)
class Prediction:
    """One image's prediction. classes, confidence, refined: at the image's target size (H, W)."""
    index: int  # the image's position in the sequence predicted
    image: np.ndarray  # (h, w, 3) uint8, the network's input
    classes: np.ndarray  # (H, W) uint8: argmax of the logits upsampled bilinearly (align_corners=False)
    confidence: np.ndarray  # (H, W) float32: the softmax probability of that class
    refined: np.ndarray | None  # (H, W) uint8: argmax of the CRF-refined softmax upsampled (`crf.argmax_at`); None
    # without a refiner
    probs: np.ndarray | None = None  # (C, H, W) float32: the softmax of the upsampled logits, with `probs=True`


@torch.no_grad()
def _network(model: nn.Module, images: Sequence[np.ndarray], batch_size: int, device: torch.device, amp: bool,
             sizes: Sequence[tuple[int, int]] | None, with_probs: bool, target_probs: bool = False) -> Iterator[tuple]:
    """Per image (index, image, classes (H, W) uint8 tensor, confidence (H, W) float32 tensor, softmax (C, h, w)
    at the input size or None, softmax (C, H, W) at the target size with `target_probs` or None), batch by batch."""
    model.to(device).eval()
    dtype = amp_dtype(device, amp)
    for idx in bb.size_batches(shapes_of(images), batch_size):
        batch = [images[i] for i in idx]
        x = bb.normalize(bb.to_tensor(np.stack(batch)).to(device))
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = model(x)
        logits = logits.float()
        targets = [tuple(logits.shape[-2:]) if sizes is None else tuple(int(v) for v in sizes[i]) for i in idx]
        probs = logits.softmax(1) if with_probs else None
        if all(t == tuple(logits.shape[-2:]) for t in targets):
            full = probs if with_probs else logits.softmax(1)
            conf, cls = full.max(1)
            for j, i in enumerate(idx):
                yield (i, batch[j], cls[j].to(torch.uint8), conf[j], probs[j] if with_probs else None,
                       full[j] if target_probs else None)
            continue
        for j, i in enumerate(idx):
            lg = logits[j:j + 1]
            if targets[j] != tuple(lg.shape[-2:]):
                lg = F.interpolate(lg, size=targets[j], mode="bilinear", align_corners=False)
            full = lg.softmax(1)
            conf, cls = full.max(1)
            yield (i, batch[j], cls[0].to(torch.uint8), conf[0], probs[j] if with_probs else None,
                   full[0] if target_probs else None)


def predictions(model: nn.Module, images: Sequence[np.ndarray], batch_size: int, device: torch.device, amp: bool,
                sizes: Sequence[tuple[int, int]] | None = None, refine: Refiner | None = None, probs: bool = False
                ) -> Iterator[Prediction]:
    """Images ((h_i, w_i, 3) uint8, sizes may differ; in memory or read on access, each read once) -> one
    `Prediction` per image, grouped by input size (indices may come out of order).

    sizes: per image the (H, W) its logits are upsampled to before the softmax and argmax (its original size);
    None keeps the input size. refine: also the dense CRF on the softmax at the input size and the input image (from
    the same forward pass), upsampled to the target size, argmax (`Prediction.refined`). probs: also the softmax at
    the target size (`Prediction.probs`)."""
    net = _network(model, images, batch_size, device, amp, sizes, refine is not None, probs)
    if refine is None:
        for i, image, cls, conf, _, full in net:
            yield Prediction(i, image, cls.cpu().numpy(), conf.cpu().numpy(), None, _numpy(full))
        return
    pending: dict[int, tuple] = {}  # what the CRF pool holds in flight, by index

    def items() -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for i, image, cls, conf, small, full in net:
            pending[i] = (image, cls.cpu().numpy(), conf.cpu().numpy(), _numpy(full))
            yield i, image, small.cpu().numpy()

    for i, q in refine(items()):
        image, cls, conf, full = pending.pop(i)
        yield Prediction(i, image, cls, conf, crf.argmax_at(q, cls.shape), full)


def _numpy(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.cpu().numpy()


def write_predictions(model: nn.Module, rounds: list[dict], splits: Sequence[tuple[list[str], Sequence[np.ndarray]]],
                      sizes: dict[str, tuple[int, int]], folder: str | Path, batch_size: int, device: torch.device,
                      amp: bool, refine: Refiner | None) -> None:
    """Every round's network (`self_train`'s rounds: a round's 'weights', the model's own for the last) predicts
    every image of `splits` ((names, images) pairs, images in memory or read on access) at its original size
    (`sizes` by name), this process its `shard` of each split: the class maps and overlays (the image resized to
    that size) -> folder/labels/, folder/overlays/ for the last round, and with several rounds also
    folder/round_<r>/. refine: the last round's CRF-refined maps -> folder/crf/ (labels and overlays).
    The model ends with the last round's weights."""
    folder = Path(folder)
    rank, world_size = world()
    final = {k: v.detach().clone() for k, v in model.state_dict().items()}
    mine = [(names, shard(range(len(names)), rank, world_size), images) for names, images in splits]
    todo = [([names[i] for i in idx], Take(images, idx)) for names, idx, images in mine]
    for rd in rounds:
        last = rd is rounds[-1]
        folders = ([folder / f"round_{rd['round']}"] if len(rounds) > 1 else []) + ([folder] if last else [])
        model.load_state_dict(rd.get("weights", final))
        for names, images in todo:
            for pr in predictions(model, images, batch_size, device, amp, [sizes[n] for n in names],
                                  refine if last else None):
                for f in folders:
                    io.write_maps(f, [names[pr.index]], [pr.classes], [pr.image])
                if pr.refined is not None:
                    io.write_maps(folder / "crf", [names[pr.index]], [pr.refined], [pr.image])
    model.load_state_dict(final)
