"""Foreground IoU of the proposals for each proposals.fg_rule x proposals.components choice (issue 17, item 5).

Each PROJECT is a scratch copy of this project whose params.yaml names the data set and whose prepare, pretrain
and features stages have run (`python -m stages.prepare; python -m stages.pretrain; python -m stages.features`).
For every combination the script sets proposals.fg_rule / proposals.components in that copy's params.yaml, runs
`python -m stages.proposals` there (the projects in parallel), and scores the union of each training image's
proposal masks (at the prepared size, resized nearest to the ground truth's original size with
metrics.to_size) against ground truth > 0, pooled over the training split (metrics.foreground_iou). The copy's
params.yaml is put back at the end. Run it from the repository root.

    python -m scripts.proposal_fg_iou synthetic=/tmp/tc/syn horse=/tmp/tc/horse
"""
from __future__ import annotations

import subprocess
import sys
from itertools import product
from pathlib import Path

import numpy as np
import yaml

from pipeline import io
from pipeline.evaluate import metrics

COMBOS = list(product(["border", "seed"], ["all", "seed"]))


def fg_iou(project: Path) -> float:
    """A project's proposals (data/04_proposals/masks) vs its ground truth (data/01_prepare/gt) -> pooled IoU."""
    prep = project / "data" / "01_prepare"
    manifest = io.read_manifest(prep)
    names = [n for n in manifest["names"] if (prep / "gt" / f"{n}.png").exists()]
    preds, gts = [], []
    for n in names:
        gt = io.read_label(prep / "gt" / f"{n}.png")
        masks = io.read_label(project / "data" / "04_proposals" / "masks" / f"{n}.png")
        preds.append(metrics.to_size(masks, gt.shape).reshape(-1) > 0)
        gts.append(gt.reshape(-1))
    return metrics.foreground_iou(np.concatenate(preds)[None, None], np.concatenate(gts)[None, None])


def main() -> None:
    projects = dict(arg.split("=", 1) for arg in sys.argv[1:])
    if not projects:
        sys.exit(__doc__)
    originals = {tag: (Path(d) / "params.yaml").read_text() for tag, d in projects.items()}
    table: dict[tuple[str, str], dict[str, float]] = {}
    try:
        for fg_rule, comps in COMBOS:
            runs = []
            for tag, d in projects.items():
                p = yaml.safe_load(originals[tag])
                p["proposals"].update(fg_rule=fg_rule, components=comps)
                (Path(d) / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
                runs.append(subprocess.Popen([sys.executable, "-m", "stages.proposals"], cwd=d,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            if any(r.wait() for r in runs):
                sys.exit(f"proposals stage failed for fg_rule={fg_rule} components={comps}")
            table[fg_rule, comps] = {tag: fg_iou(Path(d)) for tag, d in projects.items()}
            print(f"fg_rule={fg_rule} components={comps}: {table[fg_rule, comps]}", file=sys.stderr)
    finally:
        for tag, d in projects.items():
            (Path(d) / "params.yaml").write_text(originals[tag])
    print("| fg_rule | components | " + " | ".join(projects) + " |")
    print("|---|---|" + "---|" * len(projects))
    for (fg_rule, comps), row in table.items():
        print(f"| {fg_rule} | {comps} | " + " | ".join(f"{row[t]:.3f}" for t in projects) + " |")


if __name__ == "__main__":
    main()
