"""Dense CRF post-processing of the network's probabilities (label-free): Kraehenbuehl & Koltun's fully connected
CRF with Gaussian edge potentials, through pydensecrf2 (`import pydensecrf.densecrf`), as MaskDistill's
segmentation/utils/crf.py runs it: unary -log p (p clipped at 1e-5, pydensecrf's `unary_from_softmax`), a smoothness
kernel (Potts weight `gaussian_weight`, spatial std `gaussian_sxy`) and an appearance kernel (weight
`bilateral_weight`, spatial std `bilateral_sxy`, colour std `bilateral_srgb`), `iterations` mean-field steps.

Where we depart from MaskDistill: it upsamples the logits to the ORIGINAL image size and runs the CRF there on the
original pixels; the train stage holds only the prepared images (short side data.image_size), so the CRF runs on the
prepared image with the probabilities at the prepared size, and the caller upsamples the refined probabilities to
the original size (bilinear) before the argmax. On sets whose originals are the prepared size (the synthetic
default) the two agree; on large photos ours sees fewer pixels (faster, coarser borders). MaskDistill reads the
image with cv2 (BGR); the colour kernel is isotropic in the three channels, so the channel order does not matter.

`refine_all` runs the CRF over many images in a process pool (pipeline/parallel.py; each image independent and
deterministic: any worker count gives the same bytes), a bounded number of images at a time.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from pipeline import parallel
from pipeline.config import CRFConfig

MISSING = ("the dense CRF needs the package pydensecrf2 (module pydensecrf): `pip install pydensecrf2` (it builds "
           "from source: needs a C++ compiler and Cython), or turn the CRF off with crf.predictions: false and "
           "train.crf_rounds: 0")


def _densecrf() -> Any:
    """The pydensecrf.densecrf module, or an ImportError saying how to get it or turn the CRF off."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as e:
        raise ImportError(f"{MISSING} ({type(e).__name__}: {e})") from e
    return dcrf


def check_available() -> None:
    """Raise the ImportError of `_densecrf` now (a stage calls it before hours of training, not after)."""
    _densecrf()


def dense_crf(image: np.ndarray, probs: np.ndarray, cfg: CRFConfig) -> np.ndarray:
    """Image (H, W, 3) uint8 and class probabilities (C, H, W) float (each pixel's sum 1) -> the CRF's refined
    probabilities (C, H, W) float32 (mean-field marginals, each pixel's sum 1). A kernel of weight 0 is left out:
    with both weights 0 the result is the softmax of the unary, whose argmax is the argmax of `probs`."""
    dcrf = _densecrf()
    c, h, w = probs.shape
    if image.shape != (h, w, 3):
        raise ValueError(f"image {image.shape} and probabilities {probs.shape} differ in size")
    crf = dcrf.DenseCRF2D(w, h, c)
    crf.setUnaryEnergy(np.ascontiguousarray(-np.log(np.clip(probs, 1e-5, 1.0)).reshape(c, -1), dtype=np.float32))
    if cfg.gaussian_weight > 0:
        crf.addPairwiseGaussian(sxy=cfg.gaussian_sxy, compat=cfg.gaussian_weight)
    if cfg.bilateral_weight > 0:
        crf.addPairwiseBilateral(sxy=cfg.bilateral_sxy, srgb=cfg.bilateral_srgb,
                                 rgbim=np.ascontiguousarray(image, dtype=np.uint8), compat=cfg.bilateral_weight)
    return np.asarray(crf.inference(cfg.iterations), dtype=np.float32).reshape(c, h, w)


def _task(item: tuple[Any, np.ndarray, np.ndarray], cfg: CRFConfig) -> tuple[Any, np.ndarray]:
    key, image, probs = item
    return key, dense_crf(image, probs, cfg)


def resolve_workers(workers: int, processes_per_node: int = 1) -> int:
    """crf.workers -> how many CRF processes one of `processes_per_node` training processes runs (0: every core,
    shared between them; at least 1)."""
    return max(1, (workers or parallel.cores()) // max(processes_per_node, 1))


def refine_all(items: Iterable[tuple[Any, np.ndarray, np.ndarray]], cfg: CRFConfig, workers: int,
               chunk: int = 8) -> Iterator[tuple[Any, np.ndarray]]:
    """(key, image (H_i, W_i, 3) uint8, probabilities (C, H_i, W_i) float32) items -> (key, `dense_crf` of the
    pair) in the same order. workers > 1: a process pool (parallel.map_images), `chunk` images per task, at most
    2 * workers tasks in flight: items are drawn from `items` as the pool needs them (`items` may be a generator
    doing other work, such as the network's forward pass); 1 (or 0): in this process. Every image is refined on its
    own, so the output does not depend on `workers` or `chunk`."""
    if workers > 1:
        check_available()
    yield from parallel.map_images(partial(_task, cfg=cfg), items, max(workers, 1), chunk)


def argmax_at(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Probabilities (C, h, w) -> (H, W) = size uint8 argmax, after bilinear upsampling (align_corners=False, as the
    network's logits are upsampled) where the sizes differ."""
    if tuple(probs.shape[1:]) == tuple(size):
        return probs.argmax(0).astype(np.uint8)
    import torch
    import torch.nn.functional as F

    up = F.interpolate(torch.from_numpy(np.ascontiguousarray(probs))[None], size=tuple(int(v) for v in size),
                       mode="bilinear", align_corners=False)
    return up[0].argmax(0).to(torch.uint8).numpy()


def refiner(cfg: CRFConfig, processes_per_node: int) -> Callable[[Iterable], Iterator[tuple[Any, np.ndarray]]]:
    """`refine_all` with the crf section's settings over crf.workers processes (0: every core, shared between the
    `processes_per_node` training processes of this node); raises `check_available`'s error now, before any work."""
    check_available()
    return partial(refine_all, cfg=cfg, workers=resolve_workers(cfg.workers, processes_per_node))
