"""Mean ± std of every metric over DVC experiments that differ only in `seed`.

    for s in 0 1 2; do dvc exp run --queue -S seed=$s; done; dvc queue start; dvc queue status
    python scripts/seeds.py                      # runs `dvc exp show --json` here
    python scripts/seeds.py --json exps.json     # or reads its saved output, e.g. `dvc exp show --json -A > exps.json`

Every record of `dvc exp show --json` is used: the workspace, each baseline commit and each experiment (failed
or still queued ones, which have no metrics, are skipped). Params are flattened to dotted keys (`cluster.k`; a
params file other than params.yaml prefixes its keys with `file:`), metrics to slash-joined paths per metrics file
(`eval/network/miou` in data/11_evaluate/metrics.json; numbers only). Records whose params are equal except
`seed` form a group; one record is kept per seed (the workspace usually repeats the experiment applied last:
the first record in dvc's order is kept, preferring commits and experiments to the workspace, and a note names any
set-aside duplicate whose metrics differ). For each group with at least 2 seeds a markdown table gives every metric
as mean ± std, where std is the SAMPLE standard deviation (ddof=1: the spread we would expect of another seed),
with the number of seeds that have it and those seeds; each group's heading names the params that differ between
the groups.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

SEED = "seed"
PARAMS_FILE = "params.yaml"


def _flatten(tree, sep: str, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(_flatten(v, sep, key))
        else:
            out[key] = v
    return out


def _files(section) -> dict:
    """dvc's {file: {"data": {...}, "error"?: ...}} (or {file: {...}} in older versions) -> {file: data}."""
    out = {}
    for file, entry in (section or {}).items():
        if not isinstance(entry, dict):
            continue
        data = entry.get("data") if "data" in entry or "error" in entry else entry  # an error: no data
        if isinstance(data, dict):
            out[file] = data
    return out


def _hashable(v):
    return v if v is None or isinstance(v, (str, int, float, bool)) else json.dumps(v, sort_keys=True)


def records(tree) -> list[dict]:
    """Every record in a `dvc exp show --json` document -> [{label, workspace, params {dotted: value},
    metrics {(file, path): number}}], in dvc's order. Walks the whole document, so it reads dvc 3's list of
    {rev, name, data, experiments: [{revs: [...]}]} as well as older nested dicts: any {"data": {"params": ...}}."""
    found = []

    def walk(node, name=None):
        if isinstance(node, list):
            for x in node:
                walk(x, name)
            return
        if not isinstance(node, dict):
            return
        data = node.get("data")
        if isinstance(data, dict) and "params" in data:
            rev = str(node.get("rev") or data.get("rev") or name or "?")
            label = node.get("name") or ("workspace" if rev == "workspace" else rev[:7])
            params, metrics = {}, {}
            for file, values in _files(data.get("params")).items():
                for k, v in _flatten(values, ".").items():
                    params[k if file == PARAMS_FILE else f"{file}:{k}"] = _hashable(v)
            for file, values in _files(data.get("metrics")).items():
                for k, v in _flatten(values, "/").items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                        metrics[(file, k)] = float(v)
            if metrics and not node.get("error"):
                found.append({"label": label, "workspace": rev == "workspace", "params": params, "metrics": metrics})
        for k, v in node.items():
            if k != "data":
                walk(v, k)

    walk(tree)
    return found


def groups(recs: list[dict]) -> tuple[list[dict], list[str]]:
    """Records -> (groups [{params (all but seed), runs {seed: record}}] in order of first appearance, notes)."""
    out, notes = {}, []
    without = [r["label"] for r in recs if SEED not in r["params"]]
    if without:
        notes.append(f"records without a `{SEED}` param, left out: {', '.join(without)}")
    ordered = [r for r in recs if not r["workspace"]] + [r for r in recs if r["workspace"]]
    first = {id(r): i for i, r in enumerate(recs)}
    for r in ordered:
        if SEED not in r["params"]:
            continue
        rest = {k: v for k, v in r["params"].items() if k != SEED}
        key = tuple(sorted(rest.items(), key=lambda kv: kv[0]))
        g = out.setdefault(key, {"params": rest, "runs": {}, "order": first[id(r)]})
        g["order"] = min(g["order"], first[id(r)])
        seed = r["params"][SEED]
        if seed in g["runs"]:
            kept = g["runs"][seed]
            if kept["metrics"] != r["metrics"]:
                notes.append(f"{r['label']} repeats the params of {kept['label']} (seed {seed}) with other metrics: "
                             f"{kept['label']} kept, {r['label']} left out")
            continue
        g["runs"][seed] = r
    return sorted(out.values(), key=lambda g: g["order"]), notes


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1; None for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


ABSENT = "(absent)"  # a param one group has and another has not


def render(recs: list[dict]) -> str:
    """The markdown report: one table per group of >= 2 seeds."""
    gs, notes = groups(recs)
    multi = [g for g in gs if len(g["runs"]) >= 2]
    single = [g for g in gs if len(g["runs"]) < 2]
    keys = sorted({k for g in gs for k in g["params"]})
    differ = [k for k in keys if len({g["params"].get(k, ABSENT) for g in gs}) > 1]

    def what(g) -> str:
        return ", ".join(f"{k}={g['params'].get(k, ABSENT)}" for k in differ) or "one param set"
    lines = [f"Mean ± std over seeds; std is the sample standard deviation (ddof=1). "
             f"{len(recs)} records, {len(multi)} group(s) with 2 or more seeds."]
    if not multi:
        lines.append("")
        lines.append("No params (other than seed) were run with 2 or more seeds: run e.g. "
                     "`for s in 0 1 2; do dvc exp run --queue -S seed=$s; done; dvc queue start`.")
    for i, g in enumerate(multi, 1):
        seeds = sorted(g["runs"], key=lambda s: (str(type(s)), s))
        runs = ", ".join(g["runs"][s]["label"] for s in seeds)
        lines += ["", f"### {i}. {what(g)} ({len(seeds)} seeds: {', '.join(map(str, seeds))}; runs: {runs})", "",
                  "| metrics file | metric | mean ± std | n | seeds |", "|---|---|---|---|---|"]
        rows = []
        for s in seeds:
            rows += [m for m in g["runs"][s]["metrics"] if m not in rows]
        for file, path in rows:
            have = [s for s in seeds if (file, path) in g["runs"][s]["metrics"]]
            mean, std = mean_std([g["runs"][s]["metrics"][(file, path)] for s in have])
            spread = f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f} (one seed)"
            lines.append(f"| {file} | {path} | {spread} | {len(have)} | {', '.join(map(str, have))} |")
    if single:
        lines += ["", f"{len(single)} param set(s) with a single seed left out: "
                  + "; ".join(f"{what(g)} ({', '.join(r['label'] for r in g['runs'].values())})" for g in single)]
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines) + "\n"


def exp_show() -> object:
    out = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"`dvc exp show --json` failed ({out.returncode}):\n{out.stderr.strip()}")
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="a saved `dvc exp show --json` output (default: run it here)")
    args = ap.parse_args(argv)
    tree = json.loads(args.json.read_text()) if args.json else exp_show()
    print(render(records(tree)), end="")


if __name__ == "__main__":
    main()
