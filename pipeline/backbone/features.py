"""Dense patch features for a stream of images, batched, on the GPU when present."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import nn

from pipeline.backbone import factory as bb


def extract(model: nn.Module, images: np.ndarray, batch_size: int, device: torch.device) -> Iterator[dict[str, np.ndarray]]:
    """Images (N, H, W, 3) uint8 -> per batch {'tokens', 'keys'}: (b, H/p, W/p, D) float16 arrays.

    Tokens are the final normed patch tokens, keys the last block's attention keys.
    """
    model = model.to(device).eval()
    amp = device.type == "cuda"
    for start in range(0, len(images), batch_size):
        x = bb.normalize(bb.to_tensor(images[start:start + batch_size]).to(device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            tokens, keys = bb.dense_features(model, x)
        yield {"tokens": tokens.float().cpu().numpy().astype(np.float16),
               "keys": keys.float().cpu().numpy().astype(np.float16)}
