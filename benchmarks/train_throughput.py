"""Training throughput of the segmentation network: images per second and peak memory (not a test).

    python benchmarks/train_throughput.py                       # the default and ViT-S/16 at 224 px
    python benchmarks/train_throughput.py --models default --steps 20 --device cuda

Each model runs in its own process (so the CPU's peak resident memory, getrusage's max RSS, is its own;
on a GPU torch.cuda.max_memory_allocated). The first `--warmup` steps are not timed. Images and labels
are random: the speed does not depend on them. Settings not given here come from params.yaml's train
section (batch size, AMP, workers, ...).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MODELS = {  # name -> (train.model, train.model_name, image size)
    "default": ("stage", "", None),  # the shipped DINO ViT (params.yaml backbone) at data.image_size
    "vit_s16_224": ("timm", "vit_small_patch16_224", 224),  # ViT-S/16, random weights
}


def measure(name: str, steps: int, warmup: int, batch_size: int, device_name: str, workers: int) -> dict:
    import numpy as np
    import torch

    from pipeline.backbone import factory as bb
    from pipeline.config import load_params, replace
    from pipeline.train import loop, optim
    from pipeline.train.models import build_model

    p = load_params(ROOT / "params.yaml")
    model_kind, model_name, size = MODELS[name]
    size = size or p.data.image_size
    cfg = replace(p.train, model=model_kind, model_name=model_name, workers=workers,
                 batch_size=batch_size or p.train.batch_size, epochs=1)
    device = bb.pick_device(device_name)
    if p.train.threads:
        torch.set_num_threads(p.train.threads)
    weights = replace(p.backbone, weights=str(ROOT / p.backbone.weights))
    torch.manual_seed(0)
    model = build_model(cfg, p.cluster.k + 1, size, lambda: bb.create_backbone(weights, size))
    n = cfg.batch_size * (steps + warmup)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, p.cluster.k + 1, (n, size, size), dtype=np.uint8)
    times: list[float] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def tick(rec: dict) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter())

    loop.fit(model, images, labels, cfg, 0, device, epochs=1, on_step=tick)
    timed = times[warmup:]
    ips = cfg.batch_size * (len(timed) - 1) / (timed[-1] - timed[0])
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        what = "torch.cuda.max_memory_allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        what = "max RSS"
    params = sum(t.numel() for t in model.parameters()) / 1e6
    return {"model": name, "image_size": size, "params_M": round(params, 2), "batch_size": cfg.batch_size,
            "device": str(device), "amp": str(optim.amp_dtype(device, cfg.amp)), "threads": torch.get_num_threads(),
            "workers": workers, "images_per_second": round(ips, 2), "peak_memory_MiB": round(peak, 1), "memory": what}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of: {', '.join(MODELS)}")
    ap.add_argument("--steps", type=int, default=8, help="timed optimizer steps per model")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocation, autotuning)")
    ap.add_argument("--batch-size", type=int, default=0, help="0 = params.yaml train.batch_size")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers (params default is for long runs)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one model in this process
    a = ap.parse_args()
    if a.one:
        print(json.dumps(measure(a.one, a.steps, a.warmup, a.batch_size, a.device, a.workers)))
        return
    for name in a.models.split(","):
        if name not in MODELS:
            sys.exit(f"--models: unknown {name!r}; known: {', '.join(MODELS)}")
        cmd = [sys.executable, __file__, "--one", name, "--steps", str(a.steps), "--warmup", str(a.warmup),
               "--batch-size", str(a.batch_size), "--device", a.device, "--workers", str(a.workers)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['model']:>12}  {r['image_size']} px  {r['params_M']} M params  batch {r['batch_size']}  "
              f"{r['device']} (amp {r['amp']}, {r['threads']} threads, {r['workers']} workers): "
              f"{r['images_per_second']:.1f} images/s, peak memory {r['peak_memory_MiB']:.0f} MiB ({r['memory']})",
              flush=True)


if __name__ == "__main__":
    main()
