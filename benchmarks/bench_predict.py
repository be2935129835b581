"""Prediction throughput of `unseg predict` on a bundle: images per second and peak memory (not a test).

    python benchmarks/bench_predict.py                          # a tiny random bundle, 64 photos of 480x640
    python benchmarks/bench_predict.py --count 1000 --size 128x128,360x480 --out benchmarks/results_predict.json
    python benchmarks/bench_predict.py --model data/11_bundle --count 1000 --size 480x640 --device cuda
    python benchmarks/bench_predict.py --count 4 --size 4000x6000 # large photos: the upsampled logits' peak
    python benchmarks/bench_predict.py --table benchmarks/results_predict.json   # a saved run's table

Each size is its own process (`python -m pipeline predict`; wait4's max RSS of that child is its peak resident
memory alone), on `count` generated JPEGs of that size in a temporary folder. Without --model it measures a bundle
of params.yaml's train and backbone architecture with random weights (the speed does not depend on them). --out
writes the rows with the machine (CPU, cores, OMP_NUM_THREADS) as JSON, the source of docs/benchmarks.md's table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def make_photos(folder: Path, count: int, height: int, width: int) -> None:
    """`count` smooth random JPEGs of height x width -> folder/photo_<i>.jpg."""
    rng = np.random.default_rng(0)
    for i in range(count):
        small = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)
        Image.fromarray(small).resize((width, height), Image.BILINEAR).save(folder / f"photo_{i:05d}.jpg", quality=90)


def random_bundle(folder: Path, classes: int) -> None:
    """A bundle of params.yaml's architecture (train and backbone sections, data.image_size), random weights."""
    from pipeline.config import load_params
    from pipeline.train import bundle

    p = load_params(ROOT / "params.yaml")
    cfg = bundle.run_config(p, classes, p.data.image_size)
    bundle.write(folder, bundle.build(cfg), cfg)


def run_predict(model: Path, images: Path, out: Path, extra: list[str]) -> tuple[float, int]:
    """`python -m pipeline predict` in a child process -> (wall seconds, that child's peak RSS in bytes)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    tick = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "pipeline", "predict", str(model), str(images), str(out),
                              "--quiet", *extra], env=env)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - tick
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, child.args)
    return seconds, usage.ru_maxrss * 1024


def machine() -> dict:
    """The CPU's model name, the cores, OMP_NUM_THREADS and the versions the numbers belong to."""
    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "torch": torch.__version__, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


HEADER = "| images | size | device | crf | wall s | images/s | peak RSS MB |\n|---|---|---|---|---|---|---|"


def table_row(r: dict) -> str:
    """One measured row -> its line of the Markdown table under HEADER."""
    return (f"| {r['images']} | {r['size']} | {r['device']} | {'yes' if r['crf'] else 'no'} | {r['wall s']:.1f} | "
            f"{r['images/s']:.2f} | {r['peak RSS MB']:.0f} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="", help="a bundle folder (default: params.yaml's architecture, random)")
    ap.add_argument("--count", type=int, default=64, help="how many photos per size (default 64)")
    ap.add_argument("--size", default="480x640", help="HxW of the photos, several comma-separated (default 480x640)")
    ap.add_argument("--classes", type=int, default=5, help="classes of the random bundle (default 5)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    ap.add_argument("--batch-size", default="", help="predict's --batch-size (default: the bundle's)")
    ap.add_argument("--crf", action="store_true", help="also the dense CRF")
    ap.add_argument("--out", default="", help="write the rows and the machine as JSON here")
    ap.add_argument("--table", default="", metavar="JSON", help="print the table of a saved --out file, run nothing")
    args = ap.parse_args(argv)
    if args.table:
        saved = json.loads(Path(args.table).read_text())
        print(f"{saved['machine']['cpu']}, {saved['machine']['cores']} cores, OMP_NUM_THREADS="
              f"{saved['machine']['omp_num_threads']}, {saved['date']}\n{HEADER}")
        print("\n".join(table_row(r) for r in saved["rows"]))
        return
    rows = []
    print(HEADER)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = Path(args.model) if args.model else tmp / "model"
        if not args.model:
            random_bundle(model, args.classes)
        extra = ["--device", args.device, "--no-overlays"] + (["--batch-size", args.batch_size] if args.batch_size
                                                             else []) + (["--crf"] if args.crf else [])
        for size in args.size.split(","):
            h, w = map(int, size.split("x"))
            images = tmp / f"images_{h}x{w}"
            images.mkdir()
            make_photos(images, args.count, h, w)
            seconds, peak = run_predict(model, images, tmp / f"out_{h}x{w}", extra)
            rows.append({"images": args.count, "size": f"{h}x{w}", "device": args.device, "crf": args.crf,
                         "wall s": seconds, "images/s": args.count / seconds, "peak RSS MB": peak / 2**20})
            print(table_row(rows[-1]), flush=True)
    if args.out:
        result = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "model": args.model or "params.yaml's architecture, random weights", "rows": rows}
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
