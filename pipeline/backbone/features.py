"""Dense patch features for a stream of images, batched, on the GPU when present."""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from pipeline.backbone import factory as bb


def extract(model: nn.Module, images: Sequence[np.ndarray], batch_size: int,
            device: torch.device) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
    """Images ((H_i, W_i, 3) uint8, sizes may differ; a stacked (N, H, W, 3) array works too) -> per batch
    (indices into `images`, {'tokens', 'keys'}: (b, H/p, W/p, D) float16 arrays).

    A batch holds images of one size (`factory.size_batches`: grouped by size, so batches may come out of input
    order; images of one size give the batches images[0:batch_size], images[batch_size:2 * batch_size], ...).
    The ViT takes any multiple of its patch size (dynamic_img_size), so nothing is padded or resized.
    Tokens are the final normed patch tokens, keys the last block's attention keys.
    """
    model = model.to(device).eval()
    amp = device.type == "cuda"
    for idx in bb.size_batches([im.shape for im in images], batch_size):
        x = bb.normalize(bb.to_tensor(np.stack([images[i] for i in idx])).to(device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            tokens, keys = bb.dense_features(model, x)
        yield idx, {"tokens": tokens.float().cpu().numpy().astype(np.float16),
                    "keys": keys.float().cpu().numpy().astype(np.float16)}


def per_image(model: nn.Module, images: Sequence[np.ndarray], batch_size: int,
              device: torch.device) -> list[dict[str, np.ndarray]]:
    """Images (sizes may differ) -> one {'tokens', 'keys'} dict of (H_i/p, W_i/p, D) float16 arrays per image,
    in input order (see `extract`)."""
    out: list[dict[str, np.ndarray] | None] = [None] * len(images)
    for idx, arrays in extract(model, images, batch_size, device):
        for j, i in enumerate(idx):
            out[i] = {k: v[j] for k, v in arrays.items()}
    return out  # type: ignore[return-value]
