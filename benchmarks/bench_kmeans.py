"""K-means fit time of the two backends of pipeline/method/kmeans.py (cluster.backend sklearn | faiss) at the
scale of a million mask or patch embeddings. Not a test: it writes JSON and prints a table.

    python -m benchmarks.bench_kmeans                        # 1M x 384 float32, k 20 -> results_kmeans_cpu.json
    python -m benchmarks.bench_kmeans --rows 100000 --out /tmp/k.json

The rows: `--rows` unit vectors of 384 dimensions (ViT-S's width) around k random unit centres, with Gaussian noise
(std 0.05 per dimension, about as far from their centre as from each other: overlapping clusters, so Lloyd needs tens
of iterations). Each backend fits on all the rows and on a `TokenSample` of cluster.fit_sample's default (100,000),
with the same n_init and max_iter; `assign` then labels every row. Inertia (mean squared distance to the nearest
centre, over all rows) shows the fits are of the same quality.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks.bench import machine, table
from pipeline.method import kmeans
from pipeline.method.vectors import unit_rows

ROOT = Path(__file__).resolve().parents[1]


def blobs(rows: int, dim: int, k: int, noise: float, seed: int) -> np.ndarray:
    """(rows, dim) float32 unit vectors around k random unit centres, Gaussian noise of std `noise`, seeded."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.standard_normal((k, dim)).astype(np.float32))
    x = centres[rng.integers(0, k, rows)]
    x += noise * rng.standard_normal((rows, dim), dtype=np.float32)
    return unit_rows(x)


def inertia(x: np.ndarray, centres: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared Euclidean distance of each row to its centre, in chunks."""
    total = 0.0
    for i in range(0, len(x), kmeans.ASSIGN_CHUNK):
        d = x[i:i + kmeans.ASSIGN_CHUNK] - centres[labels[i:i + kmeans.ASSIGN_CHUNK]]
        total += float(np.einsum("nd,nd->", d, d))
    return total / len(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--n-init", type=int, default=1, help="starts per fit: the time grows with it (the cluster "
                    "stage's cluster.n_init is 10, merge's parts 3 or 5)")
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_kmeans_cpu.json")
    args = ap.parse_args()
    sample_size = yaml.safe_load((ROOT / "params.yaml").read_text())["cluster"]["fit_sample"]
    x = blobs(args.rows, args.dim, args.k, 0.05, 0)
    sample = kmeans.sample_rows(x, sample_size, 0)
    rows = []
    for backend in ("faiss", "sklearn"):
        for name, fit_on in (("all rows", x), (f"sample of {len(sample):,}", sample)):
            t = time.perf_counter()
            centres = kmeans.fit(fit_on, args.k, args.n_init, args.max_iter, 0, backend)
            fit_s = time.perf_counter() - t
            t = time.perf_counter()
            labels = kmeans.assign(x, centres)
            assign_s = time.perf_counter() - t
            rows.append({"backend": backend, "fitted on": name, "fit rows": len(fit_on), "fit s": round(fit_s, 2),
                         "assign s": round(assign_s, 2), "inertia": round(inertia(x, centres, labels), 6)})
            print(table(rows[-1:], list(rows[-1])), flush=True)
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "rows": args.rows, "dim": args.dim, "k": args.k, "n_init": args.n_init, "max_iter": args.max_iter,
              "noise": 0.05, "fits": rows}
    args.out.write_text(json.dumps(result, indent=1))
    print(table(rows, list(rows[0])))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
