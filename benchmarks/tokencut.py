"""Features + proposals against TokenCut's procedure, side by side in one run: same images, same model, same
threads. Not a test: it prints a table of milliseconds per image.

    python -m benchmarks.tokencut                                   # 16 Weizmann Horse images at 480 px
    python -m benchmarks.tokencut --images 8 --size 224 --folder ../shared/data/camvid_val/images

Both sides run ViT-S/16 (timm `vit_small_patch16_224`, random weights, dynamic image size) on the same images,
resized to --size x --size.

TokenCut (Wang et al., `TokenCut/object_discovery.py` `ncut`, read for this): batch 1, float32; the last block's
attention keys with the class token dropped, L2-normalised; A = 1 where cosine > tau (0.2) else eps (1e-5);
D = diag(A 1); the dense generalized eigensolver `scipy.linalg.eigh(D - A, D, subset_by_index=[1, 2])`; the
bipartition above the second eigenvector's mean; the seed at argmax |v|, flipped into the foreground; the
foreground's connected component holding the seed (`scipy.ndimage.label`, as its `detect_box`). Its patch mask is
the output (no bilateral-solver refinement, as in its default).

Ours: the features stage's own code (`pipeline.backbone.features.extract`, batch --batch, float32 and bfloat16
autocast) and the proposals stage's per-image work (`proposals.patch_proposals` on the keys with the params.yaml
proposals section, then `proposals.pixel_masks` with each refinement: grabcut as params.yaml
(`proposals.refine_max_side`) and at full resolution, guided, none).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import scipy.linalg
import scipy.ndimage
import timm
import torch
import yaml

from pipeline.backbone import factory as bb
from pipeline.backbone import features
from pipeline.config import parse_params
from pipeline.method import proposals

ROOT = Path(__file__).resolve().parents[1]


def tokencut_mask(keys: np.ndarray, tau: float = 0.2, eps: float = 1e-5) -> np.ndarray:
    """TokenCut's ncut on one image's keys (h, w, D) -> (h, w) bool: the seed's component of the bipartition."""
    h, w = keys.shape[:2]
    f = torch.nn.functional.normalize(torch.from_numpy(keys.reshape(h * w, -1)).float(), p=2, dim=1)
    a = (f @ f.T).numpy()
    a = np.where(a > tau, 1.0, eps)
    d = np.diag(a.sum(1))
    _, vecs = scipy.linalg.eigh(d - a, d, subset_by_index=[1, 2])
    v = vecs[:, 0]
    part = v > v.mean()
    seed = int(np.argmax(np.abs(v)))
    if not part[seed]:
        part = ~part
    labels, _ = scipy.ndimage.label(part.reshape(h, w))
    return labels == labels.flat[seed]


@torch.no_grad()
def tokencut_keys(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """What TokenCut's forward computes for one image (H, W, 3) uint8 -> its last block's keys (H/16, W/16, D)
    float32: DINO's `get_last_selfattention` runs every block but the last, then the last block's attention alone
    (norm1, qkv, softmax(q k^T)), skipping its projection, MLP and the final norm that our features also need."""
    x = bb.normalize(bb.to_tensor(image[None]))
    x = model.norm_pre(model._pos_embed(model.patch_embed(x)))
    for blk in model.blocks[:-1]:
        x = blk(x)
    last = model.blocks[-1].attn
    b, n, c = x.shape
    qkv = last.qkv(model.blocks[-1].norm1(x)).reshape(b, n, 3, last.num_heads, c // last.num_heads)
    q, k = qkv.permute(2, 0, 3, 1, 4)[:2]
    (q * last.scale @ k.transpose(-2, -1)).softmax(-1)  # the attention map TokenCut's forward returns (unused here)
    keys = k.permute(0, 2, 1, 3).reshape(b, n, c)[0, model.num_prefix_tokens:]
    return keys.reshape(image.shape[0] // 16, image.shape[1] // 16, c).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, default=ROOT.parent / "shared" / "data" / "weizmann_horse" / "images")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", type=int, default=480, help="side of the square images, a multiple of 16")
    ap.add_argument("--batch", type=int, default=8, help="our features' batch size (TokenCut: 1)")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"],
                    help="our features' precisions (bf16 only pays on a CPU with bf16 instructions)")
    args = ap.parse_args()
    files = sorted(args.folder.glob("*.jpg"))[:args.images]
    images = [cv2.resize(cv2.imread(str(f))[:, :, ::-1], (args.size, args.size), interpolation=cv2.INTER_AREA)
              for f in files]
    p = parse_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, dynamic_img_size=True,
                              img_size=args.size).eval()
    n, cpu = len(images), torch.device("cpu")
    print(f"{n} images of {args.size} px from {args.folder}, ViT-S/16 random weights, {torch.get_num_threads()} "
          f"torch threads, bf16 instructions: {features.cpu_has_bf16()}\n")

    ours = features.per_image(model, images[:1], 1, cpu, "fp32")[0]["keys"].astype(np.float32)  # warm-up, both
    theirs = tokencut_keys(model, images[0])
    assert np.abs(theirs - ours).max() <= 1e-2 * np.abs(ours).max(), "the TokenCut side's keys are not the model's"
    t0 = time.perf_counter()
    for im in images:  # TokenCut: one image at a time, float32, then its eigensolver
        tokencut_mask(tokencut_keys(model, im))
    tokencut_ms = (time.perf_counter() - t0) / n * 1000

    rows = [("TokenCut (batch 1, fp32, dense eigh, seed component)", tokencut_ms, None)]
    refinements = [("grabcut", {}), ("grabcut", {"refine_max_side": 0}), ("guided", {}), ("none", {})]
    for precision in args.precisions:
        features.per_image(model, images[:args.batch], args.batch, cpu, precision)  # warm-up
        t0 = time.perf_counter()
        feats = features.per_image(model, images, args.batch, cpu, precision)
        feat_ms = (time.perf_counter() - t0) / n * 1000
        for refine, extra in refinements:
            cfg = p.proposals.model_copy(update={"refine": refine, **extra})
            if refine == "grabcut":
                side = cfg.refine_max_side
                refine += f" (max side {side})" if side else " (full resolution)"
            t0 = time.perf_counter()
            for im, f in zip(images, feats):
                proposals.pixel_masks(im, proposals.patch_proposals(f["keys"].astype(np.float32), cfg), 16, cfg)
            rows.append((f"ours: features {precision} batch {args.batch}, refine {refine}", feat_ms,
                         (time.perf_counter() - t0) / n * 1000))
    print("| procedure | features ms/image | proposals ms/image | total ms/image | speed-up over TokenCut |")
    print("|---|---|---|---|---|")
    for name, fm, pm in rows:
        total = fm + (pm or 0.0)
        print(f"| {name} | {fm:.0f} | {'(in total)' if pm is None else f'{pm:.0f}'} | {total:.0f} | "
              f"{tokencut_ms / total:.2f}x |")


if __name__ == "__main__":
    main()
