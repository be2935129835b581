"""Benchmark: the whole DAG on the generated video set with ncut, motion, or both ([auto]) as proposal sources.

For each setting, params.yaml gets data.name=synthetic_video and proposals.sources=[...] (plus any -S
overrides) and `dvc repro` runs; prepare, pretrain and features are shared between settings through DVC's
run-cache. After each run it prints the proposals' foreground IoU (union of all proposals vs the ground-truth
foreground, pooled over the set; also per source) and the mIoU that the evaluate stage measured. params.yaml
and dvc.lock are put back as they were at the end.

    python scripts/bench_motion.py                                  # ncut | motion | auto (motion, then ncut)
    python scripts/bench_motion.py --sources ncut,motion            # other settings (earlier source ranks first)
    python scripts/bench_motion.py -S train.epochs=6                # extra overrides for every run
    python scripts/bench_motion.py --measure                        # only measure what data/ holds now
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]

from pipeline import io
from pipeline.config import apply_sets, load_params
from pipeline.evaluate import metrics


def proposal_iou(root: Path) -> dict:
    """Foreground IoU of the proposals in data/04_proposals vs data/01_prepare/gt: all, and per source."""
    p = load_params(root / "params.yaml")
    prep, prop = root / p.paths.prepare, root / p.paths.proposals
    names = io.read_manifest(prep)["names"]
    table = io.read_json(prop / "proposals.json")
    gt = io.read_labels(prep / "gt", names)
    maps = io.read_labels(prop / "masks", names)
    out = {"all": metrics.foreground_iou(maps > 0, gt), "masks_per_image": sum(map(len, table.values())) / len(names)}
    for src in sorted({m["source"] for v in table.values() for m in v}):
        fg = np.stack([np.isin(m, [r["id"] for r in table[n] if r["source"] == src])
                       for n, m in zip(names, maps)])
        out[src] = metrics.foreground_iou(fg, gt)
    return out


def set_params(path: Path, original: str, sources: list[str], overrides: list[str]) -> None:
    raw = yaml.safe_load(original)
    raw["data"]["name"] = "synthetic_video"
    raw["proposals"]["sources"] = sources
    path.write_text(yaml.safe_dump(apply_sets(raw, overrides), sort_keys=False))


def report(tag: str, root: Path, seconds: float | None) -> dict:
    ious = proposal_iou(root)
    ev = io.read_json(root / "data/11_evaluate/metrics.json")
    row = {"sources": tag, "proposal_fg_iou": ious, **{k: ev["train"][k]["miou"] for k in ("pseudolabels", "filter", "merge")},
           "network": ev["eval"]["network"]["miou"]}
    if seconds is not None:
        row["seconds"] = round(seconds)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", nargs="+", default=["ncut", "motion", "auto"],
                    help="comma-separated proposals.sources, one run each")
    ap.add_argument("-S", dest="overrides", action="append", default=[], help="section.key=value for every run")
    ap.add_argument("--measure", action="store_true", help="no run: measure the current data/")
    args = ap.parse_args()
    if args.measure:
        report("current", ROOT, None)
        return
    params, lock = ROOT / "params.yaml", ROOT / "dvc.lock"
    original, original_lock = params.read_text(), lock.read_bytes() if lock.exists() else None
    rows = []
    try:
        for spec in args.sources:
            set_params(params, original, spec.split(","), args.overrides)
            t0 = time.time()
            run = subprocess.run(["dvc", "repro"], cwd=ROOT, capture_output=True, text=True)
            if run.returncode:
                sys.exit(f"dvc repro failed for sources={spec}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
            rows.append(report(spec, ROOT, time.time() - t0))
    finally:
        params.write_text(original)
        if original_lock is not None:
            lock.write_bytes(original_lock)
    print("\n| proposals.sources | proposal fg IoU (per source) | masks/img | pseudolabels | filter | merge | held-out network | s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ious = r["proposal_fg_iou"]
        per = ", ".join(f"{k} {v:.3f}" for k, v in ious.items() if k not in ("all", "masks_per_image"))
        print(f"| [{r['sources']}] | {ious['all']:.3f} ({per}) | {ious['masks_per_image']:.2f} | {r['pseudolabels']:.3f} | "
              f"{r['filter']:.3f} | {r['merge']:.3f} | {r['network']:.3f} | {r['seconds']} |")


if __name__ == "__main__":
    main()
