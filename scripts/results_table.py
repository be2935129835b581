"""The README's headline results table, printed from the committed data/10_evaluate/metrics.json (never retyped).

    python scripts/results_table.py            # print the block (caption line + markdown table)
    python scripts/results_table.py --readme   # rewrite README.md between <!-- results:begin --> and <!-- results:end -->

Rows come in the order the evaluate stage writes them (its dict order in metrics.json), in the format of its
data/10_evaluate/table.md: mIoU, pixel accuracy and coverage with 3 decimals (a baseline has no coverage key:
1.000, as the stage writes it). The caption names the dataset the metrics were measured on, read from the
prepare stage's params in dvc.lock, after checking that dvc.lock records exactly this metrics.json (md5).
tests/test_readme.py fails when the README's block differs from this output.
"""
import argparse
import hashlib
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
METRICS = ROOT / "data" / "10_evaluate" / "metrics.json"
LOCK = ROOT / "dvc.lock"
README = ROOT / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def dataset_caption(lock: dict, metrics_path: Path) -> str:
    """Which data the metrics are from: the prepare stage's `data` params in dvc.lock, which must record
    this very metrics.json as the evaluate stage's output (else the caption could describe another run)."""
    stages = lock["stages"]
    recorded = {o["path"]: o.get("md5") for o in stages["evaluate"]["outs"]}.get("data/10_evaluate/metrics.json")
    md5 = hashlib.md5(metrics_path.read_bytes()).hexdigest()
    if recorded != md5:
        raise ValueError(f"{metrics_path} (md5 {md5}) is not the metrics.json dvc.lock records ({recorded}): "
                         "commit dvc.lock and metrics.json from the same `dvc repro`")
    params = stages["prepare"]["params"]["params.yaml"]
    d = params["data"]
    classes = f"{d['num_classes']} classes with background"
    if d["name"] == "synthetic":
        what = (f"the embedded synthetic default (`data.name: synthetic`, {d['synth_images']} generated "
                f"{d['image_size']} px images, {classes}; every image scored, no split)")
    elif d["name"] == "synthetic_video":
        v = params["video"]
        what = (f"the generated video set (`data.name: synthetic_video`, {v['synth_clips']} clips of "
                f"{v['synth_frames']} frames at stride {v['stride']}, {d['image_size']} px, {classes})")
    elif d["name"] in ("voc2012", "coco"):
        what = f"`data.name: {d['name']}`, split `{d['split']}` ({d['image_size']} px, {classes})"
    else:
        what = f"`data.name: {d['name']}` at `{d['root']}` ({d['image_size']} px, {classes})"
    return f"Hungarian-matched, on {what}; from `data/10_evaluate/metrics.json`:"


def results_table(metrics_path: Path = METRICS, lock_path: Path = LOCK) -> str:
    """The README block: a caption line, a blank line, the markdown table (and the COCO AP50 line if any)."""
    metrics = json.loads(metrics_path.read_text())
    if "note" in metrics:
        raise ValueError(f"{metrics_path}: {metrics['note']}")
    rows = {k: v for k, v in metrics.items() if isinstance(v, dict)}
    lines = [dataset_caption(yaml.safe_load(lock_path.read_text()), metrics_path), "",
             "| label map | mIoU | pixel acc | coverage |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['miou']:.3f} | {v['pixel_acc']:.3f} | {v.get('coverage', 1.0):.3f} |" for k, v in rows.items()]
    if "proposals_mask_ap50" in metrics:
        ap = metrics["proposals_mask_ap50"]
        lines += ["", f"proposals, class-agnostic mask AP50 (COCOeval): {'n/a' if ap is None else f'{ap:.3f}'}"]
    return "\n".join(lines)


def readme_block(text: str) -> str:
    """What README.md holds between the markers (without the newlines next to them)."""
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"README.md must hold {BEGIN} and {END} exactly once each")
    return text.split(BEGIN)[1].split(END)[0].strip("\n")


def write_readme(readme: Path = README) -> bool:
    """Put results_table() between the markers; True if README.md changed."""
    text = readme.read_text()
    old = readme_block(text)
    new = results_table()
    if old == new:
        return False
    head, rest = text.split(BEGIN)
    readme.write_text(f"{head}{BEGIN}\n{new}\n{END}{rest.split(END, 1)[1]}")
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readme", action="store_true", help="rewrite README.md's results block in place")
    args = ap.parse_args()
    if args.readme:
        print("README.md: results block " + ("updated" if write_readme() else "already up to date"))
    else:
        print(results_table())


if __name__ == "__main__":
    sys.exit(main())
