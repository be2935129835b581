"""The ceiling diagnostic (scripts/diagnose.py ceiling) over a grid of training recipes and seeds, in one
process: one JSON line per run (name, changes, seed, held-out mIoU, final loss, seconds) appended to --out.

    python -m scripts.ceiling_grid --out ceil.jsonl --seeds 0 1 2 \\
        --recipe today= --recipe fused40=train.decoder=fused,train.epochs=40

Run it in a project whose prepare and pretrain stages have run (it reads ground truth: a diagnostic, never a stage).

    python -m scripts.ceiling_grid --table results/diagnostics/ceiling_default.jsonl   # mean ± std per recipe
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import yaml

from pipeline.config import apply_sets, parse_params
from scripts import diagnose
from scripts.results_table import mean_std


def parse_recipe(spec: str) -> tuple[str, list[str]]:
    """'name=a.b=1,c.d=x' -> ('name', ['a.b=1', 'c.d=x']); 'name=' -> ('name', [])."""
    name, _, rest = spec.partition("=")
    return name, [s for s in rest.split(",") if s]


def table(records: list[dict]) -> str:
    """JSON-line records -> a markdown table, one row per recipe in first-seen order: its changes, the held-out mIoU
    as mean ± sample std (ddof=1) over its seeds (the value alone for one seed), the seeds, the mean final loss."""
    by: dict[str, list[dict]] = {}
    for r in records:
        by.setdefault(r["recipe"], []).append(r)
    lines = ["| recipe | changes | held-out mIoU | seeds | final loss |", "|---|---|---|---|---|"]
    for name, rs in by.items():
        changes = ", ".join(c for c in rs[0]["changes"] if not c.startswith("train.threads")) or "(params.yaml)"
        lines.append(f"| {name} | {changes} | {mean_std([r['miou'] for r in rs])} | "
                     f"{', '.join(str(r['seed']) for r in rs)} | {np.mean([r['final_loss'] for r in rs]):.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", action="append", help="NAME=key=value,key=value (may repeat)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--table", type=Path, help="print the table of these records and stop")
    args = ap.parse_args()
    if args.table:
        print(table([json.loads(line) for line in args.table.read_text().splitlines() if line.strip()]))
        return
    if not args.recipe or not args.out:
        ap.error("--recipe and --out are required to run (or --table FILE to print records)")
    raw = yaml.safe_load(Path("params.yaml").read_text())
    for spec in args.recipe:
        name, sets = parse_recipe(spec)
        for seed in args.seeds:
            p = parse_params(apply_sets(raw, [*sets, f"seed={seed}"]))
            t = time.perf_counter()
            r = diagnose.ceiling(p, args.device)
            rec = {"recipe": name, "changes": sets, "seed": seed, "miou": r["eval"]["network"]["miou"],
                   "final_loss": r["final_loss"], "seconds": round(time.perf_counter() - t, 1)}
            print(json.dumps(rec), flush=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
