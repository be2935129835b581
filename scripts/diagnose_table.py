"""The oracle diagnostic over seeds: several `python -m scripts.diagnose oracle --out F.json` records ->
one table of mean ± sample std (ddof=1) per label map, oracle rows beside the real ones. Not a test: it prints.

    python -m scripts.diagnose_table results/diagnostics/oracle_default_s*.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scripts.diagnose import ROWS
from scripts.results_table import mean_std


def table(records: list[dict]) -> str:
    """Records ({'oracle': metrics, 'real': metrics, 'oracle_noise': x}) -> markdown rows 'run | split | label map |
    mIoU | seeds'; a row some record lacks is left out."""
    noise = sorted({r.get("oracle_noise") for r in records})
    lines = ["| run | split | label map | mIoU | records |", "|---|---|---|---|---|"]
    for what, key in ((f"oracle features (noise {', '.join(map(str, noise))})", "oracle"), ("real features", "real")):
        for split, row in ROWS:
            v = [r[key][split][row]["miou"] for r in records if (r.get(key) or {}).get(split, {}).get(row)]
            if len(v) == len(records):
                lines.append(f"| {what} | {split} | {row} | {mean_std(v)} | {len(v)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("records", type=Path, nargs="+")
    print(table([json.loads(f.read_text()) for f in ap.parse_args().records]))


if __name__ == "__main__":
    sys.exit(main())
