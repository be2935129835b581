"""DeepUSPS's refinement of handcrafted saliency maps by a network trained on them (Nguyen, Dax, Mummadi, Ngo,
Nguyen, Lou, Brox, "DeepUSPS: Deep Robust Unsupervised Saliency Prediction With Self-Supervision", NeurIPS 2019;
read from the paper and donnydonnyullrich/DeepUSPS).

Each round trains a fresh network (the train section's recipe, 2 classes: background, salient) on the maps'
labels (the adaptive threshold of saliency.threshold, pixels within `ignore_band` of it ignored), predicts every
training image through the one prediction path (pipeline/train/predict.py), and updates the maps by a moving
average, maps <- momentum x maps + (1 - momentum) x the network's foreground probability, then the dense CRF of
the crf section on the image (cfg.crf). The next round's labels come from the updated maps.

Where this departs from DeepUSPS, and why:
- one network on the fused maps of all cues, not one per handcrafted method whose refined maps are averaged at the
  end: a fraction of the CPU time, and the fusion of cues is already an average;
- the moving average runs over rounds (one prediction pass per round), not over every epoch of a round: a
  prediction pass per epoch would double the cost on the CPU;
- the network starts from the pretrain stage's backbone (frozen, as the train section says) or random init, never
  from a network trained with labels (DeepUSPS starts from a DRN pretrained on Cityscapes);
- cross-entropy on hard labels with an ignore band, not DeepUSPS's soft-target loss, so it is the train stage's
  own loss and loop.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from pipeline.config import CRFConfig, SaliencyConfig, TrainConfig, replace
from pipeline.io import IGNORE
from pipeline.method import saliency
from pipeline.train import crf, loop, predict


def round_labels(sal: np.ndarray, rule: str, band: float) -> np.ndarray:
    """(H, W) map in [0, 1] -> (H, W) uint8 training labels: 1 above the adaptive threshold, 0 below, IGNORE
    (255) within `band` of it."""
    t = saliency.threshold(sal, rule)
    labels = (sal > t).astype(np.uint8)
    labels[np.abs(sal - t) < band] = IGNORE
    return labels


def moving_average(before: np.ndarray, prob: np.ndarray, momentum: float) -> np.ndarray:
    """(H, W) maps before a round and the network's (H, W) foreground probability -> momentum before +
    (1 - momentum) prob."""
    return momentum * before + (1 - momentum) * prob


def foreground_probability(pred: predict.Prediction) -> np.ndarray:
    """A 2-class prediction -> (H, W) float64 probability of class 1 (its confidence where it won, else 1 minus)."""
    conf = pred.confidence.astype(np.float64)
    return np.where(pred.classes == 1, conf, 1 - conf)


def crf_map(image: np.ndarray, sal: np.ndarray, cfg: CRFConfig) -> np.ndarray:
    """(H, W, 3) uint8 image and its (H, W) map in [0, 1] -> (H, W) float64 salient marginal of the dense CRF on
    the two classes (1 - map, map)."""
    return crf.dense_crf(image, np.stack([1 - sal, sal]).astype(np.float32), cfg)[1].astype(np.float64)


def refine(images: Sequence[np.ndarray], maps: list[np.ndarray], cfg: SaliencyConfig, train: TrainConfig,
           crf_cfg: CRFConfig, build: Callable[[], nn.Module], seed: int, device: torch.device,
           on_round: Callable[[int, list[np.ndarray]], None] | None = None) -> list[np.ndarray]:
    """Images ((H_i, W_i, 3) uint8) and their classic maps ((H_i, W_i) in [0, 1]) -> the maps after cfg.rounds
    rounds. build() returns a fresh 2-class network; round r trains it with seed + r for cfg.epochs epochs.
    on_round(r, maps) is called after each round."""
    train = replace(train, epochs=cfg.epochs)
    for r in range(cfg.rounds):
        labels = [round_labels(m, cfg.threshold, cfg.ignore_band) for m in maps]
        torch.manual_seed(seed + r)
        net = build()
        loop.train(net, images, labels, train, seed + r, device)
        probs: list[np.ndarray | None] = [None] * len(images)
        for pred in predict.predictions(net, images, train.batch_size, device, train.amp):
            probs[pred.index] = foreground_probability(pred)
        maps = [moving_average(m, q, cfg.momentum) for m, q in zip(maps, probs)]
        if cfg.crf:
            maps = [crf_map(im, m, crf_cfg) for im, m in zip(images, maps)]
        if on_round is not None:
            on_round(r, maps)
    return maps
