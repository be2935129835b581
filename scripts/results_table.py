"""The README's results table and docs/results.md's per-set tables, printed from committed per-seed metrics (never
retyped): mean ± std over seeds.

    python scripts/results_table.py --record default   # after a `dvc repro` / `dvc exp run`: keep this run's metrics
    python scripts/results_table.py                    # print the per-set tables (every results/<set>/ folder)
    python scripts/results_table.py --readme           # rewrite both blocks: README.md's summary, docs/results.md's tables

`--record SET` copies data/11_evaluate/metrics.json into results/SET/seed_<seed>.json together with what it was
measured on (the prepare stage's `data` params, the seed, cluster.k and the evaluation's matching, read from
dvc.lock), after checking that dvc.lock records exactly this metrics.json (md5): the numbers and their
description come from the same run. The tables give every row's mIoU as mean ± sample std (ddof=1) over the
recorded seeds of a set, the held-out evaluation split first; a set's seeds must agree on everything but the seed.
The README's summary gives one line per set: the held-out network and network + CRF beside the two baselines.
tests/unit/test_readme.py fails when either block differs from this output.
"""
import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
METRICS = ROOT / "data" / "11_evaluate" / "metrics.json"
LOCK = ROOT / "dvc.lock"
RESULTS = ROOT / "results"
README = ROOT / "README.md"
DETAILS = ROOT / "docs" / "results.md"
SUMMARY_ROWS = ("network", "network + CRF", "baseline_colour_kmeans", "baseline_feature_kmeans")
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
NOT_SETS = ("ablations", "diagnostics")  # results/ folders that hold other records than a set's seeds


def mean_std(values: list[float | None], digits: int = 3) -> str:
    """Values over seeds -> 'mean ± sample std' (ddof=1), the value alone for one, '–' for none (None is skipped).
    Every table of seeds in scripts/ formats through this."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    std = f" ± {np.std(values, ddof=1):.{digits}f}" if len(values) > 1 else ""
    return f"{np.mean(values):.{digits}f}{std}"


def run_record(lock: dict, metrics_path: Path) -> dict:
    """This run's metrics with what they were measured on, from dvc.lock (which must record this very
    metrics.json as the evaluate stage's output, else the description could be another run's)."""
    stages = lock["stages"]
    recorded = {o["path"]: o.get("md5") for o in stages["evaluate"]["outs"]}.get("data/11_evaluate/metrics.json")
    md5 = hashlib.md5(metrics_path.read_bytes()).hexdigest()
    if recorded != md5:
        raise ValueError(f"{metrics_path} (md5 {md5}) is not the metrics.json dvc.lock records ({recorded}): "
                         "record right after the `dvc repro` / `dvc exp run` that wrote it")
    prep = stages["prepare"]["params"]["params.yaml"]
    ev = stages["evaluate"]["params"]["params.yaml"]
    return {"seed": ev["seed"], "data": prep["data"], "cluster.k": ev["cluster.k"],
            "evaluate.match": ev["evaluate"]["match"], "metrics": json.loads(metrics_path.read_text())}


def record(name: str, lock_path: Path = LOCK, metrics_path: Path = METRICS, results: Path = RESULTS) -> Path:
    rec = run_record(yaml.safe_load(lock_path.read_text()), metrics_path)
    out = results / name / f"seed_{rec['seed']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rec, indent=1) + "\n")
    return out


def caption(rec: dict, seeds: list[int]) -> str:
    d = rec["data"]
    if d["name"] == "synthetic":
        what = (f"the embedded synthetic default: {d['synth_images']} generated training images and "
                f"{d['synth_eval_images']} held-out evaluation images")
    elif d["name"] in ("voc2012", "coco"):
        what = f"`data.name: {d['name']}`, fitted on `{d['split']}`"
    else:
        held = f"`data.eval_fraction: {d['eval_fraction']}`" if d.get("eval_fraction") else f"`{d.get('eval_root')}`"
        what = f"`data.root: {d['root']}`, held out by {held}"
    return (f"{what}; {d['image_size']} px short side, {d['num_classes']} classes with background, "
            f"`cluster.k: {rec['cluster.k']}`{auto_k(rec)}, matching by {rec['evaluate.match']}; "
            f"mean ± std over seeds {', '.join(map(str, seeds))}")


def auto_k(rec: dict) -> str:
    """' (chose 3)' when the run's cluster.k was auto (the k it chose, from metrics.json), else ''."""
    k = rec["metrics"].get("cluster_k")
    return f" (chose {k})" if rec["cluster.k"] == "auto" and k is not None else ""


def set_records(folder: Path) -> tuple[list[dict], dict[tuple[str, str], list[float]]]:
    """One results/<set>/ folder -> its seeds' records and each (split, label map)'s mIoU over them."""
    recs = [json.loads(f.read_text()) for f in sorted(folder.glob("seed_*.json"))]
    if not recs:
        raise ValueError(f"{folder}: no seed_*.json")
    same = [{k: v for k, v in r.items() if k not in ("seed", "metrics")} for r in recs]
    if any(s != same[0] for s in same):
        raise ValueError(f"{folder}: the recorded runs differ in more than the seed")
    rows: dict[tuple[str, str], list[float]] = {}
    for r in recs:
        for split, table in r["metrics"].items():
            if isinstance(table, dict):
                for row, v in table.items():
                    rows.setdefault((split, row), []).append(v["miou"])
    return recs, rows


def set_table(folder: Path) -> str:
    """One results/<set>/ folder -> its caption and markdown table of mIoU mean ± std per (split, label map)."""
    recs, rows = set_records(folder)
    lines = [f"**{folder.name}**: {caption(recs[0], [r['seed'] for r in recs])}.", "",
             "| split | label map | mIoU | seeds |", "|---|---|---|---|"]
    for (split, row), values in rows.items():
        lines.append(f"| {split} | {row} | {mean_std(values)} | {len(values)} |")
    return "\n".join(lines)


def set_folders(results: Path = RESULTS) -> list[Path]:
    """Every results/<set>/ folder, the default first; not results/ablations/ (scripts/ablation.py's) nor
    results/diagnostics/ (the ceiling and oracle records: scripts/ceiling_grid.py, scripts/diagnose_table.py)."""
    return sorted((f for f in results.iterdir() if f.is_dir() and f.name not in NOT_SETS),
                  key=lambda f: (f.name != "default", f.name))


def results_table(results: Path = RESULTS) -> str:
    """Every set's caption and full table (docs/results.md's block)."""
    return "\n\n".join(set_table(f) for f in set_folders(results))


def summary_table(results: Path = RESULTS) -> str:
    """One line per set: the held-out (eval) network, network + CRF and the two baselines, mean ± std over its
    seeds (the README's block)."""
    lines = ["| set | network | network + CRF | colour k-means | feature k-means | seeds |", "|---|---|---|---|---|---|"]
    for folder in set_folders(results):
        recs, rows = set_records(folder)
        cells = [mean_std(rows.get(("eval", row), [])) for row in SUMMARY_ROWS]
        lines.append(f"| {folder.name} | {' | '.join(cells)} | {', '.join(str(r['seed']) for r in recs)} |")
    return "\n".join(lines)


def readme_block(text: str) -> str:
    """What a markdown file holds between the results markers (without the newlines next to them)."""
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"the file must hold {BEGIN} and {END} exactly once each")
    return text.split(BEGIN)[1].split(END)[0].strip("\n")


def write_block(path: Path, new: str) -> bool:
    """Put `new` between the file's results markers; True if the file changed."""
    text = path.read_text()
    if readme_block(text) == new:
        return False
    head, rest = text.split(BEGIN)
    path.write_text(f"{head}{BEGIN}\n{new}\n{END}{rest.split(END, 1)[1]}")
    return True


def write_readme(readme: Path = README, details: Path = DETAILS) -> bool:
    """README.md's summary and docs/results.md's per-set tables rewritten; True if either changed."""
    return write_block(readme, summary_table()) | write_block(details, results_table())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--record", metavar="SET", help="keep data/11_evaluate/metrics.json as results/SET/seed_<seed>.json")
    ap.add_argument("--readme", action="store_true", help="rewrite README.md's results block in place")
    args = ap.parse_args()
    if args.record:
        print(f"recorded {record(args.record)}")
    elif args.readme:
        print("README.md, docs/results.md: results blocks " + ("updated" if write_readme() else "already up to date"))
    else:
        print(results_table())


if __name__ == "__main__":
    sys.exit(main())
