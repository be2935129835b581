"""Ablation runs: rows of param overrides x development sets x seeds, each a real `dvc repro` in a scratch clone,
then one table of mean ± std over seeds (never retyped: printed from the committed records).

    python -m scripts.ablation run --ablation issue17 --set default --seeds 0 1 2 --workdir /tmp/abl
    python -m scripts.ablation table --ablation issue17          # markdown, from results/ablations/issue17/
    python -m scripts.ablation run --ablation issue18 --set default --seeds 0 1 2 --workdir /tmp/abl18

`run` clones this repository's HEAD into WORKDIR/<set> (once; later runs reuse the clone and its DVC cache), and for
every seed and row writes params.yaml = HEAD's params.yaml + the set's overrides + the row's overrides + seed, then
reproduces the DAG stage by stage (`dvc repro --single-item STAGE`, in dvc.yaml's order) timing each stage that
really ran (a stage DVC skips or restores from its run cache gets no time). Seeds are the outer loop, so the rows
of one seed share the stages their params do not change (prepare .. proposals run once per seed). Each run's
data/11_evaluate/metrics.json, the stage times and the overrides are written to
results/ablations/<ablation>/<set>/<row>/seed_<s>.json in THIS checkout. With --record-results each run is also
recorded for the README (results/<set>/seed_<s>.json, as `scripts/results_table.py --record`): for a row that is
about to become the default, so that one run serves both tables (run with --workdir beside ../shared, e.g. /work, so
the set's data.root reads `../shared/data/<set>` as in the README's records).

`table` prints, per set, one line per row: the held-out network mIoU (for the row "+ CRF on predictions": the
"network + CRF" label map of the plain run), the training split's pseudolabels mIoU, the foreground IoU and mask
AP50 of the masks the later stages use (the distilled masks when the row distils, else the proposals), and the
wall time of the stages the row changes (mean over seeds). Mean ± sample std (ddof=1) over the recorded seeds.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from scripts import results_table
from scripts.results_table import mean_std

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "ablations"
SHARED = ROOT.parent / "shared" / "data"

# The development sets, as the README's results: the synthetic default, Weizmann Horse and CamVid val.
SETS: dict[str, dict] = {
    "default": {},
    "weizmann_horse": {"data": {"name": "folder", "root": str(SHARED / "weizmann_horse"), "num_classes": 2,
                                "eval_fraction": 0.25}, "cluster": {"k": 1}},
    "camvid_val": {"data": {"name": "folder", "root": str(SHARED / "camvid_val"), "num_classes": 11,
                            "eval_fraction": 0.25, "image_size": 160}, "cluster": {"k": 10}},
    # the generated video set (params.yaml's video section): where motion gives masks
    "synthetic_video": {"data": {"name": "synthetic_video"}},
}

# the training recipe before issue 20 (the rows' records are issue 19's runs of the defaults of that time)
OLD_TRAIN = {"train": {"decoder": "simple", "decoder_dim": 128, "epochs": 12, "batch_size": 16, "crop_scale_max": 1.0,
                       "backbone_lr": 0.0001}}
# issue20's recipe: the fused decoder on a frozen backbone, 60 epochs, zoom-out crops (two rows read its runs)
FROZEN60 = {"train": {"decoder": "fused", "decoder_dim": 128, "epochs": 60, "batch_size": 16, "crop_scale_max": 1.5,
                      "backbone_lr": 0}}
# the default since issue 20 (the former one: the rows "old default: ..."): a 64-channel fused decoder on a frozen
# backbone, batch 8, 45 epochs (ceiling 0.864 / 0.851 on seeds 0 / 1 where batch 16 with 60 epochs gave 0.854 / 0.835)
DEFAULT20 = {"train": {"decoder": "fused", "decoder_dim": 64, "epochs": 45, "batch_size": 8, "crop_scale_max": 1.5,
                       "backbone_lr": 0}}

# the saliency maps refined by 2 rounds of a network (their records ran with saliency.rounds 2 as params.yaml's value)
REFINED = {"proposals": {"sources": ["saliency"]}, "saliency": {"rounds": 2}}
# RBD's border superpixels linked at zero cost, with MBD+ (the mean of both maps) or alone
ZERO = {"proposals": {"sources": ["saliency"]}, "saliency": {"rounds": 0, "border_link": "zero"}}
RBD_ZERO = {"proposals": {"sources": ["saliency"]}, "saliency": {"rounds": 0, "border_link": "zero", "cues": ["rbd"]}}


def dense_row(features: str) -> dict:
    """The overrides of a dense-mode row: cluster.mode dense with these cluster.dense_features, merge.method none."""
    return {"cluster": {"mode": "dense", "dense_features": features}, "merge": {"method": "none"}}


# name -> (overrides, stages whose wall time is the row's cost, the held-out row read as its network number)
ABLATIONS: dict[str, dict[str, tuple[dict, list[str], str]]] = {
    "issue17": {
        "today": ({}, ["proposals"], "network"),
        "+ distill": ({"distill": {"method": "maskrcnn"}}, ["distill"], "network"),
        "+ detector filter": ({"distill": {"method": "maskrcnn"}, "filter": {"score": "detector"}}, ["filter"],
                              "network"),
        "+ crop_cls": ({"cluster": {"embedding": "crop_cls"}}, ["cluster"], "network"),
        "+ CRF on predictions": ({}, ["train"], "network + CRF"),
        "+ CRF round": ({"train": {"crf_rounds": 1}}, ["train"], "network"),
        "all together": ({"distill": {"method": "maskrcnn"}, "filter": {"score": "detector"},
                          "cluster": {"embedding": "crop_cls"}, "train": {"crf_rounds": 1}},
                         ["distill", "cluster", "filter", "train"], "network + CRF"),
    },
    # COMUS's self-training, Leopart's communities, k without labels. comus rounds train a fresh network for as
    # long as the first (round_epochs = train.epochs); continue rounds go on for the default round_epochs. Rows with
    # equal overrides share one run: round r of a 3-round run is the r-round row (round r never depends on the
    # rounds after it: its epochs, images and seed + r are the same), so "today" is round 1 of the continue run,
    # and those rows' time is the whole 3-round run's.
    "issue18": {
        "today": ({"train": {"rounds": 3}}, ["train"], "network round 1"),
        "continue, 2 rounds": ({"train": {"rounds": 3}}, ["train"], "network round 2"),
        "continue, 3 rounds": ({"train": {"rounds": 3}}, ["train"], "network"),
        "comus, 2 rounds": ({"train": {"rounds": 3, "self_training": "comus", "round_epochs": 12}}, ["train"],
                            "network round 2"),
        "comus, 3 rounds": ({"train": {"rounds": 3, "self_training": "comus", "round_epochs": 12}}, ["train"],
                            "network"),
        "merge leopart (Infomap)": ({"merge": {"method": "leopart"}}, ["merge"], "network"),
        "merge leopart (Louvain)": ({"merge": {"method": "leopart", "algorithm": "louvain"}}, ["merge"], "network"),
        "k auto": ({"cluster": {"k": "auto"}}, ["cluster"], "network"),
        "comus core first, 2 rounds": ({"train": {"rounds": 2, "self_training": "comus", "round_epochs": 12,
                                                  "first_round": "core"}}, ["train"], "network"),
    },
    # The per-image refinement no slower than the features, and the features in bf16 where the CPU has its
    # instructions: both change the masks every later stage sees, so they become defaults only if the network
    # does not lose. "today" is issue18's row and records (round 1 of a 3-round run, the same code path: refine
    # grabcut, features fp32), copied into results/ablations/issue19/<set>/today/.
    "issue19": {
        "today": ({"train": {"rounds": 3}}, ["features", "proposals"], "network round 1"),
        "guided": ({"proposals": {"refine": "guided"}}, ["features", "proposals"], "network"),
        "guided + bf16 features": ({"proposals": {"refine": "guided"}, "features": {"precision": "bf16"}},
                                   ["features", "proposals"], "network"),
        # The same question after merge.method became leopart (b3c5a73), the refinement alone. Both rows name the
        # merge, the guided row its refinement too. The grabcut row is issue18's "merge leopart (Infomap)" row and
        # records (the same overrides and code path, refine grabcut by default), copied.
        "grabcut, leopart": ({"merge": {"method": "leopart"}}, ["proposals"], "network"),
        "guided, leopart": ({"merge": {"method": "leopart"}, "proposals": {"refine": "guided"}}, ["proposals"],
                            "network"),
    },
    # A recipe that reaches the ceiling (issue 20): the fused decoder on a frozen backbone for 60 epochs, zoom-out
    # crops (ceiling 0.856 ± 0.012 over 3 seeds, against 0.601 ± 0.011 for the former default's). The "old default" rows
    # are issue19's "grabcut, leopart" row and records (the defaults of that time), copied. The CRF rows read the
    # same runs' "network + CRF".
    "issue20": {
        "old default: simple head, 12 epochs, fine-tuned": (OLD_TRAIN, ["train"], "network"),
        "old default: simple head, 12 epochs, fine-tuned + CRF": (OLD_TRAIN, ["train"], "network + CRF"),
        "fused, frozen, 60 epochs": (FROZEN60, ["train"], "network"),
        "fused, frozen, 60 epochs + CRF": (FROZEN60, ["train"], "network + CRF"),
        "fused 64, frozen, batch 8, 45 epochs": (DEFAULT20, ["train"], "network"),
        "fused 64, frozen, batch 8, 45 epochs + CRF": (DEFAULT20, ["train"], "network + CRF"),
    },
    # Where the object masks come from (the saliency stage): the normalized cut on the backbone's keys (ncut), the
    # classic saliency maps alone (saliency.rounds 0), the maps refined by a network (the saliency section's
    # rounds), each also with ncut after it. The CRF rows read the same runs' "network + CRF". The "ncut" rows on
    # the development sets are the README's records of the default (results/<set>/seed_<s>.json), copied.
    "saliency": {
        "ncut": ({"proposals": {"sources": ["ncut"]}}, ["proposals"], "network"),
        "ncut + CRF": ({"proposals": {"sources": ["ncut"]}}, ["proposals"], "network + CRF"),
        "auto (video: motion, then ncut)": ({"proposals": {"sources": ["auto"]}}, ["proposals"], "network"),
        "classic saliency": ({"proposals": {"sources": ["saliency"]}, "saliency": {"rounds": 0}},
                             ["saliency", "proposals"], "network"),
        "classic saliency + CRF": ({"proposals": {"sources": ["saliency"]}, "saliency": {"rounds": 0}},
                                   ["saliency", "proposals"], "network + CRF"),
        "refined saliency": (REFINED, ["saliency", "proposals"], "network"),
        "refined saliency + CRF": (REFINED, ["saliency", "proposals"], "network + CRF"),
        "refined saliency, then ncut": ({"proposals": {"sources": ["saliency", "ncut"]}, "saliency": {"rounds": 2}},
                                        ["saliency", "proposals"], "network"),
        "classic saliency, then ncut": ({"proposals": {"sources": ["saliency", "ncut"]}, "saliency": {"rounds": 0}},
                                        ["saliency", "proposals"], "network"),
        "classic saliency, border at zero cost": (ZERO, ["saliency", "proposals"], "network"),
        "classic saliency, border at zero cost + CRF": (ZERO, ["saliency", "proposals"], "network + CRF"),
        "rbd alone, border at zero cost": (RBD_ZERO, ["saliency", "proposals"], "network"),
        "rbd alone, border at zero cost + CRF": (RBD_ZERO, ["saliency", "proposals"], "network + CRF"),
    },
    # Scenes, not only objects (issue 36): every patch clustered (cluster.mode dense) by k-means of the tokens, of
    # the tokens + colour, or of STEGO's head's codes, against the default's object masks (params.yaml as it is:
    # classic saliency on still images). The CRF rows read the same runs' "network + CRF". The objects rows on the
    # development sets are also the README's records of the default (run with --record-results).
    "dense": {
        "objects (default)": ({}, ["cluster", "pseudolabels"], "network"),
        "objects (default) + CRF": ({}, ["cluster", "pseudolabels"], "network + CRF"),
        **{f"{row}{crf}": (dense_row(features), ["cluster", "pseudolabels"], "network" + crf)
           for row, features in (("dense k-means of tokens", "tokens"),
                                 ("dense k-means of tokens + colour", "tokens_colour"),
                                 ("dense STEGO head", "stego"))
           for crf in ("", " + CRF")},
    },
}
SHOW_K = {"issue18"}  # ablations whose table also gives the k the run used (cluster.k auto: the one it chose)


def merge(base: dict, over: dict) -> dict:
    """`base` with `over` merged in, dict values key by key (a new dict; neither input changes)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and v else copy.deepcopy(v)
    return out


def slug(row: str) -> str:
    """A row name -> its folder name ("+ CRF round" -> "crf_round")."""
    return "_".join("".join(c if c.isalnum() else " " for c in row.lower()).split()) or "row"


def stage_order(project: Path) -> list[str]:
    return list(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])


def repro_timed(project: Path, env: dict | None = None) -> dict[str, float | str]:
    """Every stage of `project` in order with `dvc repro --single-item` (`env`: the processes' environment, default
    this one's) -> {stage: seconds it ran, or 'skipped' / 'restored' (from the run cache)}."""
    times: dict[str, float | str] = {}
    for stage in stage_order(project):
        t0 = time.perf_counter()
        out = subprocess.run(["dvc", "repro", "--single-item", stage], cwd=project, capture_output=True, text=True,
                             env=env)
        dt = time.perf_counter() - t0
        if out.returncode:
            raise RuntimeError(f"dvc repro {stage} failed in {project}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        log = out.stdout + out.stderr
        times[stage] = ("restored" if "is cached" in log or "Restored" in log else
                        round(dt, 1) if f"Running stage '{stage}'" in log else "skipped")
    return times


def clone(workdir: Path, name: str) -> Path:
    project = workdir / name
    if not project.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "clone", "-q", str(ROOT), str(project)], check=True)
    else:
        subprocess.run(["git", "fetch", "-q", str(ROOT), "HEAD"], cwd=project, check=True)
        subprocess.run(["git", "checkout", "-q", "-f", "FETCH_HEAD"], cwd=project, check=True)
    return project


def set_overrides(set_name: str, project: Path) -> dict:
    """The set's overrides with its data.root relative to `project` (a clone beside ../shared gets the README's
    `../shared/data/<set>`, so its params and results read like a run in the project itself)."""
    over = copy.deepcopy(SETS[set_name])
    if "root" in over.get("data", {}):
        over["data"]["root"] = os.path.relpath(over["data"]["root"], project)
    return over


def run(ablation: str, set_name: str, seeds: list[int], workdir: Path, rows: list[str] | None,
        threads: int = 0, record_results: bool = False) -> None:
    """threads > 0: every stage runs with OMP_NUM_THREADS (torch's and BLAS's threads) set to it, so that two runs
    can share the cores side by side (stage times then mean that setting, not an idle machine).
    record_results: each run is also recorded as the README's results do (`results_table.record`, into this
    checkout's results/<set>/), for a row that is about to become the default: one run serves both tables."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else None
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    project = clone(workdir, set_name)
    set_over = set_overrides(set_name, project)
    table = ABLATIONS[ablation]
    for seed in seeds:
        done: dict[str, dict] = {}  # overrides -> this seed's record (rows with equal overrides share one run)
        for row, (over, _, _) in table.items():
            if rows and row not in rows:
                continue
            key = json.dumps(over, sort_keys=True)
            if key not in done:
                params = merge(merge(base, set_over), over)
                params["seed"] = seed
                (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
                t0 = time.perf_counter()
                times = repro_timed(project, env)
                done[key] = {"stage_seconds": times, "total_seconds": round(time.perf_counter() - t0, 1),
                             "metrics": json.loads((project / "data" / "11_evaluate" / "metrics.json").read_text())}
                if record_results:
                    print("recorded", results_table.record(set_name, project / "dvc.lock",
                                                           project / "data" / "11_evaluate" / "metrics.json",
                                                           ROOT / "results"), flush=True)
            rec = {"ablation": ablation, "set": set_name, "row": row, "seed": seed, "overrides": over,
                   "set_overrides": set_over, **done[key]}
            dest = OUT / ablation / set_name / slug(row) / f"seed_{seed}.json"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(json.dumps(rec, indent=1) + "\n")
            net = rec["metrics"].get("eval", {}).get("network", {}).get("miou")
            print(f"{set_name} seed {seed} {row}: eval network {net} ({rec['total_seconds']} s) -> {dest}", flush=True)


def row_values(rec: dict, net_row: str, cost: list[str]) -> dict:
    """One record -> the table's numbers for it (None where the run has no such number)."""
    m = rec["metrics"]
    distilled = rec["overrides"].get("distill", {}).get("method", "none") != "none"
    masks = "distill" if distilled else "proposals"
    secs = [rec["stage_seconds"].get(s) for s in cost]
    return {"net": m.get("eval", {}).get(net_row, {}).get("miou"),
            "pseudo": m.get("train", {}).get("pseudolabels", {}).get("miou"),
            "fg": m.get(f"{masks}_fg_iou"), "ap": m.get(f"{masks}_mask_ap50"),
            "k": m.get("cluster_k"),
            "secs": sum(s for s in secs if isinstance(s, (int, float))) if all(isinstance(s, (int, float))
                                                                               for s in secs) else None}


def table(ablation: str) -> str:
    folder = OUT / ablation
    lines = []
    for set_dir in sorted((d for d in folder.iterdir() if d.is_dir()), key=lambda d: list(SETS).index(d.name)
                          if d.name in SETS else 99):
        lines += [f"**{set_dir.name}**", "",
                  "| row | held-out network mIoU | train pseudo-label mIoU | mask fg IoU | mask AP50 | "
                  "changed stages' time (s) |" + (" k |" if ablation in SHOW_K else "") + " seeds |",
                  "|---|---|---|---|---|---|" + ("---|" if ablation in SHOW_K else "") + "---|"]
        for row, (_, cost, net_row) in ABLATIONS[ablation].items():
            recs = [json.loads(f.read_text()) for f in sorted((set_dir / slug(row)).glob("seed_*.json"))]
            if not recs:
                continue
            vals = [row_values(r, net_row, cost) for r in recs]
            col = {k: [v[k] for v in vals] for k in vals[0]}
            lines.append(f"| {row} | {mean_std(col['net'])} | {mean_std(col['pseudo'])} | {mean_std(col['fg'])} | "
                         f"{mean_std(col['ap'])} | {mean_std(col['secs'], 0)} ({', '.join(cost)}) | "
                         + (f"{', '.join('–' if k is None else str(k) for k in col['k'])} | " if ablation in SHOW_K
                            else "") + f"{', '.join(str(r['seed']) for r in recs)} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run rows x seeds of one set and record them")
    r.add_argument("--ablation", default="issue17", choices=list(ABLATIONS))
    r.add_argument("--set", required=True, choices=list(SETS))
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--rows", nargs="*", help="only these rows (names as in ABLATIONS)")
    r.add_argument("--workdir", type=Path, required=True, help="scratch folder for the clones (kept between runs)")
    r.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS of every stage (0 = unset: every core)")
    r.add_argument("--record-results", action="store_true",
                   help="also record each run into results/<set>/ as `results_table.py --record` does")
    t = sub.add_parser("table", help="print the ablation table from results/ablations/<ablation>/")
    t.add_argument("--ablation", default="issue17", choices=list(ABLATIONS))
    args = ap.parse_args()
    if args.cmd == "run":
        run(args.ablation, args.set, args.seeds, args.workdir, args.rows, args.threads, args.record_results)
    else:
        print(table(args.ablation), end="")


if __name__ == "__main__":
    sys.exit(main())
