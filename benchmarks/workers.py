"""Proposals over worker processes: the proposals stage's own per-image function (normalized cut + the refinement,
GrabCut by default, writing masks and overlays) run through `parallel.map_images` with 1, 2, ... workers on the
same images, wall time and speed-up against one worker on one thread (what each pool worker gets: BLAS, OpenMP
and OpenCV limited to one thread); one worker on every core (the stage's in-process path, threaded) is a row too. Not a test: it prints a table.

    python -m benchmarks.workers                                  # this workspace's data/ (after `dvc repro`)
    python -m benchmarks.workers --workers 1 2 --set proposals.refine=guided

Reads a project whose prepare and features stages ran (`--project`, default this checkout); writes the masks to a
temporary folder, never into the project. The fork server's start (its imports, once per stage) is timed apart; each
row's time includes its pool's start. Run it on
idle cores: anything else running shares them.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from functools import partial
from pathlib import Path

import cv2
import yaml
from threadpoolctl import threadpool_limits

from pipeline import io, parallel
from pipeline.config import apply_sets, parse_params
from pipeline.method.propose import propose_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--project", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--images", type=int, default=0, help="first N images (0 = all)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="params changes, as dvc exp run -S")
    args = ap.parse_args()
    project = args.project.resolve()
    p = parse_params(apply_sets(yaml.safe_load((project / "params.yaml").read_text()), args.set))
    key = "keys" if p.proposals.affinity == "keys" else "tokens"
    items = [(n, f) for names, feats in io.iter_shards(project / p.paths.features, key) for n, f in zip(names, feats)]
    items = items[:args.images or None]
    print(f"{len(items)} images, proposals.refine {p.proposals.refine}, {parallel.cores()} cores\n")
    t0 = time.perf_counter()
    list(parallel.map_images(abs, range(4), 2))  # starts the fork server (its imports: parallel.PRELOAD) once
    print(f"fork server start (once per stage): {time.perf_counter() - t0:.1f} s\n")
    print("| workers | threads each | seconds | images/s | speed-up |\n|---|---|---|---|---|")
    base, here = None, os.getcwd()
    runs = [(w, t) for w in args.workers for t in ([1, 0] if w == 1 else [1])]
    for w, threads in runs:  # one worker: in this process, on one thread as a pool worker (base) and on every core
        with tempfile.TemporaryDirectory() as tmp:
            for stage in (p.paths.prepare, p.paths.features):
                (Path(tmp) / stage).parent.mkdir(parents=True, exist_ok=True)
                (Path(tmp) / stage).symlink_to(project / stage)
            os.chdir(tmp)  # the stage's relative paths now read the project's inputs and write here
            cv_threads = cv2.getNumThreads()
            try:
                with threadpool_limits(threads or None):
                    cv2.setNumThreads(threads or cv_threads)
                    t0 = time.perf_counter()
                    work = partial(propose_image, out=Path(p.paths.proposals), prepare=p.paths.prepare,
                                   cfg=p.proposals, motion_cfg=p.motion, near={})
                    n = sum(1 for _ in parallel.map_images(work, iter(items), w))
                    dt = time.perf_counter() - t0
            finally:
                cv2.setNumThreads(cv_threads)
                os.chdir(here)
        base = base or dt
        print(f"| {w} | {threads or 'all'} | {dt:.1f} | {n / dt:.1f} | {base / dt:.2f}x |", flush=True)

if __name__ == "__main__":
    main()
