"""The path users take, at its real size, on the CPU: every stage of the DAG with ViT-S/16 in the hub layout (random
weights in a local Hugging Face cache, read offline as the hub path's test does), data.image_size 448,
merge.parts 150 and cluster.k 20, on generated images and on Weizmann Horse photos. Not a test: it writes JSON
(each stage's wall time, time per image and peak RSS) and prints the table that docs/scale.md projects from.

    python -m benchmarks.project_scale                               # -> benchmarks/results_cpu_448.json
    python -m benchmarks.project_scale --synth 0 --horse 24 --horse-root ../shared/data/weizmann_horse
    python -m benchmarks.project_scale --plan                        # docs/scale.md's tables from that JSON

Each stage runs as its own process in a scratch copy of the project (benchmarks/bench.py's `stages`), one train
epoch. Per image: a stage's wall time over the training images (evaluate: over training + evaluation images).
The process start (Python, torch and the backbone) is inside every row: at a few dozen images it is a visible share
of the cheap stages, which the per-image figures therefore overstate.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import bench

ROOT = Path(__file__).resolve().parents[1]
HUB_NAME = "vit_small_patch16_224.dino"
REVISION = "0123456789abcdef0123456789abcdef01234567"  # any 40 hex digits: refs/main names the snapshot
RECIPE = [f"backbone.name={HUB_NAME}", "backbone.source=hub", "backbone.overrides={}", "data.image_size=448",
          "merge.parts=150", "cluster.k=20", "workers=0"]


def fill_hf_cache(home: Path) -> None:
    """A Hugging Face cache under `home` (an HF_HOME) as the hub leaves it after downloading timm/<HUB_NAME>, with a
    state dict of vit_small_patch16_224 of random values (seed 0): the cost of the real weights, not their masks."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in
             timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0).state_dict().items()}
    repo = home / "hub" / f"models--timm--{HUB_NAME}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    (repo / "snapshots" / REVISION).mkdir(parents=True)
    save_file(state, str(repo / "snapshots" / REVISION / "model.safetensors"))


def per_image_rows(rows: list[dict], dataset: str) -> list[dict]:
    """bench.stages rows -> {dataset, stage, images, wall s, s/img, peak RSS MB, written MB} (evaluate: per image
    of both splits)."""
    out = []
    for r in rows:
        n = r["images"] + (r["eval images"] if r["stage"] == "evaluate" else 0)
        out.append({"dataset": dataset, "stage": r["stage"], "images": n, "wall s": round(r["wall s"], 1),
                    "s/img": round(r["wall s"] / n, 3), "peak RSS MB": round(r["peak RSS MB"]),
                    "written MB": round(r["written MB"], 1)})
    return out


# ---------------------------------------------------------------- the plan: docs/scale.md's tables from the rows
DATASETS = {"COCO train2017": 118_287, "1M images": 1_000_000, "JFT-300M": 300_000_000}
SETUPS = {"1 node": 1, "4 nodes": 4}
NODE_GPUS, NODE_CORES = 8, 96  # assumed: an 8-GPU node with 96 CPU cores (12 per GPU)
MEASURED_CORES = 2  # the CPU of the measured rows (shared with other work: core-seconds are an upper bound)
GPU_FLOPS = 0.3 * 989e12  # assumed sustained: 30% of an H100 SXM's dense bf16 peak
TRAIN_GPU_IMG_S = 365 / 4  # measured 365 img/s per H200 at 224 px, step-bound (docs/training.md); / 4: 448 px
SHARDED = {"proposals", "pseudolabels", "filter", "evaluate"}  # ranks on every node, a pool in each
ONE_NODE = {"prepare", "saliency"}  # one process, a pool over one node's cores
FIXED = {"pretrain", "report"}  # no per-image work at this recipe (hub weights copied; a fixed set of pictures)
EPOCHS = 45  # params.yaml's train.epochs
# cluster and merge at a few dozen images are mostly fixed work (k-means starts, gallery, part graph); their per-image
# cost comes from the default recipe's 10,000-image run instead (128 px, patch 8: 16 x 16 patches of 192 dims),
# scaled to this recipe by the dims (384 / 192) and, for merge, also by the patches ((448 / 16)^2 / 16^2)
FROM_10K = {"cluster": 384 / 192, "merge": 384 / 192 * (448 / 16) ** 2 / 16 ** 2}
SCALING_10K = ROOT / "benchmarks" / "results_cpu_scaling.json"


def project_stage(stage: str, s_per_img: float, n: int, nodes: int, gpu_s_per_img: float, decode_s: float) -> float:
    """Projected wall seconds of one stage on `nodes` nodes for n images, from its measured seconds per image on
    MEASURED_CORES cores, process start taken out (`per_image_cost`). features: the GPU forward (gpu_s_per_img) or
    the PNG decode on the node's cores, whichever is slower; train: EPOCHS x n images at TRAIN_GPU_IMG_S per GPU;
    CPU stages: core-seconds (s_per_img x MEASURED_CORES) over the cores they reach (SHARDED: every node's;
    ONE_NODE: one node's); FIXED: 0; the rest (distill, cluster, merge, whose global pass every rank makes whole)
    at their per-image cost, one process."""
    if stage in FIXED:
        return 0.0
    if stage == "features":
        return n * max(gpu_s_per_img / (NODE_GPUS * nodes), decode_s / (NODE_CORES * nodes))
    if stage == "train":
        return EPOCHS * n / (TRAIN_GPU_IMG_S * NODE_GPUS * nodes)
    core_s = s_per_img * MEASURED_CORES * n
    if stage in SHARDED:
        return core_s / (NODE_CORES * nodes)
    if stage in ONE_NODE:
        return core_s / NODE_CORES
    return s_per_img * n


def decode_seconds(root: Path, size: int = 448, repeats: int = 20) -> float:
    """Seconds to decode one prepared image (a Horse photo resized to `size` on its short side, as PNG) on one core."""
    import io as bytes_io

    from PIL import Image
    photo = Image.open(sorted((root / "images").iterdir())[0]).convert("RGB")
    w, h = photo.size
    buf = bytes_io.BytesIO()
    photo.resize((round(w * size / min(w, h)), round(h * size / min(w, h)))).save(buf, "PNG")
    t = time.perf_counter()
    for _ in range(repeats):
        buf.seek(0)
        Image.open(buf).convert("RGB").load()
    return (time.perf_counter() - t) / repeats


def per_image_cost(rows: list[dict]) -> list[dict]:
    """Stage rows -> the same with "s/img" less the process start (the fastest stage's wall time: distill passing
    the proposals on, almost all start) over the images, and "written MB" of train less pretrain's (the backbone
    inside the saved model, a fixed size); FIXED stages' rows keep 0 per image."""
    start = min(r["wall s"] for r in rows)
    fixed_mb = next((r["written MB"] for r in rows if r["stage"] == "pretrain"), 0.0)
    out = []
    for r in rows:
        per = 0.0 if r["stage"] in FIXED else max(r["wall s"] - start, 0.0) / r["images"]
        mb = 0.0 if r["stage"] in FIXED else r["written MB"] - (fixed_mb if r["stage"] == "train" else 0.0)
        out.append({**r, "s/img": per, "written MB": mb})
    return out


def plan(result: dict, horse_root: Path) -> dict:
    """The measured rows of one run (the Horse photos: natural images, as COCO and JFT) -> the projected tables:
    hours per stage for each dataset and setup ("s/img": the cost projected from, `per_image_cost`; cluster and
    merge from FROM_10K), storage written per image and in all, and each stage's measured peak RSS."""
    import timm
    rows = per_image_cost(result["runs"]["weizmann_horse"])
    ten_k = {r["stage"]: r["wall s"] / r["images"] for r in json.loads(SCALING_10K.read_text())["stages"]
             if r["images"] == 10_000}
    rows = [{**r, "s/img": ten_k[r["stage"]] * FROM_10K[r["stage"]]} if r["stage"] in FROM_10K else r for r in rows]
    model = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, dynamic_img_size=True)
    gpu_s = bench.model_flops(model.eval(), 448) / GPU_FLOPS
    decode_s = decode_seconds(horse_root)
    hours = []
    for r in rows:
        row = {"stage": r["stage"], "s/img": r["s/img"]}
        for name, n in DATASETS.items():
            for setup, nodes in SETUPS.items():
                row[f"{name}, {setup} (h)"] = project_stage(r["stage"], r["s/img"], n, nodes, gpu_s, decode_s) / 3600
        hours.append(row)
    total = {"stage": "total", "s/img": sum(r["s/img"] for r in rows)}
    total.update({k: sum(h[k] for h in hours) for k in hours[0] if k.endswith("(h)")})
    storage = [{"stage": r["stage"], "MB/img": r["written MB"] / r["images"],
                **{f"{name} (TB)": r["written MB"] / r["images"] * n / 1e6 for name, n in DATASETS.items()}}
               for r in rows]
    memory = [{"stage": r["stage"], "peak RSS MB": r["peak RSS MB"]} for r in result["runs"]["weizmann_horse"]]
    return {"gpu forward s/img (projected)": gpu_s, "png decode s/img (measured, one core)": decode_s,
            "hours": hours + [total], "storage": storage, "memory": memory}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synth", type=int, default=24, help="generated training images (+ a quarter held out; 0 = "
                    "none); cluster.k 20 needs 20 masks: 12 images gave 15")
    ap.add_argument("--horse", type=int, default=24, help="Weizmann Horse training photos (0 = none)")
    ap.add_argument("--horse-eval", type=int, default=6, help="Weizmann Horse held-out photos")
    ap.add_argument("--horse-root", type=Path, default=ROOT.parent / "shared" / "data" / "weizmann_horse")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_cpu_448.json")
    ap.add_argument("--plan", action="store_true", help="print docs/scale.md's projections from --out, run nothing")
    args = ap.parse_args()
    if args.plan:
        tables = plan(json.loads(args.out.read_text()), args.horse_root)
        print(f"ViT-S/16 forward at 448 x 448: {tables['gpu forward s/img (projected)'] * GPU_FLOPS / 1e9:.1f} GFLOP, "
              f"on the GPU (projected): {tables['gpu forward s/img (projected)'] * 1e3:.3f} ms/img; "
              f"PNG decode (measured, one core): {tables['png decode s/img (measured, one core)'] * 1e3:.1f} ms/img")
        for key in ("hours", "storage", "memory"):
            print(bench.table(tables[key], list(tables[key][0])))
        return
    home = Path(tempfile.mkdtemp(prefix="unseg_hf_"))
    fill_hf_cache(home)
    os.environ.update(HF_HUB_OFFLINE="1", HF_HOME=str(home))  # read when huggingface_hub is imported: every stage
    recipe = RECIPE + [f"backbone.hf_cache={home}"]
    runs = {"generated": (args.synth, recipe + ["data.synth_eval_images=" + str(max(1, args.synth // 4))])}
    if not args.synth:
        del runs["generated"]
    if args.horse:
        runs["weizmann_horse"] = (args.horse, recipe + [
            "data.name=folder", f"data.root={args.horse_root.resolve()}", "data.num_classes=2",
            "data.eval_fraction=0.2", f"data.max_images={args.horse}", f"data.max_eval_images={args.horse_eval}",
            f"data.synth_eval_images={args.horse_eval}"])  # read by bench.stages as the rows' evaluation count
    # A dataset not run this time (--horse 0, --synth 0) keeps its rows and date from --out, as bench.py does.
    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result.update(machine=bench.machine(), recipe=RECIPE, **{"train epochs": 1})
    for key in ("runs", "dates", "failed"):
        result.setdefault(key, {})
    for dataset in runs:
        result["failed"].pop(dataset, None)
    for dataset, (n, sets) in runs.items():
        print(f"{dataset}: {n} training images", flush=True)
        result["dates"][dataset] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

        def save(rows: list[dict], dataset: str = dataset) -> None:  # after each stage: what finished is kept
            result["runs"][dataset] = per_image_rows(rows, dataset)
            args.out.write_text(json.dumps(result, indent=1))
        try:
            bench.stages([n], 1, False, sets, None, save)
        except RuntimeError as e:  # a stage failed: the rows before it are kept, the reason recorded
            result["failed"][dataset] = str(e)
            args.out.write_text(json.dumps(result, indent=1))
            print(e, flush=True)
    rows = [r for rs in result["runs"].values() for r in rs]
    print(bench.table(rows, list(rows[0])))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
