"""Benchmarks: per-stage speed and memory, scaling with the number of images, against the machine's limit.

Not a test: it measures and prints tables, and writes them as JSON (default benchmarks/results.json).

    python benchmarks/bench.py                      # everything at the default sizes (< 10 min on 2 cores)
    python benchmarks/bench.py --sections gemm features
    python benchmarks/bench.py --stage-sizes 100 --scaling-sizes 1000 3000

Sections
  gemm      float32 matrix-multiply FLOP/s of this machine (square, and shaped like ViT-S's linear layers)
  features  vit_small_patch16_224 (random weights) dense features at 224 and 448 px through the pipeline's own
            code path (pipeline.backbone.factory.dense_features): images/s per batch size against the GEMM bound
            (GEMM FLOP/s / model FLOPs per image, FLOPs from torch's flop counter)
  proposals per-image cost of the affinity graph and the normalized-cut eigenproblem at 196 and 784 patches
  stages    every DVC stage script of the default pipeline (tiny ViT, 128 px) on N generated images, each in its
            own process: wall time, images/s, peak resident memory, bytes written (train runs one epoch)
  scaling   cluster + filter + merge library calls on generated mask data for N images (each N in its own
            process): time and peak memory must grow linearly with N
  project   a projection of the whole pipeline on PASCAL VOC train_aug (10,582 images) from the measured
            per-image costs
  pretrain  (only when named) seconds per DINO training step (dino.train_step, fp32 as train_dino) of ViT-S/16
            (random weights) on 2 x 224 global + --pretrain-locals x 96 local crops made each step from random
            256 px images, with pretrain.crops per_image (torchvision v2, image by image) vs batched; on CUDA when
            present (batch --pretrain-batch, default 64 on CUDA, 8 on the CPU): crop s, step s, images/s

    python benchmarks/bench.py --sections pretrain --out /tmp/pretrain.json        # on a GPU machine
    python benchmarks/bench.py --sections pretrain --pretrain-batch 4 --pretrain-steps 3 --pretrain-warmup 1
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import numpy as np
import torch
import yaml

VOC_TRAIN_AUG = 10582
STAGES = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])  # in the DAG's order


def best_time(fn, repeats: int, warmup: int = 1) -> float:
    """Smallest wall time of fn() over `repeats` calls, after `warmup` calls, in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def table(rows: list[dict], cols: list[str]) -> str:
    """Rows of dicts -> a markdown table over `cols`."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- machine and GEMM bound
def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    return info


def gemm(repeats: int = 5) -> dict:
    """float32 GEMM FLOP/s: a 2048^3 square product and the shapes of ViT-S/16's linear layers at batch 32."""
    out = {}
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    out["square_2048"] = 2 * n ** 3 / best_time(lambda: a @ b, repeats)
    m = 32 * 197  # tokens in a batch of 32 images at 224 px
    shaped = []
    for k, nn_ in ((384, 1152), (384, 384), (384, 1536), (1536, 384)):  # qkv, proj, fc1, fc2
        x, w = torch.randn(m, k), torch.randn(k, nn_)
        shaped.append(2 * m * k * nn_ / best_time(lambda: x @ w, repeats))
    out["vit_s_linear_shapes"] = float(np.mean(shaped))
    out["bound"] = max(out.values())
    if torch.cuda.is_available():
        a, b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16), torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)

        def mm():
            a @ b
            torch.cuda.synchronize()
        out["cuda_bf16_8192"] = 2 * 8192 ** 3 / best_time(mm, repeats)
    return out


# ---------------------------------------------------------------- features
def model_flops(model: torch.nn.Module, size: int) -> float:
    """Forward FLOPs of one image (torch's flop counter: 2 * M * N * K per matmul, attention included)."""
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.backbone import factory as bb
    x = torch.randn(1, 3, size, size)
    with FlopCounterMode(display=False) as fc:
        bb.dense_features(model, x)
    return float(fc.get_total_flops())


def features(gemm_bound: float, batches: list[int], seconds: float) -> list[dict]:
    """Images/s of vit_small_patch16_224 dense features at 224 and 448 px per batch size, vs the GEMM bound."""
    import timm

    from pipeline.backbone import factory as bb
    rows = []
    for size in (224, 448):
        model = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0,
                                  dynamic_img_size=True, img_size=size).eval()
        flops = model_flops(model, size)
        bound = gemm_bound / flops
        for bsz in batches:
            x = torch.randn(bsz, 3, size, size)
            per_call = best_time(lambda: bb.dense_features(model, x), repeats=1)
            reps = max(2, int(seconds / max(per_call, 1e-3)))
            t = best_time(lambda: bb.dense_features(model, x), repeats=min(reps, 10), warmup=0)
            ips = bsz / t
            rows.append({"model": "vit_small_patch16_224", "px": size, "batch": bsz, "GFLOP/img": flops / 1e9,
                         "img/s": ips, "bound img/s": bound, "% of bound": 100 * ips / bound, "device": "cpu fp32"})
        if torch.cuda.is_available():
            m = model.cuda()
            for bsz in (64, 256):
                x = torch.randn(bsz, 3, size, size, device="cuda")

                def run():
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        bb.dense_features(m, x)
                    torch.cuda.synchronize()
                t = best_time(run, repeats=5)
                rows.append({"model": "vit_small_patch16_224", "px": size, "batch": bsz, "GFLOP/img": flops / 1e9,
                             "img/s": bsz / t, "device": "cuda bf16"})
    return rows


# ---------------------------------------------------------------- proposals
def proposals_cost(images: int) -> list[dict]:
    """Per-image seconds of the ncut steps at 196 (224 px / 16) and 784 (448 px / 16) patches, on features of a
    random ViT-S over generated scenes (random features would make the eigenproblem unrealistically easy)."""
    import timm

    from pipeline.backbone import factory as bb
    from pipeline.config import load_params
    from pipeline.data import synth
    from pipeline.method import proposals
    cfg = load_params(ROOT / "params.yaml").proposals
    rows = []
    for size in (224, 448):
        model = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0,
                                  dynamic_img_size=True, img_size=size).eval()
        scenes = synth.generate_dataset(0, images, size, 3)
        imgs = np.stack([s[1] for s in scenes])
        _, keys = bb.dense_features(model, bb.normalize(bb.to_tensor(imgs)))
        keys = keys.numpy()
        h = keys.shape[1]
        t_aff = t_eig = t_all = t_px = 0.0
        for img, k in zip(imgs, keys):
            t0 = time.perf_counter()
            sim = proposals.affinity(k)
            t1 = time.perf_counter()
            proposals.ncut_vectors(sim, cfg.tau, cfg.eps, cfg.num_eigs)
            t2 = time.perf_counter()
            props = proposals.patch_proposals(k, cfg)
            t3 = time.perf_counter()
            proposals.pixel_masks(img, props, size // h, cfg)
            t4 = time.perf_counter()
            t_aff += t1 - t0
            t_eig += t2 - t1
            t_all += t3 - t2
            t_px += t4 - t3
        n = len(imgs)
        rows.append({"px": size, "patches": h * h, "affinity ms": 1e3 * t_aff / n, "eigen ms": 1e3 * t_eig / n,
                     "patch_proposals ms": 1e3 * t_all / n, "grabcut ms": 1e3 * t_px / n,
                     "img/s": n / (t_all + t_px)})
    return rows


# ---------------------------------------------------------------- stages, each in its own process
# Runs a stage script and records its own peak resident memory. VmHWM of /proc/self/status is the peak of this
# process image only; ru_maxrss would also count the benchmark process it was forked from.
LAUNCH = """
import atexit, runpy, sys
from pathlib import Path
stage, peak_file = sys.argv[1], sys.argv[2]
def peak():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            Path(peak_file).write_text(str(int(line.split()[1]) * 1024))
atexit.register(peak)
sys.argv = [stage]
runpy.run_module(stage, run_name="__main__", alter_sys=True)  # `python -c`: the project in cwd comes first
"""


def run_child(module: str, cwd: Path) -> tuple[float, int, int]:
    """Run a stage module (stages.<name>) in its own process; -> (wall seconds, its peak RSS in bytes, exit code).
    stdout/err go to cwd/log.txt."""
    peak_file = cwd / "peak_rss.txt"
    peak_file.unlink(missing_ok=True)
    with open(cwd / "log.txt", "ab") as log:
        t = time.perf_counter()
        rc = subprocess.call([sys.executable, "-c", LAUNCH, module, str(peak_file)], cwd=cwd, stdout=log, stderr=log)
        wall = time.perf_counter() - t
    return wall, int(peak_file.read_text()) if peak_file.exists() else 0, rc


def vm_hwm() -> int:
    """Peak resident memory of this process image in bytes (Linux /proc/self/status VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def train_timing(folder: Path) -> dict[str, float]:
    """The train stage's timings.json in its output folder -> {'fit s': F, 'predict s': P} ({} when there is
    none): what of its wall time grows with epochs and what with images."""
    path = folder / "timings.json"
    if not path.is_file():
        return {}
    t = json.loads(path.read_text())
    return {"fit s": float(t["fit_s"]), "predict s": float(t["predict_s"])}


def stages(sizes: list[int], train_epochs: int, keep: bool, sets: list[str] | None = None,
           eval_share: float | None = None, save=None) -> list[dict]:
    """Every stage script on the default params with data.synth_images = N (and `sets`, dotted key=value changes;
    `eval_share`: data.synth_eval_images = share * N), in a scratch copy of the project. `save(rows)` is called after
    every stage, so a run stopped at a time limit keeps what finished."""
    from pipeline.config import apply_sets
    rows = []
    for n in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"unseg_bench_{n}_"))
        for item in ("pipeline", "stages", "models"):
            shutil.copytree(ROOT / item, work / item)
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["data"]["synth_images"] = n
        params["train"]["epochs"] = train_epochs
        if eval_share is not None:
            params["data"]["synth_eval_images"] = max(1, round(eval_share * n))
        params = apply_sets(params, sets or [])
        (work / "params.yaml").write_text(yaml.safe_dump(params))
        for stage in STAGES:
            wall, rss, rc = run_child(f"stages.{stage}", work)
            if rc != 0:
                raise RuntimeError(f"stage {stage} failed at N={n}; see {work / 'log.txt'}")
            out = work / "data" / next(p.name for p in (work / "data").iterdir() if p.name.endswith(stage))
            rows.append({"images": n, "eval images": params["data"]["synth_eval_images"], "stage": stage,
                         "wall s": wall, "img/s": n / wall,
                         "peak RSS MB": rss / 2 ** 20, "written MB": dir_bytes(out) / 2 ** 20,
                         **(train_timing(out) if stage == "train" else {})})
            print(f"  N={n} {stage}: {wall:.1f} s, {rss / 2 ** 20:.0f} MB", flush=True)
            if save:
                save(rows)
        if not keep:
            shutil.rmtree(work)
    return rows


def per_image(rows: list[dict]) -> list[dict]:
    """Stage rows of several sizes (a size run more than once: its runs averaged) -> one row per stage and a
    "whole DAG" row: milliseconds per training image at each size, and the largest size's over the smallest's."""
    sizes = sorted({r["images"] for r in rows})
    stages_seen = list(dict.fromkeys(r["stage"] for r in rows))

    def ms(stage: str, n: int) -> float:  # mean over the runs of this stage at this size
        walls = [r["wall s"] for r in rows if r["images"] == n and r["stage"] == stage]
        return sum(walls) / len(walls) / n * 1e3 if walls else float("nan")

    out = []
    for stage in stages_seen + [None]:
        row = {"stage": stage or "whole DAG"}
        row.update({f"ms/img at {n}": ms(stage, n) if stage else sum(ms(st, n) for st in stages_seen)
                    for n in sizes})
        row[f"{sizes[-1]} / {sizes[0]}"] = row[f"ms/img at {sizes[-1]}"] / row[f"ms/img at {sizes[0]}"]
        out.append(row)
    return out


def print_per_image(rows: list[dict]) -> None:
    table_rows = per_image(rows)
    print(table(table_rows, list(table_rows[0])), flush=True)


# ---------------------------------------------------------------- cluster / filter / merge scaling
def scaling_child(n: int, seed: int = 0) -> dict:
    """Cluster, filter and merge library calls on generated data for n images (16 x 16 patches, 192-d tokens,
    1-3 masks per image), with the default params; -> seconds per step. Runs inside its own process."""
    from pipeline.config import load_params
    from pipeline.method import cluster, filtering, merge
    p = load_params(ROOT / "params.yaml")
    rng = np.random.default_rng(seed)
    h, d, classes = 16, 192, p.cluster.k
    centres = rng.normal(0, 1, (classes + 1, d)).astype(np.float32)
    t = {}
    t0 = time.perf_counter()
    embs, grids, tokens_fg, mask_of_patch, offset = [], [], [], [], 0
    for _ in range(n):
        grid = np.zeros((h, h), np.int64)
        tok = centres[0] + rng.normal(0, 1.5, (h, h, d)).astype(np.float32)
        nm = int(rng.integers(1, 4))
        for m in range(1, nm + 1):
            y, x, s = int(rng.integers(0, h - 4)), int(rng.integers(0, h - 4)), int(rng.integers(3, 8))
            grid[y:y + s, x:x + s] = m
            c = int(rng.integers(1, classes + 1))
            tok[y:y + s, x:x + s] = centres[c] + rng.normal(0, 1.5, (min(s, h - y), min(s, h - x), d))
        present = [m for m in range(1, nm + 1) if (grid == m).any()]
        frac = np.stack([(grid == m).astype(np.float32) for m in present])
        embs.append(cluster.mask_embeddings(tok, frac))
        g = np.zeros_like(grid)
        for i, m in enumerate(present):
            g[grid == m] = offset + i + 1
        offset += len(present)
        grids.append(g)
        tokens_fg.append(tok[g > 0].astype(np.float16))
        mask_of_patch.append(g[g > 0] - 1)
    t["generate"] = time.perf_counter() - t0
    emb = np.concatenate(embs)
    t0 = time.perf_counter()
    labels, _, dist = cluster.cluster_embeddings(emb, p.cluster, p.seed)
    t["cluster"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rel = filtering.reliability(emb, labels, dist, p.filter, p.seed)
    kept = filtering.keep_mask(rel["score"], labels, p.filter.keep)
    t["filter"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    feats = np.concatenate(tokens_fg)
    mop = np.concatenate(mask_of_patch)
    merge.refine(feats, tokens_fg, grids, mop, labels + 1, p.merge, p.seed, p.cluster.backend)
    t["merge"] = time.perf_counter() - t0
    return {"images": n, "masks": int(len(emb)), "fg patches": int(len(feats)), "kept": int(kept.sum()),
            **{f"{k} s": v for k, v in t.items()},
            "peak RSS MB": vm_hwm() / 2 ** 20}


def scaling(sizes: list[int]) -> list[dict]:
    rows = []
    for n in sizes:
        res = subprocess.run([sys.executable, __file__, "--scaling-child", str(n)], capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(res.stderr[-2000:])
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(f"  scaling N={n}: {rows[-1]}", flush=True)
    return rows


# ---------------------------------------------------------------- DINO pretraining steps
def pretrain_steps(batch: int | None, n_local: int, steps: int, warmup: int) -> list[dict]:
    """Seconds per DINO step of ViT-S/16 with crops made each step, per_image vs batched (pretrain.crops).

    The head and schedules are params.yaml's pretrain section; the crops are DINO's standard 2 x 224 global and
    n_local x 96 local ones. Each step: a random batch of the 256 px uint8 source images (on the device) to float,
    the crops, dino.train_step (fp32, as train_dino). Times: the mean over `steps` steps after `warmup` steps,
    the device synchronised around the crops and after the step."""
    import timm

    from pipeline.backbone import dino
    from pipeline.config import load_params, replace
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bs = batch or (64 if dev.type == "cuda" else 8)
    cfg = replace(load_params(ROOT / "params.yaml").pretrain, global_crop_size=224, local_crop_size=96,
                  local_crops=n_local, batch_size=bs)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    source = torch.randint(0, 256, (max(4 * bs, 64), 3, 256, 256), dtype=torch.uint8, generator=gen).to(dev)
    rows = []
    for mode in ("per_image", "batched"):
        torch.manual_seed(0)
        backbone = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, dynamic_img_size=True)
        student, teacher, loss_fn = (m.to(dev) for m in dino.build(backbone, cfg))
        opt = torch.optim.AdamW(dino.decay_groups(student), lr=cfg.lr * bs / 256, weight_decay=cfg.weight_decay)
        glob, local = dino.multicrop_transforms(cfg)
        crop_gen = torch.Generator(device=dev).manual_seed(0)
        crop_s, step_s = [], []
        for i in range(warmup + steps):
            idx = torch.randint(0, len(source), (bs,), generator=gen).to(dev)
            sync()
            t0 = time.perf_counter()
            x = source[idx].float() / 255.0
            crops = (dino.make_batched_crops(x, cfg, crop_gen) if mode == "batched"
                     else dino.make_crops(x, glob, local, cfg.local_crops))
            sync()
            t1 = time.perf_counter()
            dino.train_step(student, teacher, loss_fn, opt, crops, cfg.teacher_temp, cfg.momentum_teacher,
                            cfg.clip_grad, False)  # returns float(loss): synchronises
            sync()
            t2 = time.perf_counter()
            if i >= warmup:
                crop_s.append(t1 - t0)
                step_s.append(t2 - t0)
        rows.append({"crops": mode, "device": f"{dev.type} fp32", "batch": bs, "locals": n_local,
                     "crop s": float(np.mean(crop_s)), "step s": float(np.mean(step_s)),
                     "img/s": bs / float(np.mean(step_s)), "crop share %": 100 * sum(crop_s) / sum(step_s)})
        print(f"  pretrain {mode}: {rows[-1]}", flush=True)
        del student, teacher, loss_fn, opt
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------- projection
def project(results: dict, gpu_tflops: float, voc_images: int = VOC_TRAIN_AUG) -> list[dict]:
    """Whole-pipeline time on VOC train_aug at 224 px with ViT-S/16, from the measured per-image costs.

    features: CPU img/s measured here (GPU: the bf16 rate measured when a GPU was present, else unknown);
    proposals: CPU per-image ncut + GrabCut at 196 patches (the stage runs on the CPU); cluster/filter/merge: the
    largest scaling run, scaled linearly; train: per-image per-epoch cost of the ViT-S/16 forward+backward taken
    as 3x the forward, 12 epochs."""
    rows = []
    feat = [r for r in results.get("features", []) if r["px"] == 224 and r["device"] == "cpu fp32"]
    flops = feat[0]["GFLOP/img"] * 1e9 if feat else None
    gpu = [r for r in results.get("features", []) if r["px"] == 224 and r["device"] == "cuda bf16"]
    prop = [r for r in results.get("proposals", []) if r["px"] == 224]
    scal = results.get("scaling", [])
    if feat:
        cpu_ips = max(r["img/s"] for r in feat)
        rows.append({"stage": "features", "device": "cpu", "hours": voc_images / cpu_ips / 3600})
        rows.append({"stage": "train (12 epochs)", "device": "cpu", "hours": 12 * 3 * voc_images / cpu_ips / 3600})
    if gpu:
        g = max(r["img/s"] for r in gpu)
        rows.append({"stage": "features", "device": "gpu bf16 (measured)", "hours": voc_images / g / 3600})
        rows.append({"stage": "train (12 epochs)", "device": "gpu bf16 (measured)", "hours": 12 * 3 * voc_images / g / 3600})
    elif flops:  # no GPU here: the model's counted FLOPs at an assumed sustained GPU rate (--gpu-tflops)
        g = gpu_tflops * 1e12 / flops
        dev = f"gpu, assumed {gpu_tflops:g} TFLOP/s"
        rows.append({"stage": "features", "device": dev, "hours": voc_images / g / 3600})
        rows.append({"stage": "train (12 epochs)", "device": dev, "hours": 12 * 3 * voc_images / g / 3600})
    if prop:
        rows.append({"stage": "proposals (ncut + grabcut)", "device": "cpu", "hours": voc_images / prop[0]["img/s"] / 3600})
    if scal:
        big = scal[-1]
        per = (big["cluster s"] + big["filter s"] + big["merge s"]) / big["images"]
        rows.append({"stage": "cluster + filter + merge", "device": "cpu", "hours": voc_images * per / 3600})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", nargs="+", default=["gemm", "features", "proposals", "stages", "scaling", "project"])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32], help="feature batch sizes")
    ap.add_argument("--seconds", type=float, default=3.0, help="time spent per feature measurement")
    ap.add_argument("--proposal-images", type=int, default=12)
    ap.add_argument("--stage-sizes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--train-epochs", type=int, default=1, help="train stage epochs in the stage runs")
    ap.add_argument("--scaling-sizes", type=int, nargs="+", default=[1000, 3000, 10000])
    ap.add_argument("--gpu-tflops", type=float, default=200.0, help="sustained bf16 TFLOP/s assumed for the GPU "
                    "projection when no GPU is present (an H100 peaks near 990 dense; ViTs sustain a fraction)")
    ap.add_argument("--pretrain-batch", type=int, default=None, help="pretrain: images per DINO step "
                    "(default 64 on CUDA, 8 on the CPU)")
    ap.add_argument("--pretrain-locals", type=int, default=6, help="pretrain: 96 px local crops per image (DINO: 6 "
                    "to 10)")
    ap.add_argument("--pretrain-steps", type=int, default=10, help="pretrain: measured steps per crops mode")
    ap.add_argument("--pretrain-warmup", type=int, default=3, help="pretrain: unmeasured steps first")
    ap.add_argument("--keep", action="store_true", help="keep the stage runs' scratch folders")
    ap.add_argument("--stage-set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="stages: params changes of the stage runs, e.g. backbone.name=vit_small_patch16_224 "
                         "backbone.source=random 'backbone.overrides={}' data.image_size=224")
    ap.add_argument("--stage-eval-share", type=float, help="stages: data.synth_eval_images = this share of N")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results.json"))
    ap.add_argument("--scaling-child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--per-image", metavar="JSON", help="print the stages section's time per image at each size "
                    "from a results file written by --sections stages, and stop")
    args = ap.parse_args()
    if args.per_image:
        print_per_image(json.loads(Path(args.per_image).read_text())["stages"])
        return
    if args.scaling_child:
        print(json.dumps(scaling_child(args.scaling_child)))
        return
    t_start = time.perf_counter()
    out = Path(args.out)
    # Sections not run this time keep their latest results from --out; "dates" says when each was measured.
    results: dict = json.loads(out.read_text()) if out.is_file() else {}
    results["machine"] = machine()
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results.setdefault("dates", {}).update({s: now for s in args.sections})
    print(json.dumps(results["machine"]))
    if "gemm" in args.sections or "features" in args.sections:
        results["gemm"] = gemm()
        print("GEMM GFLOP/s: " + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in results["gemm"].items()), flush=True)
    if "features" in args.sections:
        results["features"] = features(results["gemm"]["bound"], args.batches, args.seconds)
        print(table(results["features"], ["model", "px", "batch", "device", "GFLOP/img", "img/s", "bound img/s", "% of bound"]), flush=True)
    if "proposals" in args.sections:
        results["proposals"] = proposals_cost(args.proposal_images)
        print(table(results["proposals"], ["px", "patches", "affinity ms", "eigen ms", "patch_proposals ms", "grabcut ms", "img/s"]), flush=True)
    if "stages" in args.sections:
        def save(rows: list[dict]) -> None:  # after each stage: a run stopped at a time limit keeps what finished
            results["stages"] = rows
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1))
        results["stages"] = stages(args.stage_sizes, args.train_epochs, args.keep, args.stage_set,
                                   args.stage_eval_share, save)
        print(table(results["stages"], ["images", "eval images", "stage", "wall s", "img/s", "peak RSS MB",
                                        "written MB"]), flush=True)
        if len({r["images"] for r in results["stages"]}) > 1:
            print_per_image(results["stages"])
    if "scaling" in args.sections:
        results["scaling"] = scaling(args.scaling_sizes)
        print(table(results["scaling"], ["images", "masks", "fg patches", "cluster s", "filter s", "merge s", "peak RSS MB"]), flush=True)
    if "pretrain" in args.sections:
        results["pretrain"] = pretrain_steps(args.pretrain_batch, args.pretrain_locals, args.pretrain_steps,
                                             args.pretrain_warmup)
        print(table(results["pretrain"], ["crops", "device", "batch", "locals", "crop s", "step s", "img/s",
                                          "crop share %"]), flush=True)
    if "project" in args.sections:
        results["project"] = project(results, args.gpu_tflops)
        print(table(results["project"], ["stage", "device", "hours"]), flush=True)
    results["total_seconds"] = time.perf_counter() - t_start
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"total {results['total_seconds']:.0f} s -> {out}")


if __name__ == "__main__":
    main()
