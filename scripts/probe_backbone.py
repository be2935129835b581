"""Probe: how well a backbone's patch features cluster on the synthetic default (patch-level k-means mIoU).

python scripts/probe_backbone.py [WEIGHTS.pth]   (no argument: a randomly initialised backbone)
Prints k-means mIoU of patch features and of pixel colours against the synthetic ground truth, computed as the
evaluate stage's baselines (float16 tokens as the features stage stores them, evaluate.baseline_kmeans_init).
"""
import sys

import numpy as np
import torch

from pipeline.backbone import factory as bb
from pipeline.config import load_params
from pipeline.data import synth
from pipeline.evaluate import baselines, metrics


def main() -> None:
    p = load_params()
    data = synth.generate_dataset(p.seed, p.data.synth_images, p.data.image_size, p.data.synth_max_objects)
    images = np.stack([d[1] for d in data]); labels = np.stack([d[2] for d in data])
    src = "file" if len(sys.argv) > 1 else "random"
    cfg = p.backbone if src == "random" else type(p.backbone)(**{**p.backbone.__dict__, "weights": sys.argv[1]})
    torch.manual_seed(0)
    model = bb.create_backbone(cfg, p.data.image_size, source=src).eval()
    toks = []
    for i in range(0, len(images), 32):
        t, _ = bb.dense_features(model, bb.normalize(bb.to_tensor(images[i:i + 32])))
        toks.append(t.numpy().astype(np.float16))
    toks = np.concatenate(toks)
    k = p.data.num_classes
    n_init = p.evaluate.baseline_kmeans_init
    pl = baselines.upsample_labels(baselines.kmeans_patches(toks, k, p.seed, n_init), p.data.image_size)
    cl = baselines.kmeans_colours(images, k, p.seed, p.evaluate.baseline_pixels, n_init)
    print(f"patch-feature kmeans mIoU {metrics.evaluate_maps(pl, labels, k, k, p.evaluate.match)['miou']:.3f}  "
          f"colour kmeans mIoU {metrics.evaluate_maps(cl, labels, k, k, p.evaluate.match)['miou']:.3f}")


if __name__ == "__main__":
    main()
