"""PASCAL VOC train_aug and COCO train2017 end to end on one GPU machine, projected from a measured whole-DAG run
(`benchmarks/gpu_dag.sh`, committed as benchmarks/results_gpu_h200.json). Not a test: it prints a table.

    python -m benchmarks.project_gpu                                   # the committed H200 run
    python -m benchmarks.project_gpu --run OUT/results.json --epochs 12

Each stage's measured seconds per image (its wall time over the run's training images; evaluate, which scores both
splits, over training + evaluation images) times the dataset's images; pretrain is a fixed cost (the run loads
random weights, no training), the train stage times `--epochs` over the run's epochs (an upper bound: the
measured time also holds the process start and predicting both splits, which do not grow with epochs; a run whose
train row has the stage's own timing, fit and predictions, as bench.py reads them from the stage's timings.json, is projected in those
parts instead: fixed start, fitting x images x epochs, predicting x images of both splits). Linear in
the number of images is what the streaming stages are built for; the 1,000-image run is the only size measured on
the GPU so far, so the projection assumes it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {"VOC train_aug": (10_582, 1_449), "COCO train2017": (118_287, 5_000)}  # (training, evaluation images)


def project(stages: list[dict], train_images: int, eval_images: int, epochs: int, run_epochs: int) -> dict[str, float]:
    """Measured stage rows ({'stage', 'wall s', 'images', 'eval images'}) -> {stage: projected seconds}.

    A train row with the stage's own timing ('fit s', 'predict s': `bench.train_timing`) is projected in parts:
    the rest of its wall time (process start, model, writing) fixed, fitting times images and epochs, predicting
    times the images of both splits. Without them the whole train time is scaled with images and epochs (an upper
    bound)."""
    out = {}
    for r in stages:
        both = (train_images + eval_images) / (r["images"] + r["eval images"])
        if r["stage"] == "train" and "fit s" in r:
            fixed = r["wall s"] - r["fit s"] - r["predict s"]
            out["train"] = fixed + r["fit s"] * train_images / r["images"] * epochs / run_epochs + r["predict s"] * both
            continue
        scale = both if r["stage"] == "evaluate" else 1.0 if r["stage"] == "pretrain" else train_images / r["images"]
        out[r["stage"]] = r["wall s"] * scale * (epochs / run_epochs if r["stage"] == "train" else 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=ROOT / "benchmarks" / "results_gpu_h200.json")
    ap.add_argument("--epochs", type=int, default=12,
                    help="train epochs projected (12: the fine-tuned recipe of the committed H200 run; params.yaml's "
                         "default is 45 epochs on a frozen backbone since issue 20)")
    ap.add_argument("--run-epochs", type=int, default=1, help="train epochs of the measured run (gpu_dag.sh: 1)")
    args = ap.parse_args()
    run = json.loads(args.run.read_text())
    stages = run["stages"]
    print(f"measured: {run.get('machine', '?')}, {stages[0]['images']} images, {args.run_epochs} train epoch(s)\n")
    cols = {name: project(stages, n, m, args.epochs, args.run_epochs) for name, (n, m) in DATASETS.items()}
    print("| stage | measured ms/image | " + " | ".join(f"{name} (min)" for name in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for r in stages:
        per = r["wall s"] / (r["images"] + (r["eval images"] if r["stage"] == "evaluate" else 0)) * 1000
        print(f"| {r['stage']} | {per:.0f} | " + " | ".join(f"{c[r['stage']] / 60:.1f}" for c in cols.values()) + " |")
    print("| **total** | | " + " | ".join(f"**{sum(c.values()) / 3600:.2f} h**" for c in cols.values()) + " |")
    for name, c in cols.items():
        top = sorted(c, key=c.get, reverse=True)[:3]
        print(f"\n{name}: the largest shares are " + ", ".join(f"{s} {c[s] / sum(c.values()):.0%}" for s in top))


if __name__ == "__main__":
    main()
